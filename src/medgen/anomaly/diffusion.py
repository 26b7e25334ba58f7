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
