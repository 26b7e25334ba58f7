"""DDIM-50 against DDPM-1000 on the same denoiser (target: >= 15x faster)."""
from __future__ import annotations

import torch

from common import emit, machine, median_time


def main() -> None:
    from medgen.models.diffusion import Denoiser, SchedulerParams, UNetParams

    den = Denoiser(UNetParams(channels=[32, 64], attention_levels=[False, True], num_head_channels=32, norm_num_groups=8),
                   SchedulerParams(num_train_timesteps=1000), 2, 3, 0, False, 0.0).eval()
    shape = (8, 3, 16, 16)

    def run(sampler, steps):
        return lambda: den.sample(shape, None, sampler, steps, 1.0, torch.Generator().manual_seed(0), clip=None)

    with torch.no_grad():
        ddpm = median_time(run("ddpm", 1000), repeats=2, warmup=0)
        ddim = median_time(run("ddim", 50), repeats=5)
    emit("samplers", {"images": shape[0], "latent_shape": list(shape[1:]), "ddpm1000_s": ddpm, "ddim50_s": ddim,
                      "speedup": ddpm / ddim, "images_per_s_ddim50": shape[0] / ddim, "images_per_s_ddpm1000": shape[0] / ddpm,
                      "target": ">= 15", "machine": machine()})


if __name__ == "__main__":
    main()
