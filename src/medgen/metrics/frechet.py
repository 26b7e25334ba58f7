"""Fréchet distance between two Gaussians (FID when the features come from Inception).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))

Conventions (same as pytorch-fid / clean-fid):
  * ``feature_stats`` uses the unbiased covariance (``np.cov``, ddof=1), rows are samples.
  * The value is returned as a Python float, computed in float64 whatever the input dtype.
  * The value is not scaled (no x100 or sqrt); it is the squared Fréchet distance.

Why not ``scipy.linalg.sqrtm(S1 @ S2)`` as pytorch-fid does: S1 S2 is not symmetric, its Schur-based
square root is slow for 2048-d features and, when the covariances are singular (fewer samples than
features, which is usual for medical data sets), returns complex or non-finite results that need
ad-hoc patching. Only the *trace* of the square root is needed, and

    Tr sqrtm(S1 S2) = Tr sqrtm(A S2 A),   A = S1^(1/2)  (symmetric PSD square root),

because S1 S2 = A (A S2 A) A^-1 is similar to the symmetric PSD matrix A S2 A (by continuity this
also holds for singular S1). So two symmetric eigen-decompositions (``numpy.linalg.eigh``) give
the answer in real arithmetic: eigenvalues that are negative only through rounding are clipped to
0, so no imaginary parts can arise and singular covariances are handled exactly (the eps -> 0
limit of the pytorch-fid offset). ``method="sqrtm"`` reproduces pytorch-fid step by step,
including its eps*I offset and imaginary-part check, for cross-checking against published numbers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medgen.metrics._arrays import as_features, as_numpy

__all__ = ["feature_stats", "fid_from_features", "frechet_distance"]


def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of a feature matrix (N, F), in float64.

    Needs N >= 2. Images (N, ...) are flattened per sample.
    """
    f = as_features(features)
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root; eigenvalues below rounding level are treated as exact zeros."""
    vals, vecs = np.linalg.eigh(sigma)
    tol = max(vals.max(initial=0.0), 0.0) * sigma.shape[0] * np.finfo(np.float64).eps
    vals = np.where(vals > tol, vals, 0.0)
    return (vecs * np.sqrt(vals)) @ vecs.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrtm(S1 S2) via the symmetric similar matrix S1^(1/2) S2 S1^(1/2)."""
    a = _psd_sqrt(sigma1)
    m = a @ sigma2 @ a
    m = (m + m.T) / 2  # remove the rounding asymmetry so that eigvalsh sees a symmetric matrix
    vals = np.linalg.eigvalsh(m)
    tol = max(vals.max(initial=0.0), 0.0) * m.shape[0] * np.finfo(np.float64).eps
    return float(np.sqrt(np.where(vals > tol, vals, 0.0)).sum())


def _trace_sqrt_product_scipy(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """pytorch-fid's computation: sqrtm of the product, eps*I offset if not finite, drop imag."""
    from scipy import linalg

    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if isinstance(covmean, tuple):  # older scipy with disp=False semantics
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6, method: str = "eigh"
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``method="eigh"`` (default): real, symmetric eigen-decomposition route (see module docstring);
    finite for any finite PSD input, singular included. If it still produced a non-finite value
    (overflowing inputs), it is retried with ``eps * I`` added to both covariances, as pytorch-fid
    does. ``method="sqrtm"``: pytorch-fid's own ``scipy.linalg.sqrtm`` computation.

    The result is clipped at 0: the distance is non-negative and only rounding can make it
    slightly negative (e.g. identical statistics).
    """
    mu1 = np.atleast_1d(as_numpy(mu1, np.float64))
    mu2 = np.atleast_1d(as_numpy(mu2, np.float64))
    sigma1 = np.atleast_2d(as_numpy(sigma1, np.float64))
    sigma2 = np.atleast_2d(as_numpy(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}); got {sigma1.shape} and {sigma2.shape}")
    if method not in ("eigh", "sqrtm"):
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")

    diff = mu1 - mu2
    if method == "sqrtm":
        tr_covmean = _trace_sqrt_product_scipy(sigma1, sigma2, eps)
    else:
        # Covariances from np.cov are symmetric up to rounding; eigh reads one triangle only.
        s1 = (sigma1 + sigma1.T) / 2
        s2 = (sigma2 + sigma2.T) / 2
        tr_covmean = _trace_sqrt_product(s1, s2)
        if not np.isfinite(tr_covmean):
            offset = np.eye(d) * eps
            tr_covmean = _trace_sqrt_product(s1 + offset, s2 + offset)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def fid_from_features(f_real: Any, f_fake: Any, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussian fits of two feature matrices (N, F) and (M, F)."""
    mu1, s1 = feature_stats(f_real)
    mu2, s2 = feature_stats(f_fake)
    return frechet_distance(mu1, s1, mu2, s2, eps=eps)
