"""What every feature extractor is: images (N, C, *spatial) in [0, 1] -> features (N, F), described.

Also the z-scoring of features with the real set's statistics (extractors whose features have
mixed units, such as radiomics, set ``standardise``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

__all__ = ["FeatureExtractor", "sha256_of", "standardise"]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureExtractor:
    """Images (N, C, *spatial) in [0, 1] -> features (N, F). Subclasses set the attributes."""

    name: str = ""
    weights: Path | None = None
    dim: int | None = None
    #: z-score features with the real set's statistics before metrics (radiomics: mixed units)
    standardise: bool = False
    preprocessing: str = ""

    def __call__(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        out = {"name": self.name, "weights": str(self.weights) if self.weights else None, "dim": self.dim,
               "preprocessing": self.preprocessing, "standardised": self.standardise}
        if self.weights is not None and Path(self.weights).is_file():
            out["weights_sha256"] = sha256_of(Path(self.weights))
        return out


def standardise(real: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], dict]:
    """z-score every set with the real set's mean/std per feature (std 0 -> 1). Features that are
    not finite for some real image are dropped; non-finite values elsewhere become the real mean."""
    finite = np.all(np.isfinite(real), axis=0)
    mu = real[:, finite].mean(axis=0)
    sd = real[:, finite].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    out, replaced = [], 0
    for f in (real, *others):
        g = f[:, finite]
        bad = ~np.isfinite(g)
        replaced += int(bad.sum())
        g = np.where(bad, mu, g)
        out.append((g - mu) / sd)
    info = {"method": "z-score with the real set's mean and std", "n_features_used": int(finite.sum()),
            "n_features_dropped": int((~finite).sum()), "non_finite_values_replaced": replaced}
    return out, info
