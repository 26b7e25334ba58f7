"""DDIM-50 against DDPM-1000 on the same denoiser (target: >= 15x faster; ``BENCH_QUICK=1``: DDPM-200, no target)."""
from __future__ import annotations

import torch

from common import figure, gpu_options, median_time, pick


def main() -> None:
    from medgen.models.diffusion import Denoiser, SchedulerParams, UNetParams

    den = Denoiser(UNetParams(channels=[32, 64], attention_levels=[False, True], num_head_channels=32, norm_num_groups=8),
                   SchedulerParams(num_train_timesteps=1000), 2, 3, 0, False, 0.0).eval()
    den.to("cuda" if torch.cuda.is_available() else "cpu")
    shape = (8, 3, 16, 16)

    def run(sampler, steps):
        return lambda: den.sample(shape, None, sampler, steps, 1.0, torch.Generator().manual_seed(0), clip=None)

    steps = pick(1000, 200)  # quick: a shorter DDPM run, no target
    with torch.no_grad():
        ddpm = median_time(run("ddpm", steps), repeats=pick(2, 1), warmup=0)
        ddim = median_time(run("ddim", 50), repeats=pick(5, 1))
    figure("samplers", f"DDIM-50 vs DDPM-{steps} (same denoiser, {shape[0]} latents {'x'.join(map(str, shape[1:]))})", "images/s",
           shape[0] / ddim, shape[0] / ddpm, f"DDPM-{steps}, same denoiser", ddpm / ddim, ">= 15" if steps == 1000 else None,
           ddpm_s=ddpm, ddim50_s=ddim, gpu_options=gpu_options())


if __name__ == "__main__":
    main()
