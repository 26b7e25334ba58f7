"""AnoDDPM-style reconstruction with a pixel DDPM trained on normal images (Wyatt et al. 2022).

Partial diffusion: the image is noised only up to timestep ``t_start`` (e.g. 250 of 1000: the
forward process q(x_t | x_0), Ho et al. eq. 4, in one jump), then denoised back to t = 0 by the
trained model. The anatomy survives the partial noise, but the model, which has only seen normal
images, "heals" what it has never seen, so |x - x_hat| lights up anomalies.

Differences from AnoDDPM, stated: the noise is Gaussian (AnoDDPM's best variant used simplex
noise, which the model would have to be trained with), and the reverse walk may be respaced to
``steps`` timesteps between ``t_start`` and 0 (the same respaced DDPM posterior that sampling uses,
the registered ``ddpm`` sampler's step; ``steps=None`` walks all ``t_start`` steps like AnoDDPM).
``sampler="ddim"`` uses the deterministic DDIM update instead.
"""
from __future__ import annotations

import torch


def partial_timesteps(t_start: int, steps: int | None) -> list[int]:
    """Descending timesteps from ``t_start`` to 0: all of them, or ``steps`` evenly spaced."""
    if t_start < 1:
        raise ValueError(f"t_start must be >= 1, got {t_start}")
    n = t_start + 1 if steps is None else max(2, min(int(steps), t_start + 1))
    ts = {int(round(v)) for v in torch.linspace(0, t_start, n).tolist()}
    return sorted(ts | {t_start, 0}, reverse=True)


def t_start_for(model, noise_level: float) -> int:
    """The timestep ``noise_level`` (a fraction of the training timesteps) of this model."""
    if not 0 < noise_level <= 1:
        raise ValueError(f"noise level must be in (0, 1], got {noise_level}")
    T = model.num_timesteps
    return max(1, min(T - 1, int(round(noise_level * T))))


def diffusion_reconstruct(model, x: torch.Tensor, t_start: int, steps: int | None = None,
                          generator: torch.Generator | None = None, sampler: str = "ddpm") -> torch.Tensor:
    """Reconstruct images ``x`` in [0, 1] (B, C, *spatial) by noising to ``t_start`` and denoising
    along ``partial_timesteps``: the family's own ``partial_reconstruct`` (families that declare the
    ``diffusion`` detector have one). Conditional models are run with the null ("no label") class."""
    if sampler not in model.samplers:
        raise ValueError(f"unknown sampler '{sampler}'; choose one of {', '.join(model.samplers)}")
    if t_start >= model.num_timesteps:
        raise ValueError(f"t_start {t_start} must be below the model's {model.num_timesteps} training timesteps")
    return model.partial_reconstruct(x, int(t_start), partial_timesteps(int(t_start), steps), generator, sampler)


@torch.no_grad()
def patch_reconstruct(model, x: torch.Tensor, t_start: int, steps: int | None = None,
                      generator: torch.Generator | None = None, sampler: str = "ddim", patch: float = 0.25) -> torch.Tensor:
    """Patch-wise partial diffusion in the spirit of pDDPM (Behrendt et al. 2023): one patch at a time
    (``patch``: its side as a fraction of the image side; the patches tile the image) is noised to
    ``t_start`` and denoised, while the rest of the image is the input diffused to the same noise
    level at every step (RePaint's known region, :mod:`medgen.inpaint`), so the model sees one
    consistent noise level and rebuilds the patch from its normal surroundings. A heavier noise level
    than whole-image partial diffusion can then erase a lesion without losing the anatomy around it.
    Unlike pDDPM the model is not trained with patch noise: any pixel ``ddpm`` run works. Costs one
    reverse walk per patch (16 at ``patch=0.25`` in 2D)."""
    import itertools

    from medgen.inpaint import merge_known
    from medgen.samplers import get as get_sampler
    from medgen.samplers.base import Sampler, noise_like

    den = model.denoiser
    walk = get_sampler(sampler)
    if getattr(den, "objective", "ddpm") == "rflow" or type(walk).step is Sampler.step:
        # the known region is merged after every single step: a sampler must be a sequence of steps
        raise ValueError("patch-wise reconstruction needs a noise-predicting run and a stepping sampler (ddim, ddpm)")
    if not 0 < patch <= 1:
        raise ValueError(f"patch must be a fraction of the image side in (0, 1], got {patch}")
    device = den.device
    x0 = model.to_diffusion_space(x.to(device).float())
    spatial = tuple(x0.shape[2:])
    sides = [max(1, int(round(patch * n))) for n in spatial]
    starts = [sorted({*range(0, n - p + 1, p), n - p}) for n, p in zip(spatial, sides)]
    ts = partial_timesteps(int(t_start), steps)
    total = torch.zeros_like(x0)
    count = torch.zeros((1, 1, *spatial), device=device)
    for corner in itertools.product(*starts):
        region = torch.zeros((1, 1, *spatial), device=device)
        region[(slice(None), slice(None), *[slice(c, c + p) for c, p in zip(corner, sides)])] = 1
        xt = den.noised(x0, torch.full((x0.shape[0],), int(t_start), device=device, dtype=torch.long), noise_like(x0, generator))
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            eps = den.guided_eps(xt, t, None, 1.0).float()
            xt = merge_known(den, walk.step(den, xt, eps, t, t_prev, model.clip, generator), x0, region, t_prev, generator)
        total += region * xt
        count += region
    return model.from_diffusion_space(total / count)
