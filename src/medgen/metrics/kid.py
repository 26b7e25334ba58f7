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
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medgen.metrics._arrays import as_features

__all__ = ["kid", "mmd2_unbiased", "polynomial_kernel"]


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


def kid(
    f_real: Any,
    f_fake: Any,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance between feature matrices (N, F) and (M, F): (mean, std).

    ``subset_size`` is clipped to min(N, M); with subset_size equal to both set sizes every subset
    is the whole set (in a different order), so the std is ~0. Unbiased: can be slightly negative
    when the two distributions are the same.
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
    mmds = np.empty(subsets)
    for i in range(subsets):
        a = x[rng.choice(x.shape[0], size, replace=False)]
        b = y[rng.choice(y.shape[0], size, replace=False)]
        mmds[i] = mmd2_unbiased(
            polynomial_kernel(a, a, degree, gamma, coef0),
            polynomial_kernel(a, b, degree, gamma, coef0),
            polynomial_kernel(b, b, degree, gamma, coef0),
        )
    return float(mmds.mean()), float(mmds.std())
