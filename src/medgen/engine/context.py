"""What a family's ``training_step`` gets: optimiser steps with AMP, clipping and a non-finite guard,
and the trainer's seeded random generator (so a resumed run draws the same noise).

``backward`` is the one place where every optimiser step happens, so it is also where data-parallel
runs (torchrun, see ``medgen.engine.distributed``) average the gradients over the processes."""
from __future__ import annotations

import contextlib

import torch

from medgen.engine import distributed as dist
from medgen.errors import UserError


def autocast_dtype(device: torch.device, amp: bool, cpu_amp: bool = False) -> torch.dtype | None:
    """AMP's dtype: on CUDA bf16 where the GPU has it, else fp16; on a CPU bf16 with ``cpu_amp``
    (``check_speed_options`` refuses it on a CPU without native bf16); None where autocast is off."""
    if amp and device.type == "cpu" and cpu_amp:
        return torch.bfloat16
    if not (amp and device.type == "cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), so oneDNN's bf16 kernels pay."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class StepContext:
    def __init__(self, device: torch.device, amp: bool, grad_clip: float | None, generator: torch.Generator,
                 cpu_amp: bool = False):
        self.device = device
        self.generator = generator
        self.grad_clip = grad_clip
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.stage = ""
        self.epoch = 0
        self.step = 0
        self.nonfinite = 0  # non-finite losses met during the current step
        self.amp_dtype = autocast_dtype(device, amp, cpu_amp)
        # fp16 needs loss scaling; bf16 has float32's range and does not
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def randn(self, shape, like: torch.Tensor | None = None) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.generator.device).to(self.device)

    def randint(self, high: int, shape) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=self.generator, device=self.generator.device).to(self.device)

    def rand(self, shape) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.generator.device).to(self.device)

    def backward(self, loss: torch.Tensor, name: str = "main") -> bool:
        """One optimiser step of ``name`` on ``loss``. A non-finite loss skips the step (counted).

        With several processes, the skip is decided by all of them together (a non-finite loss on
        any rank skips the step on every rank: a rank that went on alone would wait forever in the
        gradient all-reduce), and the gradients are averaged over the ranks before the step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if dist.any_rank(not torch.isfinite(loss.detach()).all()):
            self.nonfinite += 1
            return False
        params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        # before unscale_: the scaler's inf/NaN check then sees the same (averaged) gradients on every rank
        dist.average_gradients(params)
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            if dist.any_rank(not torch.isfinite(norm)):
                opt.zero_grad(set_to_none=True)
                self.nonfinite += 1
                if self.scaler is not None:
                    self.scaler.update()
                return False
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        if self.device.type == "cuda":
            # free the gradients during the next forward pass (a lower peak; CUDA's caching allocator
            # makes the re-allocation free). On the CPU, freeing ~4 bytes per parameter here means
            # fresh pages to fault in at the next backward: 7 % of an S000-sized U-Net step. The
            # next step's zero_grad clears them anyway, before its backward, as in the tutorials.
            opt.zero_grad(set_to_none=True)
        return True


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UserError(f"bad train.device '{spec}': use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device is '{spec}' but no CUDA GPU is available")
    return dev
