"""Per-pixel anomaly maps and per-image anomaly scores.

Everything takes arrays shaped (N, C, *spatial), 2D or 3D alike (a 3D volume is one "image":
its score is per volume).

Maps (:func:`anomaly_map`), channel-averaged to (N, 1, *spatial):
- ``abs``: |x - x_hat| (S003's error map);
- ``ssim``: (1 - SSIM(x, x_hat)) / 2 per pixel, local SSIM with a Gaussian window (``window``
  pixels, sigma scaled like the standard 11 / 1.5) computed here with reflection padding so the
  map has the image's size (MONAI's ``compute_ssim_and_cs`` gives the same values on the valid
  part but crops the border);
- ``combined``: the mean of the two (both lie in [0, 1]).
Post-processing: optional Gaussian smoothing (``smooth`` = sigma in pixels, spatial axes only) and an
optional foreground mask: pixels where the input is above ``foreground`` (the background of
skull-stripped MRI is black, and reconstructions are least sure at the brain edge), with holes
filled; map values outside it are set to 0 and image scores use only foreground pixels.

Scores (:func:`image_scores`): ``mean``, ``max`` or ``top-percentile`` (the mean of the top
``top_percent`` % of foreground pixels; a robust "max"). :func:`scoring_region` leaves a rim of
``edge_margin`` pixels inside the foreground edge out of the image score: at the brain outline the
maps of NORMAL images are highest (misalignment, partial volume, the model's blur), and one such
pixel can outrank a small lesion inside the brain.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAP_TYPES = ("abs", "ssim", "combined")
SCORE_TYPES = ("mean", "max", "top-percentile")


def _gaussian_1d(window: int, sigma: float) -> torch.Tensor:
    r = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter over the spatial axes of (N, C, *spatial), reflection-padded."""
    dims = x.dim() - 2
    g = _gaussian_1d(window, sigma).to(x)
    c = x.shape[1]
    conv = F.conv2d if dims == 2 else F.conv3d
    pad = window // 2
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = window
        k = g.view(1, 1, *shape).repeat(c, 1, *[1] * dims)
        p = [0, 0] * dims
        p[2 * (dims - 1 - axis)] = p[2 * (dims - 1 - axis) + 1] = pad
        x = conv(F.pad(x, p, mode="reflect" if x.shape[2 + axis] > pad else "replicate"), k, groups=c)
    return x


def ssim_map(x, y, window: int = 7, data_range: float = 1.0, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Local SSIM per pixel (N, C, *spatial) with a Gaussian window (Wang et al. 2004)."""
    a = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(y), dtype=torch.float32)
    window = min(window, *[s if s % 2 else s - 1 for s in a.shape[2:]])
    window = max(window, 1)
    sigma = 1.5 * window / 11
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = _blur(a, window, sigma), _blur(b, window, sigma)
    saa = _blur(a * a, window, sigma) - mu_a ** 2
    sbb = _blur(b * b, window, sigma) - mu_b ** 2
    sab = _blur(a * b, window, sigma) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return s.numpy()


def error_map(x, x_hat, kind: str = "abs", window: int = 7) -> np.ndarray:
    """Raw per-pixel map (N, 1, *spatial) before smoothing/masking."""
    x = np.asarray(x, dtype=np.float32)
    x_hat = np.asarray(x_hat, dtype=np.float32)
    if x.shape != x_hat.shape:
        raise ValueError(f"image and reconstruction differ in shape: {x.shape} vs {x_hat.shape}")
    if kind not in MAP_TYPES:
        raise ValueError(f"unknown map type '{kind}'; choose one of {', '.join(MAP_TYPES)}")
    out = np.zeros((x.shape[0], 1, *x.shape[2:]), dtype=np.float32)
    if kind in ("abs", "combined"):
        out += np.abs(x - x_hat).mean(axis=1, keepdims=True)
    if kind in ("ssim", "combined"):
        d = np.clip((1.0 - ssim_map(x, x_hat, window)) / 2.0, 0.0, 1.0).mean(axis=1, keepdims=True)
        out += d
    if kind == "combined":
        out /= 2.0
    return out


def smooth_map(m: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of (N, 1, *spatial) maps over the spatial axes (sigma in pixels; 0 = off)."""
    if not sigma or sigma <= 0:
        return m
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(np.asarray(m, dtype=np.float32), sigma=(0, 0, *[sigma] * (m.ndim - 2)), mode="nearest")


def foreground_mask(x, threshold: float | None) -> np.ndarray | None:
    """(N, 1, *spatial) bool: input above ``threshold`` in any channel, holes filled; None when off."""
    if threshold is None:
        return None
    from scipy import ndimage as ndi

    fg = (np.asarray(x) > threshold).any(axis=1)
    out = np.empty_like(fg)
    for i in range(len(fg)):
        out[i] = ndi.binary_fill_holes(fg[i])
    return out[:, None]


def postprocess(raw: np.ndarray, x, smooth: float = 0.0, foreground: float | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """(maps (N, 1, *spatial) float32, foreground mask or None): a raw map smoothed, then masked to
    the foreground of the input ``x``."""
    m = smooth_map(np.asarray(raw, dtype=np.float32), smooth)
    fg = foreground_mask(x, foreground)
    if fg is not None:
        m = np.where(fg, m, 0.0).astype(np.float32)
    return m, fg


def anomaly_map(x, x_hat, kind: str = "abs", smooth: float = 0.0, foreground: float | None = None,
                window: int = 7) -> tuple[np.ndarray, np.ndarray | None]:
    """(maps (N, 1, *spatial) float32, foreground mask or None): error map, smoothed, masked."""
    return postprocess(error_map(x, x_hat, kind, window), x, smooth, foreground)


def scoring_region(fg: np.ndarray | None, edge_margin: float = 0.0) -> np.ndarray | None:
    """The foreground (N, 1, *spatial) without its outer rim: pixels farther than ``edge_margin``
    pixels from the background. An image whose region would vanish keeps its whole foreground."""
    if fg is None or not edge_margin or edge_margin <= 0:
        return fg
    from scipy import ndimage as ndi

    out = np.empty_like(fg)
    for i in range(len(fg)):
        inner = ndi.distance_transform_edt(fg[i, 0]) > edge_margin
        out[i, 0] = inner if inner.any() else fg[i, 0]
    return out


def image_scores(maps: np.ndarray, how: str = "top-percentile", top_percent: float = 1.0,
                 foreground: np.ndarray | None = None) -> np.ndarray:
    """One score per image from its map: mean, max, or mean of the top ``top_percent`` % pixels."""
    if how not in SCORE_TYPES:
        raise ValueError(f"unknown score '{how}'; choose one of {', '.join(SCORE_TYPES)}")
    if not 0 < top_percent <= 100:
        raise ValueError(f"top_percent must be in (0, 100], got {top_percent}")
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    fgf = None if foreground is None else np.asarray(foreground, dtype=bool).reshape(len(maps), -1)
    out = np.zeros(len(flat))
    for i, row in enumerate(flat):
        v = row if fgf is None or not fgf[i].any() else row[fgf[i]]
        if how == "mean":
            out[i] = v.mean()
        elif how == "max":
            out[i] = v.max()
        else:
            k = max(1, int(np.ceil(len(v) * top_percent / 100.0)))
            out[i] = np.partition(v, len(v) - k)[len(v) - k:].mean()
    return out
