"""Synthetic lesions drawn into NORMAL validation images, to choose detection settings without
looking at a single real (or test) lesion.

A setting (image score, edge margin, diffusion noise levels, ...) is judged by how well its
per-image scores separate the normal validation images from copies of the same images with one
synthetic lesion each (image AUROC): normals only, no test image, no label. The lesions are
irregular ellipses of ``diameter`` (a fraction of the image side; 0.05-0.14 = 3-9 px at 64 px,
the small focal lesions that reconstruction detectors miss), brighter or darker than the tissue
around them by ``contrast`` (of the [0, 1] range), placed in tissue (foreground above its lower
quartile) away from the foreground edge, with a soft rim: drawn by the same function as the graded
``brain-lesions`` tiers (:func:`medgen.data.builtin.lesions.focal_lesion`), with the tissue found
from each image instead of the MNI152 thresholds, and with its own seeds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from medgen.data.builtin.lesions import focal_lesion

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
    radius = (diameter[0] / 2, diameter[1] / 2)
    for i, img in enumerate(images):
        grey = img.mean(axis=0)
        fg = ndi.binary_fill_holes(grey > foreground)
        tissue = fg & (grey >= np.quantile(grey[fg], 0.25)) if fg.any() else np.ones_like(fg)
        lesioned, weight, _ = focal_lesion(rng, grey, float(min(grey.shape)), radius, contrast,
                                           brain=fg if fg.any() else np.ones_like(fg), tissue=tissue)
        # every channel keeps its own tissue outside the lesion and gets the lesion's values inside it
        out[i] = img * (1 - weight) + (lesioned - grey * (1 - weight))
        masks[i, 0] = weight > 0.5
    return np.clip(out, 0.0, 1.0), masks
