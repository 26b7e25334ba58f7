"""``ddpm``: ancestral DDPM sampling on a respaced timestep list.

MONAI's ``DDPMScheduler.step`` assumes consecutive timesteps (it uses ``alphas_cumprod[t - 1]``),
so sampling with fewer steps than the model was trained with would be wrong. The posterior
q(x_{t'} | x_t, x_0) below uses the previous *respaced* timestep t' (Ho et al. 2020, eq. 6-7,
with beta_t = 1 - abar_t / abar_t'), and equals plain DDPM when every timestep is used. This is
what S000's 1000/2000/3000-step tables need.
"""
from __future__ import annotations

from medgen.samplers.base import Sampler, abar, noise_like, predict_x0


class RespacedDDPM(Sampler):
    name = "ddpm"
    stochastic = True

    def step(self, den, x, eps, t, t_prev, clip, generator):
        abar_t, abar_prev = abar(den, t), abar(den, t_prev)
        beta = 1 - abar_t / abar_prev
        x0 = predict_x0(x, eps, abar_t, clip)
        mean = (abar_prev.sqrt() * beta / (1 - abar_t)) * x0 + ((1 - beta).sqrt() * (1 - abar_prev) / (1 - abar_t)) * x
        if t_prev < 0:
            return mean
        var = beta * (1 - abar_prev) / (1 - abar_t)
        return mean + var.clamp(min=1e-20).sqrt() * noise_like(x, generator)
