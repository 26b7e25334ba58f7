"""Classical augmentation: the baseline a synthetic-data claim must beat.

What a reviewer means by "classical augmentation" of a scarce class, with MONAI's random
transforms (2-D and 3-D alike): flips along every spatial axis, an affine (rotation up to 15
degrees, scaling +-10 %, shift up to 5 % of the size), an elastic deformation, and intensity changes
(gamma 0.8-1.25, scaling +-10 %, a little Gaussian noise). Every output image is one random draw of
the whole chain applied to one source image (sources taken in turn), deterministic from the seed.
"""
from __future__ import annotations

import numpy as np

__all__ = ["classical_augment", "classical_transforms"]


def classical_transforms(spatial_dims: int, size: tuple[int, ...]):
    """The MONAI chain for channel-first images of ``size`` (spatial)."""
    from monai.transforms import (
        Compose,
        Rand2DElastic,
        Rand3DElastic,
        RandAdjustContrast,
        RandAffine,
        RandFlip,
        RandGaussianNoise,
        RandScaleIntensity,
    )

    flips = [RandFlip(prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    shift = [0.05 * s for s in size]
    rotate = (np.pi / 12,) if spatial_dims == 2 else (np.pi / 12,) * 3
    affine = RandAffine(prob=0.8, rotate_range=rotate, scale_range=(0.1,) * spatial_dims, translate_range=shift,
                        padding_mode="reflection")
    if spatial_dims == 2:
        spacing = max(4, min(size) // 4)  # control points every quarter of the image
        elastic = Rand2DElastic(spacing=(spacing, spacing), magnitude_range=(0.5, 1.5), prob=0.5, padding_mode="reflection")
    else:
        elastic = Rand3DElastic(sigma_range=(4, 6), magnitude_range=(10, 40), prob=0.5, padding_mode="reflection")
    intensity = [RandAdjustContrast(prob=0.5, gamma=(0.8, 1.25)), RandScaleIntensity(factors=0.1, prob=0.5),
                 RandGaussianNoise(prob=0.3, std=0.01)]
    return Compose([*flips, affine, elastic, *intensity])


def classical_augment(images: np.ndarray, n_out: int, seed: int = 0) -> np.ndarray:
    """``n_out`` augmented images (n_out, C, *spatial) from ``images`` (N, C, *spatial) in [0, 1]."""
    import torch

    x = np.asarray(images, dtype=np.float32)
    if x.ndim not in (4, 5) or len(x) == 0:
        raise ValueError(f"need a non-empty batch (N, C, H, W) or (N, C, D, H, W), got shape {x.shape}")
    chain = classical_transforms(x.ndim - 2, tuple(x.shape[2:]))
    chain.set_random_state(seed=seed)
    out = np.empty((n_out, *x.shape[1:]), dtype=np.float32)
    with torch.no_grad():
        for i in range(n_out):
            y = chain(torch.from_numpy(x[i % len(x)].copy()))
            out[i] = np.clip(np.asarray(y.detach().cpu() if hasattr(y, "detach") else y), 0.0, 1.0)
    return out
