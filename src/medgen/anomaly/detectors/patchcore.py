"""PatchCore-style detection (Roth et al. 2022): a memory bank of the normal training images'
patch features, subsampled by greedy coreset; a pixel's anomaly score is the distance of its
patch feature to the nearest patch in memory (``neighbours`` > 1: mean of the k nearest).

No position enters the features, so a patch is normal if it looks like ANY normal patch: this
suits slices of different levels and orientations, where a per-position model (``padim``) would
need aligned images."""
from __future__ import annotations

import numpy as np
import torch

from medgen.anomaly import features
from medgen.anomaly.detectors.base import Detector, Output


class PatchCore(Detector):
    name = "patchcore"
    summary = "patch-features run: distance to the nearest normal patch in a coreset memory (PatchCore)"
    fits_on_normals = True
    tunes_by_default = True

    def fit(self, normals, echo=print):
        s = self.settings
        f = features.as_patches(features.extract(self.model, normals, s.batch_size, "features (normal train)"))
        self.mean, self.std = f.mean(dim=0), f.std(dim=0).clamp_min(1e-6)
        f = (f - self.mean) / self.std
        self.n_patches = len(f)
        if len(f) > features.PRESAMPLE:
            f = f[torch.randperm(len(f), generator=torch.Generator().manual_seed(s.seed))[:features.PRESAMPLE]]
        self.memory = f[features.greedy_coreset(f, s.memory, s.seed)]
        echo(f"memory bank: {len(self.memory)} of {self.n_patches} normal patches (greedy coreset)")

    def run(self, images, seed, describe):
        s = self.settings
        feats = features.extract(self.model, images, s.batch_size, describe)
        n, _, h, w = feats.shape
        q = (features.as_patches(feats) - self.mean) / self.std
        d = features.knn_distance(q, self.memory, s.neighbours).reshape(n, h, w)
        return Output(features.to_image_size(d, tuple(images.shape[2:])), None)

    def record(self):
        return {"memory": int(len(self.memory)), "normal_patches": int(self.n_patches), "neighbours": self.settings.neighbours}
