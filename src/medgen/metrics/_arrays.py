"""Input coercion shared by the metric modules.

Every public metric accepts numpy arrays or torch tensors; these helpers turn either into numpy
without importing torch (a tensor is recognised by its ``detach`` method), so that
``import medgen.metrics`` stays cheap.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor, or array-like) as a numpy array of ``dtype``."""
    if hasattr(x, "detach"):  # torch.Tensor, also on GPU
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return arr.astype(dtype, copy=False) if dtype is not None else arr


def as_features(x: Any, name: str = "features", dtype: Any = np.float64) -> np.ndarray:
    """Return a 2-D (N, F) array; images (N, ...) are flattened per sample."""
    arr = as_numpy(x, dtype)
    if arr.ndim == 1:
        raise ValueError(f"{name} must be (N, F) or a batch of images (N, ...); got shape {arr.shape}")
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr
