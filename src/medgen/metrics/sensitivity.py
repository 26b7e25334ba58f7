"""Could this extractor, at this n, tell a defect at all? The sensitivity check beside a headline.

The real test images are split in two halves A and B (seeded); the metric is computed for A
against B (the real-vs-real baseline: what "as good as real" scores at this n) and for A against a
mildly degraded copy of B (Gaussian blur of ``blur_sigma`` pixels, then contrast reduced to
``contrast`` of its deviation from each image's mean). If the degraded copy's FID interval does not
lie above the real baseline's, this extractor at this n cannot see such a defect, and a good score
of synthetic images means little.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from medgen.metrics._arrays import as_numpy

__all__ = ["degrade", "sensitivity_check"]


def degrade(images: Any, blur_sigma: float = 1.0, contrast: float = 0.7) -> np.ndarray:
    """Blurred (Gaussian, ``blur_sigma`` px, spatial axes only) and contrast-reduced copy of (N, C, *spatial) images."""
    from scipy import ndimage as ndi

    x = as_numpy(images, np.float32)
    sigma = (0, 0) + (blur_sigma,) * (x.ndim - 2)
    y = ndi.gaussian_filter(x, sigma, mode="reflect")
    mean = y.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
    return (mean + contrast * (y - mean)).astype(np.float32)


def sensitivity_check(images: Any, extract: Callable[[np.ndarray], np.ndarray], *, blur_sigma: float = 1.0,
                      contrast: float = 0.7, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
                      standardise: Callable | None = None) -> dict:
    """FID with intervals of real half A vs real half B, and of A vs the degraded B (see the module docstring).

    ``extract``: images -> features (N, F). ``standardise``: optional ``(real, *others) -> ([...], info)``
    applied with A as the reference (as evaluate z-scores radiomics). Returns {"real_vs_real",
    "real_vs_degraded", "detects_defect", "degradation", "n_per_half"}.
    """
    from medgen.metrics.feature_intervals import fid_ci

    x = as_numpy(images, np.float32)
    if len(x) < 8:
        raise ValueError(f"the sensitivity check needs at least 8 real test images, got {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    half = len(x) // 2
    a, b = x[order[:half]], x[order[half:2 * half]]
    fa, fb, fd = extract(a), extract(b), extract(degrade(b, blur_sigma, contrast))
    if standardise is not None:
        (fa, fb, fd), _ = standardise(fa, fb, fd)
    same = fid_ci(fa, fb, n_resamples=n_resamples, level=level, seed=seed)
    worse = fid_ci(fa, fd, n_resamples=n_resamples, level=level, seed=seed)
    return {"real_vs_real": same, "real_vs_degraded": worse, "detects_defect": bool(worse["low"] > same["high"]),
            "ratio": worse["value"] / same["value"] if same["value"] > 0 else float("inf"),
            "degradation": {"blur_sigma_px": blur_sigma, "contrast": contrast}, "n_per_half": int(half)}
