"""PaDiM-style detection (Defard et al. 2021): a Gaussian of the normal training images' patch
features at every position; a pixel's score is the Mahalanobis distance of its feature to its
position's Gaussian. Assumes aligned images (same anatomy at the same place); the covariance is
regularised with 0.01 I (as in PaDiM) since a few dozen images cannot fill it.
"""
from __future__ import annotations

import torch

from medgen.anomaly import features
from medgen.anomaly.detectors.base import Detector, Output

MAX_DIMS = 100  # PaDiM's random channel selection keeps its per-position covariances small


class Padim(Detector):
    name = "padim"
    summary = "patch-features run: Mahalanobis distance to a per-position Gaussian of normal features (PaDiM)"
    fits_on_normals = True
    tunes_by_default = True

    def fit(self, normals, echo=print):
        s = self.settings
        f = features.extract(self.model, normals, s.batch_size, "features (normal train)")
        d = f.shape[1]
        gen = torch.Generator().manual_seed(s.seed)
        self.channels = torch.randperm(d, generator=gen)[:MAX_DIMS].sort().values if d > MAX_DIMS else torch.arange(d)
        f = f[:, self.channels].double()  # (N, D, h, w)
        n, d, h, w = f.shape
        x = f.permute(2, 3, 0, 1).reshape(h * w, n, d)
        self.mean = x.mean(dim=1)
        xc = x - self.mean[:, None]
        cov = xc.transpose(1, 2) @ xc / max(1, n - 1) + 0.01 * torch.eye(d, dtype=torch.float64)
        self.precision = torch.linalg.inv(cov)
        self.n_normals = n
        echo(f"per-position Gaussians: {h}x{w} positions, {d} feature channels, {n} normal images")

    def run(self, images, seed, describe):
        f = features.extract(self.model, images, self.settings.batch_size, describe)[:, self.channels].double()
        n, d, h, w = f.shape
        x = f.permute(2, 3, 0, 1).reshape(h * w, n, d) - self.mean[:, None]
        m = torch.einsum("pnd,pde,pne->pn", x, self.precision, x).clamp_min(0).sqrt()
        return Output(features.to_image_size(m.T.reshape(n, h, w).float(), tuple(images.shape[2:])), None)

    def record(self):
        return {"feature_channels": int(len(self.channels)), "normal_images": self.n_normals}
