"""What every sampler shares: the timestep list, the walk over it, and x_0 from a noise prediction.

A sampler drives a noise predictor (``Denoiser`` in ``medgen.models.diffusion``): something with
``alphas_cumprod`` (the training schedule, abar_t) and ``guided_eps(x, t, labels, guidance)``.
Subclasses implement ``step``, one move from timestep t to the earlier t_prev (-1 = the end); a
sampler whose walk is not a sequence of such steps overrides ``run`` (as the rectified-flow samplers
in ``medgen.samplers.rflow`` do: they drive the velocity of an ``objective: rflow`` Denoiser,
``guided_velocity``, on MONAI's ``RFlowScheduler`` grid).
"""
from __future__ import annotations

from typing import Callable, ClassVar, Protocol

import torch


class NoisePredictor(Protocol):
    alphas_cumprod: torch.Tensor

    def guided_eps(self, x: torch.Tensor, t: int, labels: torch.Tensor | None, guidance: float) -> torch.Tensor: ...


def respaced_timesteps(num_train_timesteps: int, steps: int | None) -> list[int]:
    """``steps`` timesteps evenly spaced over training's (all when None), descending, always ending at
    t = 0, the most informative step."""
    T = num_train_timesteps
    steps = min(steps or T, T)
    return sorted({int(round(v)) for v in torch.linspace(0, T - 1, steps).tolist()}, reverse=True)


def abar(den: NoisePredictor, t: int) -> torch.Tensor:
    """abar_t of the schedule; 1 before the first timestep (t = -1: the clean image)."""
    return den.alphas_cumprod[t] if t >= 0 else torch.ones((), device=den.alphas_cumprod.device)


def predict_x0(x: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, clip: tuple[float, float] | None) -> torch.Tensor:
    """x_0 implied by the noise prediction (Ho et al. eq. 4 solved for x_0), clipped to the data range."""
    x0 = (x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    return x0.clamp(*clip) if clip else x0


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device (CPU and GPU give the same numbers)."""
    return torch.randn(x.shape, generator=generator, device=generator.device if generator is not None else x.device).to(x.device)


class Sampler:
    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False  # whether step draws noise (the generator matters beyond x_T)

    def evaluations(self, steps: int) -> int:
        """Network evaluations per image for ``steps`` steps (classifier-free guidance runs each on a
        doubled batch, not counted twice): the cost axis of ``medgen evaluate --sweep``."""
        return steps

    def step(self, den: NoisePredictor, x: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
             clip: tuple[float, float] | None, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def run(self, den: NoisePredictor, x: torch.Tensor, timesteps: list[int], labels: torch.Tensor | None = None,
            guidance: float = 1.0, generator: torch.Generator | None = None, clip: tuple[float, float] | None = (-1.0, 1.0),
            progress: Callable[[], None] | None = None) -> torch.Tensor:
        """Walk ``x`` (noisy at ``timesteps[0]``) down ``timesteps`` (descending) to a clean sample."""
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            eps = den.guided_eps(x, t, labels, guidance).float()
            x = self.step(den, x, eps, t, t_prev, clip, generator)
            if progress:
                progress()
        return x
