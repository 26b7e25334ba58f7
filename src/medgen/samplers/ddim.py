"""``ddim``: deterministic DDIM (eta = 0), Song et al. 2021 eq. 12, on the respaced timestep list;
the same update as MONAI's ``DDIMScheduler``."""
from __future__ import annotations

from medgen.samplers.base import Sampler, abar, predict_x0


class DDIM(Sampler):
    name = "ddim"

    def step(self, den, x, eps, t, t_prev, clip, generator=None):
        abar_t, abar_prev = abar(den, t), abar(den, t_prev)
        x0 = predict_x0(x, eps, abar_t, clip)
        if clip:  # keep eps consistent with the clipped x0
            eps = (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
        return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
