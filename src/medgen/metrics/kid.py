"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs").

KID is the unbiased estimate of the squared MMD between two feature sets under the polynomial
kernel k(x, y) = (gamma * x.y + coef0) ** degree, gamma = 1 / F by default (so (x.y/F + 1)^3),
averaged over random subsets. This follows torch-fidelity's ``kid_features_to_metric``:

  * subsets are drawn with ``numpy.random.RandomState(seed).choice(n, size, replace=False)``,
    first from the real set then from the fake set, subset after subset; with the same seed and
    features the subsets (hence the numbers) are the same as torch-fidelity's (whose default
    seed is 2020; ours is 0);
  * the estimator is the "unbiased" one: within-set kernel sums exclude the diagonal, the
    cross-set sum includes it;
  * the second number returned is ``np.std`` (ddof=0) of the per-subset values. torch-fidelity
    reports it as ``kernel_inception_distance_std``; it is the spread of the subset estimates,
    not a standard error of the mean.

Difference from torch-fidelity: when a set has fewer samples than ``subset_size`` we clip the
subset size to the smaller set (torch-fidelity raises). The kernel is one matrix product, written
here directly (sklearn's ``polynomial_kernel`` computes the same) so all sums stay in float64.

When the three whole-set kernels are small enough (``FULL_KERNEL_ELEMENTS``), they are computed once
and every subset's sums are read from them (indicator vectors times the kernels) instead of
recomputing three subset kernels per subset: same subsets, same estimator, sums in another order.
With 999 and 1,001 images and 100 subsets of 999 that is 3 kernel products instead of 300
(measured on the features of ``bench/bench_intervals.py``'s evaluation, one thread, the other core
busy: 3.5 s -> 0.12 s of CPU for the 128-d domain features, 3.8 s -> 0.08 s for the 26-d texture
features; same values to 1e-12). ``kid_kernels`` gives those kernels to a caller that needs them
too (the KID interval).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medgen.metrics._arrays import as_features

__all__ = ["FULL_KERNEL_ELEMENTS", "kid", "kid_kernels", "mmd2_unbiased", "polynomial_kernel"]

FULL_KERNEL_ELEMENTS = 3 * 3000 * 3000  # whole-set kernels up to ~216 MB of float64 are computed once


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """(gamma * x @ y.T + coef0) ** degree, gamma defaulting to 1 / n_features."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel matrices of two equally sized sets of m samples.

    MMD^2 = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1))
            - 2 sum_{i,j} k(x_i,y_j) / m^2
    """
    m = k_xx.shape[0]
    if m < 2 or k_yy.shape[0] != m or k_xy.shape != (m, m):
        raise ValueError("need two sets of the same size m >= 2")
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid_kernels(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
                bounded: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(K_xx, K_xy, K_yy) of the whole sets; with ``bounded``, None when they would hold more than
    ``FULL_KERNEL_ELEMENTS`` elements."""
    n, m = x.shape[0], y.shape[0]
    if bounded and n * n + n * m + m * m > FULL_KERNEL_ELEMENTS:
        return None
    return (polynomial_kernel(x, x, degree, gamma, coef0), polynomial_kernel(x, y, degree, gamma, coef0),
            polynomial_kernel(y, y, degree, gamma, coef0))


def kid(
    f_real: Any,
    f_fake: Any,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
    kernels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance between feature matrices (N, F) and (M, F): (mean, std).

    ``subset_size`` is clipped to min(N, M); with subset_size equal to both set sizes every subset
    is the whole set (in a different order), so the std is ~0. Unbiased: can be slightly negative
    when the two distributions are the same. ``kernels``: the whole-set kernels from
    :func:`kid_kernels` with the same kernel settings, when the caller has them already.
    """
    x = as_features(f_real, "f_real")
    y = as_features(f_fake, "f_fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    if subsets < 1:
        raise ValueError("subsets must be >= 1")
    rng = np.random.RandomState(seed)
    draws = []
    for _ in range(subsets):  # the reference's order: real, then fake, subset after subset
        a = rng.choice(x.shape[0], size, replace=False)
        draws.append((a, rng.choice(y.shape[0], size, replace=False)))
    if kernels is None and subsets > 1:
        kernels = kid_kernels(x, y, degree, gamma, coef0)
    if kernels is not None:
        mmds = _subset_mmds(kernels, draws, size)
    else:
        mmds = np.array([mmd2_unbiased(polynomial_kernel(x[a], x[a], degree, gamma, coef0),
                                       polynomial_kernel(x[a], y[b], degree, gamma, coef0),
                                       polynomial_kernel(y[b], y[b], degree, gamma, coef0)) for a, b in draws])
    return float(mmds.mean()), float(mmds.std())


def _subset_mmds(kernels: tuple[np.ndarray, np.ndarray, np.ndarray], draws: list, m: int) -> np.ndarray:
    """mmd2_unbiased of every subset pair (a, b) read from the whole-set kernels: with indicator rows
    U_a, U_b, the sum over a x a of K_xx is the row sum of (U_a K_xx) * U_a (and so on)."""
    kxx, kxy, kyy = kernels
    ua = np.zeros((len(draws), kxx.shape[0]))
    ub = np.zeros((len(draws), kyy.shape[0]))
    for i, (a, b) in enumerate(draws):
        ua[i, a] = 1.0
        ub[i, b] = 1.0
    sum_xx = np.einsum("si,si->s", ua @ kxx, ua) - ua @ np.diag(kxx)
    sum_yy = np.einsum("si,si->s", ub @ kyy, ub) - ub @ np.diag(kyy)
    sum_xy = np.einsum("si,si->s", ua @ kxy, ub)
    return (sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * sum_xy / (m * m)
