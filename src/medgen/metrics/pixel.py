"""Paired (full-reference) image metrics between two same-shaped batches.

Inputs: numpy arrays or torch tensors shaped (N, C, H, W) or (N, C, D, H, W); 2-D vs 3-D is read
from the number of dimensions. Intensities are assumed in [0, data_range] (default 1). Each metric
returns a :class:`PairedScore`: one value per image pair (channels and voxels averaged), their mean,
and the settings used (window sizes, scales...) so that a report can state them.

* MAE, MSE, PSNR: computed here in float64 (one line each; MONAI's MAEMetric/MSEMetric/PSNRMetric
  compute the same in float32). PSNR = 10 log10(data_range^2 / MSE) is +inf for identical images;
  it is not capped, so the mean is +inf as soon as one pair is identical (pass ``cap`` to clip).
* SSIM and MS-SSIM: MONAI's ``SSIMMetric`` / ``MultiScaleSSIMMetric`` (Gaussian window), with the
  window and the number of scales adapted to the image size, see :func:`ssim_settings` and
  :func:`ms_ssim_settings`. MONAI's defaults (window 11, sigma 1.5, 5 scales) need every side
  > 160 px for MS-SSIM and >= 11 px for SSIM, which rules out 32/64 px images and 8-slice volumes.

One unpaired metric sits here too, :func:`mse_all_pairs`: generated images have no real
counterpart, so S000's "mean MSE" of generated against real test images averages over every pair.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from medgen.metrics._arrays import as_numpy

__all__ = [
    "MS_SSIM_WEIGHTS",
    "PairedScore",
    "mae",
    "ms_ssim",
    "ms_ssim_settings",
    "mse",
    "mse_all_pairs",
    "paired_metrics",
    "psnr",
    "ssim",
    "ssim_settings",
]

#: Per-scale exponents of Wang et al. 2003, finest scale first (MONAI's default).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class PairedScore:
    """Per-pair values (N,), their mean, and the settings the metric used."""

    per_image: np.ndarray
    mean: float
    settings: dict = field(default_factory=dict)


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = as_numpy(x, np.float64)
    b = as_numpy(y, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image batches differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (4, 5):
        raise ValueError(f"expected (N, C, H, W) or (N, C, D, H, W), got shape {a.shape}")
    return a, b


def _score(values: np.ndarray, settings: dict | None = None) -> PairedScore:
    values = np.asarray(values, dtype=np.float64)
    return PairedScore(values, float(values.mean()), dict(settings or {}))


def mae(x: Any, y: Any) -> PairedScore:
    """Mean absolute error per image pair."""
    a, b = _pair(x, y)
    return _score(np.abs(a - b).reshape(len(a), -1).mean(axis=1))


def mse(x: Any, y: Any) -> PairedScore:
    """Mean squared error per image pair."""
    a, b = _pair(x, y)
    return _score(np.square(a - b).reshape(len(a), -1).mean(axis=1))


def psnr(x: Any, y: Any, data_range: float = 1.0, cap: float | None = None) -> PairedScore:
    """Peak signal-to-noise ratio in dB per pair: 10 log10(data_range^2 / MSE).

    +inf where the pair is identical, unless ``cap`` (e.g. 100 dB) clips it.
    """
    m = mse(x, y).per_image
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(data_range**2 / m)
    if cap is not None:
        values = np.minimum(values, cap)
    return _score(values, {"data_range": data_range, "cap": cap})


def _largest_odd(n: int) -> int:
    return n if n % 2 else n - 1


def _scaled_sigmas(windows: Sequence[int], kernel_size: int, kernel_sigma: float) -> tuple[float, ...]:
    # A shrunk window keeps the standard window/sigma ratio (11 / 1.5), i.e. the Gaussian is cut
    # at the same number of sigmas, instead of becoming an almost flat box.
    return tuple(round(kernel_sigma * w / kernel_size, 6) for w in windows)


def ssim_settings(spatial_shape: Sequence[int], kernel_size: int = 11, kernel_sigma: float = 1.5) -> dict:
    """Gaussian window per axis for SSIM: ``kernel_size`` where it fits, else the largest odd
    size <= that axis (e.g. 7 for an 8-slice axis), sigma scaled by window / kernel_size.

    Returns {"kernel_size": tuple, "kernel_sigma": tuple}.
    """
    shape = tuple(int(s) for s in spatial_shape)
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if min(shape) < 1:
        raise ValueError(f"empty spatial shape {shape}")
    windows = tuple(min(kernel_size, _largest_odd(s)) for s in shape)
    return {"kernel_size": windows, "kernel_sigma": _scaled_sigmas(windows, kernel_size, kernel_sigma)}


def ms_ssim_settings(
    spatial_shape: Sequence[int],
    kernel_size: int = 11,
    kernel_sigma: float = 1.5,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    min_window: int = 3,
    min_scales: int = 2,
) -> dict:
    """Choose window sizes and number of scales for MS-SSIM on images of ``spatial_shape``.

    Each scale halves every axis (2x average pooling) and the window must fit inside the coarsest
    scale. Rule, for a candidate window w = kernel_size, kernel_size - 2, ..., min_window:

      * scales n = the largest n <= len(weights) such that the *longest* axis at the coarsest
        scale (size // 2**(n-1)) still holds the full window w, every other axis holds at least
        ``min_window`` there (its own window is then the largest odd size that fits, capped at w:
        an 8-slice axis gets 3 at scale 2), and MONAI's own size guard
        (size // max(1, n-1)**2 > window - 1 on each axis) passes;
      * the first (largest) w that gives n >= min_scales is used. If no window does, the largest
        window that allows one scale is used (MS-SSIM then equals SSIM with that window).

    So the standard 11-px window is kept whenever at least two scales fit with it, and scales
    are dropped before the window is shrunk. Weights are the first n standard weights
    renormalised to sum to 1; sigmas are scaled with the window (1.5 * w / 11).

    Examples (kernel 11): 256 px -> 5 scales; 128 -> 4; 64 -> 3; 32 -> 2; 16 px -> window 7,
    2 scales; 8x64x64 -> windows (3, 11, 11), 2 scales.

    Returns {"kernel_size": tuple, "kernel_sigma": tuple, "scales": n, "weights": tuple}.
    """
    shape = tuple(int(s) for s in spatial_shape)
    if kernel_size % 2 == 0 or min_window % 2 == 0 or not 1 <= min_window <= kernel_size:
        raise ValueError("kernel_size and min_window must be odd, with 1 <= min_window <= kernel_size")
    if not weights:
        raise ValueError("weights must not be empty")
    if min(shape) < min_window:
        raise ValueError(f"every spatial axis must be >= {min_window} for MS-SSIM, got {shape}")
    longest = max(shape)

    def windows(n: int, w: int) -> tuple[int, ...] | None:
        if longest // 2 ** (n - 1) < w:
            return None
        wins = tuple(min(w, _largest_odd(s // 2 ** (n - 1))) for s in shape)
        if min(wins) < min_window:
            return None
        # MONAI's compute_ms_ssim refuses images that fail this (coarser) check.
        if any(s // max(1, n - 1) ** 2 <= k - 1 for s, k in zip(shape, wins)):
            return None
        return wins

    fallback = None
    chosen = None
    for w in range(kernel_size, min_window - 1, -2):
        fits = [(n, wins) for n in range(1, len(weights) + 1) if (wins := windows(n, w)) is not None]
        if not fits:
            continue
        n, wins = fits[-1]
        if fallback is None:
            fallback = (n, wins)
        if n >= min(min_scales, len(weights)):
            chosen = (n, wins)
            break
    n, wins = chosen or fallback or (1, tuple(min(kernel_size, _largest_odd(s)) for s in shape))
    used = np.asarray(weights[:n], dtype=np.float64)
    return {
        "kernel_size": wins,
        "kernel_sigma": _scaled_sigmas(wins, kernel_size, kernel_sigma),
        "scales": n,
        "weights": tuple(float(v) for v in used / used.sum()),
    }


def _monai_per_image(metric: Any, a: np.ndarray, b: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    out = []
    for start in range(0, len(a), batch_size):
        pa = torch.from_numpy(a[start : start + batch_size]).float()
        pb = torch.from_numpy(b[start : start + batch_size]).float()
        out.append(metric(pa, pb).reshape(-1).double().numpy())
    return np.concatenate(out)


def ssim(
    x: Any, y: Any, data_range: float = 1.0, kernel_size: int = 11, kernel_sigma: float = 1.5, batch_size: int = 32
) -> PairedScore:
    """SSIM per pair (MONAI SSIMMetric, Gaussian window adapted per axis by :func:`ssim_settings`)."""
    from monai.metrics import SSIMMetric

    a, b = _pair(x, y)
    settings = ssim_settings(a.shape[2:], kernel_size, kernel_sigma)
    metric = SSIMMetric(
        spatial_dims=a.ndim - 2,
        data_range=data_range,
        win_size=settings["kernel_size"],
        kernel_sigma=settings["kernel_sigma"],
        reduction="none",
    )
    return _score(_monai_per_image(metric, a, b, batch_size), {**settings, "data_range": data_range})


def ms_ssim(
    x: Any,
    y: Any,
    data_range: float = 1.0,
    kernel_size: int = 11,
    kernel_sigma: float = 1.5,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    min_scales: int = 2,
    batch_size: int = 32,
) -> PairedScore:
    """MS-SSIM per pair (MONAI MultiScaleSSIMMetric) with windows/scales from :func:`ms_ssim_settings`.

    ``settings`` of the result holds kernel_size, kernel_sigma, scales and the renormalised weights.
    """
    from monai.metrics import MultiScaleSSIMMetric

    a, b = _pair(x, y)
    settings = ms_ssim_settings(a.shape[2:], kernel_size, kernel_sigma, weights, min_scales=min_scales)
    metric = MultiScaleSSIMMetric(
        spatial_dims=a.ndim - 2,
        data_range=data_range,
        kernel_size=settings["kernel_size"],
        kernel_sigma=settings["kernel_sigma"],
        weights=settings["weights"],
        reduction="none",
    )
    return _score(_monai_per_image(metric, a, b, batch_size), {**settings, "data_range": data_range})


def paired_metrics(x: Any, y: Any, data_range: float = 1.0) -> dict[str, PairedScore]:
    """All paired metrics at once: {"mae", "mse", "psnr", "ssim", "ms_ssim"} -> PairedScore."""
    return {
        "mae": mae(x, y),
        "mse": mse(x, y),
        "psnr": psnr(x, y, data_range),
        "ssim": ssim(x, y, data_range),
        "ms_ssim": ms_ssim(x, y, data_range),
    }


def _sum_sq_pair_distances(x: np.ndarray, y: np.ndarray) -> float:
    """sum over all (i, j) of ||x_i - y_j||^2, from the sums alone (no N x M distance matrix):
    M sum ||x_i||^2 + N sum ||y_j||^2 - 2 <sum x_i, sum y_j>."""
    total = len(y) * np.sum(x * x) + len(x) * np.sum(y * y) - 2.0 * np.dot(x.sum(0), y.sum(0))
    return max(float(total), 0.0)  # rounding can leave a tiny negative for identical images


def mse_all_pairs(real: Any, fake: Any) -> dict:
    """Mean per-pixel squared difference over every (real, generated) pair of images, the unpaired
    "mean MSE" S000 reports for generated against real test images (it falls as generated images get
    smoother or closer to the real mean, so read it beside FID). ``real_baseline``: the same mean
    over pairs of *distinct* real images, the value a generator drawing new real images would get.

    Returns {"mse", "real_baseline" (None with fewer than 2 real images), "n_real", "n_fake"}.
    """
    r = as_numpy(real).astype(np.float64)
    f = as_numpy(fake).astype(np.float64)
    if r.shape[1:] != f.shape[1:]:
        raise ValueError(f"real and generated images differ in shape: {r.shape[1:]} vs {f.shape[1:]}")
    if len(r) == 0 or len(f) == 0:
        raise ValueError("mse_all_pairs needs at least one image on each side")
    r, f = r.reshape(len(r), -1), f.reshape(len(f), -1)
    pixels = r.shape[1]
    out = {"mse": _sum_sq_pair_distances(r, f) / (len(r) * len(f) * pixels), "real_baseline": None,
           "n_real": int(len(r)), "n_fake": int(len(f))}
    if len(r) > 1:  # the i == j terms of the real-real sum are zero; leave them out of the count
        out["real_baseline"] = _sum_sq_pair_distances(r, r) / (len(r) * (len(r) - 1) * pixels)
    return out
