"""``rflow`` and ``rflow-heun``: integrate a rectified-flow model's ODE dx/dt = -v(x, t) / T from
pure noise (t = T) to the image (t = 0).

The network of an ``objective: rflow`` ``Denoiser`` predicts the velocity v = x_0 - noise of the
straight path x_t = (1 - t/T) x_0 + (t/T) noise (Liu et al. 2022; Esser et al. 2024). The time grid
is MONAI's ``RFlowScheduler.set_timesteps`` (``Denoiser.timesteps``) and every move is MONAI's
``RFlowScheduler.step`` (x_next = x + v (t - t_next) / T: Euler).

``rflow-heun`` corrects each Euler move with the velocity at its end point (Heun's method, the
second-order solver of Karras et al. 2022, Algorithm 1): two network evaluations per step, except
the last, which is a plain Euler move as in Karras et al. So ``steps`` Heun steps cost
2 * steps - 1 evaluations.

Clipping (pixel-space models): the image implied by a velocity, x_0 = x_t + (t/T) v (MONAI's
``pred_original_sample``), is clipped to the data range and the velocity recomputed from it, the
same thing ``ddim`` does with its noise prediction.
"""
from __future__ import annotations

from typing import Callable

import torch

from medgen.samplers.base import Sampler


def clipped_velocity(x: torch.Tensor, v: torch.Tensor, t: int, T: int, clip: tuple[float, float] | None) -> torch.Tensor:
    """The velocity whose implied x_0 lies in ``clip`` (unchanged without a clip, or at t = 0)."""
    s = t / T
    if not clip or s <= 0:
        return v
    x0 = (x + s * v).clamp(*clip)
    noise = (x - (1 - s) * x0) / s
    return x0 - noise


class RFlowEuler(Sampler):
    name = "rflow"
    heun = False

    @torch.no_grad()
    def run(self, den, x: torch.Tensor, timesteps: list[int], labels: torch.Tensor | None = None,
            guidance: float = 1.0, generator: torch.Generator | None = None, clip: tuple[float, float] | None = (-1.0, 1.0),
            progress: Callable[[], None] | None = None) -> torch.Tensor:
        """Walk ``x`` (at time ``timesteps[0]``) down the descending ``timesteps`` and on to t = 0 (a
        trailing 0 in the list is the end point, not a step). Deterministic: ``generator`` is unused."""
        flow, T = den.flow, den.T
        ts = [int(t) for t in timesteps if t > 0]
        flow.set_timesteps(max(len(ts), 1))  # MONAI's step asks for it; the moves below name both ends
        for i, t in enumerate(ts):
            t_next = ts[i + 1] if i + 1 < len(ts) else 0
            v = clipped_velocity(x, den.guided_velocity(x, t, labels, guidance).float(), t, T, clip)
            if self.heun and t_next > 0:
                x_end = flow.step(v, t, x, t_next)[0]
                v_end = clipped_velocity(x_end, den.guided_velocity(x_end, t_next, labels, guidance).float(), t_next, T, clip)
                v = (v + v_end) / 2
            x = flow.step(v, t, x, t_next)[0]
            if progress:
                progress()
        return x


class RFlowHeun(RFlowEuler):
    name = "rflow-heun"
    heun = True

    def evaluations(self, steps: int) -> int:
        return max(1, 2 * steps - 1)  # two per step, the last step Euler
