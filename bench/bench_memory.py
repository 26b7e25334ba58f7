"""GPU memory of the paper-profile S000 latent diffusion model (preset mammo-roi-ldm, profile paper:
AutoencoderKL (128, 128, 256), latent 3, 2 res blocks; U-Net (128, 256, 512), attention (F, T, T),
heads (0, 256, 512)) training at 512x512, batch 2 (target: under 16 GB for each stage).

On a GPU: ``torch.cuda.max_memory_allocated`` over real training steps of each stage
(``model.training_step`` with the stage's AMP setting, the adversarial loss on, EMA on where the
preset uses it).

On a CPU: an estimate. Weights, gradients and Adam states are counted from the parameters.
Activations are measured, not guessed: the bytes of the tensors autograd keeps for backward
(saved-tensor hooks; live bytes, peak over a real ``training_step``, storages shared by views
counted once, parameters left out) at four small resolutions (32 to 80 pixels), then fitted and
extrapolated to 512x512. Memory grows with the side s as a polynomial: convolution activations with s^2, the
U-Net's attention score matrices (MONAI computes them explicitly, no memory-efficient attention)
with s^4, the patch discriminator's unpadded last convolutions bring an s term; so the fit is
bytes(s) = a + b s + c s^2 + d s^4, exact on four points. A fifth resolution checks it.
AMP: the same measurement under CPU bf16 autocast where medgen autocasts (its CUDA op lists differ
in details, so this is an approximation of CUDA AMP). Not counted: cuDNN workspaces, transient
activation gradients during backward, allocator fragmentation, the latent cache of the diffusion
stage (reported per 1,000 training images).
"""
from __future__ import annotations

import gc

import numpy as np
import torch

from common import StageData, figure, pick

PRESET, PROFILE, SIZE, BATCH = "mammo-roi-ldm", "paper", 512, 2
BUDGET_GB = 16.0
GB = 2**30
# sides: multiples of 16 (autoencoder and U-Net halve twice each), >= 32 (patch discriminator); the
# fit is exact when the polynomial model holds, so small sides suffice and the check tells
FIT_SIDES = (32, 48, 64, 80)
CHECK_SIDE = pick(128, 96)


def config():
    from medgen.config import resolve
    from medgen.models.base import DataInfo

    cfg = resolve(PRESET, PROFILE, [f"train.stages.autoencoder.batch_size={BATCH}", f"train.stages.diffusion.batch_size={BATCH}"])
    return cfg, DataInfo(2, 1, (SIZE, SIZE), ["class0"])


def setup(stage: str, device):
    """A fresh model ready for ``training_step`` in ``stage``: (model, ctx, ema). The networks are
    fully convolutional, so one model serves every resolution."""
    from medgen.engine.context import StepContext
    from medgen.engine.ema import EMA
    from medgen.models.base import build_model

    cfg, info = config()
    torch.manual_seed(0)
    model = build_model(cfg, info).to(device).train()
    scfg = cfg.stage(stage)
    ctx = StepContext(device, scfg.amp, scfg.grad_clip, torch.Generator().manual_seed(0))
    ctx.stage, ctx.epoch = stage, model.params.adv_start_epoch  # the adversarial loss is on (S000 from epoch 4)
    ctx.optimizers = model.optimizers(stage, scfg)
    target = model.ema_target(stage)
    ema = EMA(model.get_submodule(target), scfg.ema_decay) if scfg.ema_decay and target else None
    return model, ctx, ema


def batch_for(model, stage: str, side: int, device) -> dict:
    batch = {"image": torch.rand(BATCH, 1, side, side, device=device), "label": torch.zeros(BATCH, dtype=torch.long, device=device),
             "index": torch.arange(BATCH)}
    model.on_stage_start(stage, StageData([batch]))  # diffusion: caches this batch's latents, freezes the autoencoder
    return batch


class SavedTensors:
    """Peak live bytes of the tensors autograd saves for backward, parameters excluded."""

    def __init__(self, params):
        self.params = {p.untyped_storage().data_ptr() for p in params}
        self.refs: dict[int, list[int]] = {}  # storage -> [bytes, saved references]
        self.now = self.peak = 0

    def pack(self, t):
        ptr = t.untyped_storage().data_ptr()
        if ptr in self.params or ptr == 0:
            return t
        entry = self.refs.setdefault(ptr, [t.untyped_storage().nbytes(), 0])
        if entry[1] == 0:
            self.now += entry[0]
            self.peak = max(self.peak, self.now)
        entry[1] += 1
        return _Held(t, ptr, self)

    def release(self, ptr):
        entry = self.refs[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.refs[ptr]


class _Held:
    """A saved tensor. Backward releases it (the count goes down); a graph that is never
    backpropagated would keep it (a reference cycle through autograd), which saved_bytes checks."""

    def __init__(self, t, ptr, owner):
        self.t, self.ptr, self.owner = t, ptr, owner

    def __del__(self):
        self.owner.release(self.ptr)


def saved_bytes(model, ctx, stage: str, side: int) -> int:
    """Peak bytes saved for backward during one training step at side x side."""
    batch = batch_for(model, stage, side, torch.device("cpu"))
    saved = SavedTensors(model.parameters())
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda h: h.t if isinstance(h, _Held) else h):
        model.training_step(batch, stage, ctx)
    if saved.now:  # every graph of the step was backpropagated, so everything saved must be released
        raise RuntimeError(f"{saved.now} saved bytes still held after the step: the peak would be wrong")
    return saved.peak


