"""Data-parallel training over processes started by ``torchrun``.

Why not ``torch.nn.parallel.DistributedDataParallel``: a family owns several networks and
optimisers (a GAN's generator and discriminator, an LDM's autoencoder, discriminator and
denoiser) and its ``training_step`` calls submodules directly, so there is no single module
whose ``forward`` DDP could wrap. The same data parallelism is done here with collectives:

- every rank starts from rank 0's weights (``broadcast_module``);
- each rank trains on its own shard of every epoch (the trainer), with its own noise stream;
- ``StepContext.backward`` averages the gradients over the ranks before each optimiser step
  (``average_gradients``), so every rank applies the same update and the weights (hence the EMA)
  stay identical without ever being copied;
- buffers (e.g. BatchNorm running statistics) follow rank 0 after every step, as DDP's
  ``broadcast_buffers`` does;
- decisions that must not differ (skip a non-finite step, stop on Ctrl-C, early stopping) are
  taken on all-reduced values, or the ranks would end up waiting for each other forever.

Without torchrun (no ``WORLD_SIZE`` > 1) every function here is a no-op for a single process.
Backend: NCCL for CUDA devices, gloo for CPU.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

_OWNED = False  # we created the process group (so we destroy it); a caller's group is left alone


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group; returns the device this rank trains on (cuda:LOCAL_RANK on GPUs)."""
    global _OWNED
    if not launched() or active():
        return device
    if not dist.is_available():
        from medgen.errors import UserError

        raise UserError("started by torchrun, but this PyTorch build has no torch.distributed")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    _OWNED = True
    return device


def cleanup() -> None:
    global _OWNED
    if _OWNED and active():
        dist.destroy_process_group()
    _OWNED = False


def backend() -> str:
    return dist.get_backend() if active() else "none"


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo works on CPU tensors
    return torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """In place: the mean of ``tensor`` over the ranks (returned for convenience)."""
    if world_size() > 1:
        dist.all_reduce(tensor)
        tensor /= world_size()
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_values(values: list[float]) -> list[float]:
    """The mean over the ranks of each number (one all-reduce for all of them)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    return all_reduce_mean(t).tolist()


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_gradients(params) -> None:
    """Replace each parameter's gradient by its mean over the ranks, with a single all-reduce
    (one flat buffer rather than one call per tensor). A parameter with no gradient on some rank
    counts as zero there, as in DDP; one with no gradient on any rank keeps none."""
    if world_size() == 1:
        return
    params = list(params)
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    dtype = grads[0].dtype
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1).to(dtype) for g in grads] + [has_grad])
    dist.all_reduce(flat)
    n_total = flat.numel() - len(params)
    flat[:n_total] /= world_size()
    offset = 0
    for p, count in zip(params, flat[n_total:].tolist()):
        chunk = flat[offset:offset + p.numel()]
        offset += p.numel()
        if count == 0:
            p.grad = None
        elif p.grad is None:
            p.grad = chunk.view_as(p).to(p.dtype).clone()
        else:
            p.grad.copy_(chunk.view_as(p))


def _broadcast_tensors(tensors) -> None:
    # one broadcast per dtype (flattened), instead of one per tensor
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    for dtype, group in groups.items():
        wire = torch.uint8 if dtype == torch.bool else dtype
        flat = torch.cat([t.detach().reshape(-1).to(wire) for t in group])
        dist.broadcast(flat, src=0)
        offset = 0
        for t in group:
            t.data.copy_(flat[offset:offset + t.numel()].view_as(t).to(dtype))
            offset += t.numel()


def broadcast_module(module: torch.nn.Module, params: bool = True) -> None:
    """Copy rank 0's parameters (unless ``params`` is false) and buffers to every rank."""
    if world_size() == 1:
        return
    tensors = (list(module.parameters()) if params else []) + list(module.buffers())
    if tensors:
        _broadcast_tensors(tensors)


def on_main(fn):
    """``fn()`` on rank 0 only (e.g. creating the run directory). A UserError there is raised on
    every rank, so all of them stop with the message instead of waiting for a rank that has gone."""
    if world_size() == 1:
        return fn()
    from medgen.errors import UserError

    result, error = None, None
    if is_main():
        try:
            result = fn()
        except UserError as err:
            error = err
    error = broadcast_object(error)
    if error is not None:
        raise error
    return result
