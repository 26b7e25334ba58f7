"""Synthetic lesions drawn into NORMAL validation images, to choose detection settings without
looking at a single real (or test) lesion.

A setting (image score, edge margin, diffusion noise levels, ...) is judged by how well its
per-image scores separate the normal validation images from copies of the same images with one
synthetic lesion each (image AUROC): normals only, no test image, no label. The lesions are
irregular ellipses of ``diameter`` (a fraction of the image side; 0.05-0.14 = 3-9 px at 64 px,
the small focal lesions that reconstruction detectors miss), brighter or darker than the tissue
around them by ``contrast`` (of the [0, 1] range), placed in tissue (foreground above its lower
quartile) away from the foreground edge, with a soft rim: the same kind of lesion as in the
graded ``brain-lesions`` tiers, but drawn independently of them (own generator, own seeds).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

DIAMETER = (0.05, 0.14)   # fraction of the image side
CONTRAST = (0.15, 0.35)   # |lesion - local tissue mean|, images in [0, 1]


def add_lesions(images: np.ndarray, seed: int = 0, diameter: tuple[float, float] = DIAMETER,
                contrast: tuple[float, float] = CONTRAST, foreground: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(copies of 2D ``images`` (N, C, H, W) with one lesion each, masks (N, 1, H, W) bool)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"synthetic lesions are drawn into 2D images (N, C, H, W), got shape {images.shape}")
    rng = np.random.default_rng(seed)
    out, masks = images.copy(), np.zeros((len(images), 1, *images.shape[2:]), dtype=bool)
    h, w = images.shape[2:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i, img in enumerate(images):
        grey = img.mean(axis=0)
        r = max(1.0, rng.uniform(*diameter) * min(h, w) / 2)
        fg = ndi.binary_fill_holes(grey > foreground)
        tissue = fg & (grey >= np.quantile(grey[fg], 0.25)) if fg.any() else fg
        inner = tissue & (ndi.distance_transform_edt(fg) >= r + 1.5)
        cand = np.argwhere(inner if inner.any() else (tissue if tissue.any() else np.ones_like(fg)))
        cy, cx = cand[rng.integers(len(cand))] + rng.uniform(-0.5, 0.5, 2)
        aspect, angle = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
        v = (-(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)) / aspect
        weight = np.clip((1 - np.sqrt(u * u + v * v) / r) * r / 0.6 + 0.5, 0, 1)  # soft rim about 1 px wide
        local = float(ndi.gaussian_filter(grey, max(1.0, r))[int(np.clip(cy, 0, h - 1)), int(np.clip(cx, 0, w - 1))])
        delta = rng.uniform(*contrast)
        bright = rng.random() < 0.5 if local + delta <= 1.0 else False
        value = local + delta if bright else max(0.0, local - delta)
        out[i] = img * (1 - weight) + value * weight
        masks[i, 0] = weight > 0.5
    return np.clip(out, 0.0, 1.0), masks
