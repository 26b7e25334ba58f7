"""Multi-scale texture and contrast features: what a reader notices first, without weights or labels.

A classifier trained on the labels (the ``domain`` extractor) learns what separates the labels and
may ignore blur, lost tissue contrast or noise; these features measure exactly those, per image and
channel, at several scales (scipy.ndimage filters, 2-D and 3-D alike):

* intensity: mean, standard deviation, 5/25/50/75/95 % quantiles (contrast and brightness);
* band-pass energy: mean |DoG| and the standard deviation of the difference of Gaussians at
  sigma 0.5-1, 1-2, 2-4, 4-8 pixels (blur removes the fine bands, noise inflates them);
* gradient magnitude (Gaussian derivative, sigma 1 and 2): mean and 50/90/99 % quantiles (edge
  sharpness);
* local contrast: mean and 90 % quantile of the local standard deviation (Gaussian window sigma 2),
  over the mean intensity;
* checkerboard: mean |x convolved with the alternating +-1 kernel| over the finest band's energy
  (the upsampling artefact of transposed convolutions).

26 numbers per channel; z-scored with the real set's statistics before distances are taken.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medgen.metrics._arrays import as_numpy

__all__ = ["FEATURE_NAMES", "texture_features"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
BANDS = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0))
GRADIENT_SIGMAS = (1.0, 2.0)


def _names() -> list[str]:
    names = ["mean", "std", *[f"q{int(q * 100):02d}" for q in QUANTILES]]
    for lo, hi in BANDS:
        names += [f"dog{lo:g}-{hi:g}_absmean", f"dog{lo:g}-{hi:g}_std"]
    for s in GRADIENT_SIGMAS:
        names += [f"grad{s:g}_mean", f"grad{s:g}_q50", f"grad{s:g}_q90", f"grad{s:g}_q99"]
    return names + ["local_contrast_mean", "local_contrast_q90", "checkerboard"]


FEATURE_NAMES = tuple(_names())


def _one(x: np.ndarray) -> list[float]:
    from scipy import ndimage as ndi

    out = [float(x.mean()), float(x.std()), *np.quantile(x, QUANTILES).tolist()]
    blurred = {s: ndi.gaussian_filter(x, s, mode="reflect") for s in sorted({v for b in BANDS for v in b})}
    for lo, hi in BANDS:
        band = blurred[lo] - blurred[hi]
        out += [float(np.abs(band).mean()), float(band.std())]
    for s in GRADIENT_SIGMAS:
        g = ndi.gaussian_gradient_magnitude(x, s, mode="reflect")
        out += [float(g.mean()), *np.quantile(g, (0.5, 0.9, 0.99)).tolist()]
    local_mean = ndi.gaussian_filter(x, 2.0, mode="reflect")
    local_sd = np.sqrt(np.maximum(ndi.gaussian_filter(x * x, 2.0, mode="reflect") - local_mean ** 2, 0.0))
    scale = max(abs(float(x.mean())), 1e-6)
    out += [float(local_sd.mean() / scale), float(np.quantile(local_sd, 0.9) / scale)]
    alternating = np.indices(x.shape).sum(axis=0) % 2 * 2.0 - 1.0
    kernel = alternating[tuple(slice(0, 2) for _ in x.shape)]
    checker = np.abs(ndi.convolve(x, kernel, mode="reflect")).mean()
    out.append(float(checker / max(out[len(QUANTILES) + 2], 1e-6)))  # over the finest band's |DoG|
    return out


def texture_features(images: Any) -> np.ndarray:
    """(N, 26 * C) texture/contrast features of images (N, C, H, W) or (N, C, D, H, W)."""
    x = as_numpy(images, np.float64)
    if x.ndim not in (4, 5):
        raise ValueError(f"images must be (N, C, H, W) or (N, C, D, H, W), got shape {x.shape}")
    feats = np.array([[v for c in range(x.shape[1]) for v in _one(x[i, c])] for i in range(x.shape[0])])
    return feats.reshape(x.shape[0], len(FEATURE_NAMES) * x.shape[1])
