"""Precision, recall, density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity
Metrics for Generative Models"), with the definitions of the reference ``prdc`` package.

With r_k(x) the distance from a sample to its k-th nearest neighbour *within its own set*
(the sample itself excluded), B(x, r) the open ball, real X (N) and fake Y (M):

  precision = 1/M sum_j 1[ exists i: Y_j in B(X_i, r_k(X_i)) ]   fake inside the real manifold
  recall    = 1/N sum_i 1[ exists j: X_i in B(Y_j, r_k(Y_j)) ]   real inside the fake manifold
  density   = 1/(kM) sum_j sum_i 1[ Y_j in B(X_i, r_k(X_i)) ]    can exceed 1
  coverage  = 1/N sum_i 1[ exists j: Y_j in B(X_i, r_k(X_i)) ]

Balls are open (strict ``<``) as in the package, so a duplicated real sample whose k-th
neighbour distance is 0 contains nothing. Distances are Euclidean, computed with
``sklearn.metrics.pairwise_distances`` like the package, but in row chunks so that neither the
N x N nor the N x M matrix is held at once (the package materialises both).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medgen.metrics._arrays import as_features

__all__ = ["knn_radii", "prdc"]


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest *other* row (the (k+1)-th smallest, self = 0)."""
    from sklearn.metrics import pairwise_distances_chunked

    if not 1 <= k < features.shape[0]:
        raise ValueError(f"k must be in [1, {features.shape[0] - 1}] for {features.shape[0]} samples, got {k}")
    chunks = pairwise_distances_chunked(
        features, reduce_func=lambda d, start: np.partition(d, k, axis=1)[:, k]
    )
    return np.concatenate(list(chunks))


def prdc(f_real: Any, f_fake: Any, k: int = 5, chunk_size: int = 1024) -> dict[str, float]:
    """Precision, recall, density, coverage of fake features (M, F) against real (N, F).

    Returns a dict with float values under "precision", "recall", "density", "coverage".
    """
    from sklearn.metrics import pairwise_distances

    real = as_features(f_real, "f_real")
    fake = as_features(f_fake, "f_fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    r_real = knn_radii(real, k)
    r_fake = knn_radii(fake, k)

    fake_in_real = np.zeros(fake.shape[0], dtype=bool)  # precision
    fake_ball_count = np.zeros(fake.shape[0], dtype=np.int64)  # density
    real_in_fake = np.zeros(real.shape[0], dtype=bool)  # recall
    real_min_to_fake = np.full(real.shape[0], np.inf)  # coverage
    for start in range(0, fake.shape[0], chunk_size):
        stop = min(start + chunk_size, fake.shape[0])
        d = pairwise_distances(real, fake[start:stop])  # (N, chunk)
        inside_real_ball = d < r_real[:, None]
        fake_in_real[start:stop] = inside_real_ball.any(axis=0)
        fake_ball_count[start:stop] = inside_real_ball.sum(axis=0)
        real_in_fake |= (d < r_fake[None, start:stop]).any(axis=1)
        np.minimum(real_min_to_fake, d.min(axis=1), out=real_min_to_fake)
    return {
        "precision": float(fake_in_real.mean()),
        "recall": float(real_in_fake.mean()),
        "density": float(fake_ball_count.mean() / k),
        "coverage": float((real_min_to_fake < r_real).mean()),
    }