def fit(sides, values):
    """Coefficients of a + b s + c s^2 + d s^4 through the points (exact on four)."""
    s = np.asarray(sides, dtype=np.float64)
    return np.linalg.lstsq(np.stack([s**0, s, s**2, s**4], axis=1), np.asarray(values, dtype=np.float64), rcond=None)[0]


def at(coef, side):
    return float(coef @ np.array([1.0, side, side**2, side**4]))


def estimate(stage: str) -> dict:
    model, ctx, ema = setup(stage, torch.device("cpu"))
    trainable = [p for o in ctx.optimizers.values() for g in o.param_groups for p in g["params"]]
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    grads = sum(p.numel() * 4 for p in trainable)  # fp32 gradients, with or without AMP
    static = {"weights": weights, "gradients": grads, "adam_states": 2 * grads,
              "ema": sum(v.numel() * v.element_size() for v in ema.state_dict().values()) if ema else 0}
    out = {"static_gb": {k: v / GB for k, v in static.items()}}
    for name, dtype in (("fp32", None), ("amp_bf16", torch.bfloat16)):
        ctx.amp_dtype = dtype  # bf16: autocast on the CPU exactly where medgen's step autocasts on a GPU
        saved = [saved_bytes(model, ctx, stage, s) for s in (*FIT_SIDES, CHECK_SIDE)]
        coef = fit(FIT_SIDES, saved[:-1])
        act = at(coef, SIZE)
        total = (sum(static.values()) + act) / GB
        out[name] = {"activations_gb": act / GB, "total_gb": total, "under_16gb": total < BUDGET_GB,
                     "fit_check_rel_error": abs(at(coef, CHECK_SIDE) - saved[-1]) / saved[-1],
                     "saved_bytes_measured": dict(zip(map(str, (*FIT_SIDES, CHECK_SIDE)), saved)),
                     # the paper profile trains with batch 4: activations doubled (their batch-independent
                     # part, e.g. autocast's weight copies, too: an upper-side approximation)
                     "batch4_total_gb_approx": (sum(static.values()) + 2 * act) / GB}
    if stage == "diffusion":  # mean and std of q(z|x) for every training image stay on the device
        z = model.params.autoencoder.latent_channels * (SIZE // model.down) ** 2
        out["latent_cache_gb_per_1000_images_not_included"] = 2 * z * 4 * 1000 / GB
    return out


def measure_cuda(stage: str) -> dict:
    device = torch.device("cuda")
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, ctx, ema = setup(stage, device)
    batch = batch_for(model, stage, SIZE, device)
    for _ in range(3):
        model.training_step(batch, stage, ctx)
        if ema is not None:
            ema.update()
    torch.cuda.synchronize()
    out = {"total_gb": torch.cuda.max_memory_allocated() / GB, "reserved_gb": torch.cuda.max_memory_reserved() / GB,
           "amp": str(ctx.amp_dtype)}
    del model, ctx, batch, ema
    return out


def main() -> None:
    cuda = torch.cuda.is_available()
    cfg, _ = config()
    for stage in ("autoencoder", "diffusion"):
        amp = cfg.stage(stage).amp
        if cuda:
            r = measure_cuda(stage)
            value, method = r["total_gb"], "measured: torch.cuda.max_memory_allocated over 3 training steps (weights included)"
        else:
            r = estimate(stage)
            value = r["amp_bf16" if amp else "fp32"]["total_gb"]
            method = (f"estimate (saved-tensor bytes measured at {', '.join(f'{s}x{s}' for s in FIT_SIDES)}, "
                      f"fitted a + b s + c s^2 + d s^4 and scaled to {SIZE}x{SIZE}; checked at {CHECK_SIDE}x{CHECK_SIDE}; "
                      "AMP = CPU bf16 autocast, an approximation of CUDA AMP; plus weights, fp32 gradients, Adam states, EMA)")
        what = "peak GPU memory, measured" if cuda else f"GPU memory, estimated on CPU ({'AMP' if amp else 'fp32'})"
        figure("memory", f"S000 paper LDM, {stage} stage, {SIZE}x{SIZE} batch {BATCH}, {what}", "GB", value, BUDGET_GB,
               "budget", value / BUDGET_GB, "<= 1", method=method, amp_configured=amp,
               under_16gb=value < BUDGET_GB,
               note="adversarial loss on; perceptual loss off (its LPIPS weights are not available offline; "
                    "S000's AlexNet LPIPS would add its own activations); the paper profile itself trains with batch 4",
               **r)


if __name__ == "__main__":
    main()
