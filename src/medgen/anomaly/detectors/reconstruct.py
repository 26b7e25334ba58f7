"""Reconstruction error: |x - model.reconstruct(x)| (or SSIM) for autoencoding families (S003)."""
from __future__ import annotations

from medgen.anomaly import scoring
from medgen.anomaly.detectors.base import Detector, Output, batches


class Reconstruct(Detector):
    name = "reconstruct"
    summary = "reconstruction error of an autoencoding run (conv-ae, vae, vae-gan, ldm)"

    def run(self, images, seed, describe):
        recon = batches(self.model, images, self.settings.batch_size, describe, self.model.reconstruct)
        return Output(scoring.error_map(images, recon, self.settings.map, self.settings.ssim_window), recon)

    def record(self):
        return {"map": self.settings.map, "ssim_window": self.settings.ssim_window if self.settings.map != "abs" else None}
