"""AnoDDPM-style partial noising and denoising with a pixel DDPM (:mod:`medgen.anomaly.diffusion`),
at one noise level or several.

Several levels (``noise_levels``, e.g. 0.05, 0.1, 0.2): a small lesion survives light noise (the
model keeps it), while heavy noise also changes normal detail; the map is the mean of the error
maps over the levels, each from the mean of ``draws`` reconstructions. ``--noise-level auto``
chooses the levels on normal validation images (:func:`medgen.anomaly.tuning.choose_noise_levels`),
each level's map divided by its mean on those normals before the levels are averaged. Within one level, one
draw's errors in normal tissue are partly that draw's noise (zero-mean, it averages out), while a
lesion the model cannot reproduce is missing from every draw, so the mean sharpens the map.
With ``patch`` set, each reconstruction is patch-wise (:func:`medgen.anomaly.diffusion.patch_reconstruct`,
pDDPM-style): one patch at a time is rebuilt from its surroundings.
"""
from __future__ import annotations

import numpy as np
import torch

from medgen.anomaly import scoring
from medgen.anomaly.detectors.base import Detector, Output, batches
from medgen.anomaly.diffusion import diffusion_reconstruct, partial_timesteps, patch_reconstruct, t_start_for


class PartialDiffusion(Detector):
    name = "diffusion"
    summary = "pixel ddpm: noise to one or several levels, denoise, compare (AnoDDPM)"

    def __init__(self, model, settings):
        super().__init__(model, settings)
        self.t_starts = [t_start_for(model, level) for level in settings.noise_levels]
        self.scales: dict[int, float] | None = None

    def reconstruct(self, images: np.ndarray, t_start: int, gen: torch.Generator, describe: str) -> np.ndarray:
        s = self.settings

        def once(xb):
            if s.patch:
                return patch_reconstruct(self.model, xb, t_start, s.steps, gen, s.sampler, s.patch)
            return diffusion_reconstruct(self.model, xb, t_start, s.steps, gen, s.sampler)

        def mean_of_draws(xb):
            return sum(once(xb) for _ in range(s.draws)) / s.draws

        return batches(self.model, images, s.batch_size, describe, mean_of_draws)

    def run_levels(self, images, seed, describe) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """({t_start: raw error map of that level}, the first level's reconstructions)."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        maps, first = {}, None
        for t_start in self.t_starts:
            recon = self.reconstruct(images, t_start, gen, f"{describe} t={t_start}" if len(self.t_starts) > 1 else describe)
            maps[t_start] = scoring.error_map(images, recon, self.settings.map, self.settings.ssim_window)
            first = recon if first is None else first
        return maps, first

    def combine(self, level_maps: dict[int, np.ndarray]) -> np.ndarray:
        """The mean of the levels' maps, each divided by its scale (1 unless :meth:`use_levels` set one)."""
        from medgen.anomaly.tuning import combine_levels

        return combine_levels(level_maps, self.t_starts, self.scales)

    def use_levels(self, noise_levels, scales: dict[int, float] | None = None) -> None:
        """Keep only these levels; ``scales``: divide each level's map by its mean on normal
        validation images, so that a level whose errors are larger everywhere does not dominate."""
        self.settings.noise_levels = tuple(noise_levels)
        self.t_starts = [t_start_for(self.model, level) for level in noise_levels]
        self.scales = {t: scales[t] for t in self.t_starts} if scales else None

    def run(self, images, seed, describe):
        maps, first = self.run_levels(images, seed, describe)
        return Output(self.combine(maps), first)

    def record(self):
        s = self.settings
        levels = list(s.noise_levels)
        return {"map": s.map, "noise_level": levels[0] if len(levels) == 1 else levels,
                "t_start": self.t_starts[0] if len(levels) == 1 else self.t_starts, "T": self.model.num_timesteps,
                "steps": s.steps, "reverse_steps": len(partial_timesteps(self.t_starts[0], s.steps)),
                "sampler": s.sampler, "seed": s.seed, "draws": s.draws, "patch": s.patch,
                "level_scales": None if not self.scales else [self.scales[t] for t in self.t_starts]}

    def headline(self):
        s = self.settings
        ts = ", ".join(str(t) for t in self.t_starts)
        return (f"diffusion, noised to t={ts} of {self.model.num_timesteps}, "
                f"{len(partial_timesteps(self.t_starts[0], s.steps))} reverse steps ({s.sampler})"
                + (f", mean of {s.draws} draws" if s.draws > 1 else "")
                + (f", patch-wise ({s.patch:g} of the side at a time)" if s.patch else ""))
