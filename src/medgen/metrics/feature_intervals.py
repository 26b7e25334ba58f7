"""Bootstrap intervals of the feature-distribution metrics (FID, KID, PRDC) over both image sets.

The features are extracted once; every resample draws rows of the real and of the generated feature
matrices (independently, with replacement) and recomputes the metric. The statistics work on
batches of resamples from quantities computed once (outer products, kernels, sorted distances);
how is described in :mod:`medgen.metrics.resampled_stats`. Resample r draws its rows from its own
seeded generator, so the intervals depend only on the seed; FID, KID and PRDC with one seed see the
same resamples, whether computed together or one by one.

Interval methods: FID and PRDC use the "shifted" percentile interval (see
:mod:`medgen.metrics.intervals`: a resample holds ~63 % distinct images, which inflates the Fréchet
distance and shrinks neighbourhood counts, so the plain percentile interval would lie beside the
value); KID, whose resampled estimate leaves copies out like the unbiased estimator leaves out
i == j, uses the percentile interval.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medgen.metrics._arrays import as_features
from medgen.metrics.frechet import feature_stats, frechet_distance
from medgen.metrics.intervals import bootstrap_ci, bootstrap_distribution, interval_from_resamples
from medgen.metrics.resampled_stats import FIDBootstrap, KIDBootstrap, PRDCBootstrap

__all__ = ["METRIC_NAMES", "AllFeatureMetrics", "FIDBootstrap", "KIDBootstrap", "PRDCBootstrap", "feature_metric_intervals", "fid_ci",
           "fid_statistic", "kid_ci", "one_blas_thread", "prdc_ci"]

METRIC_NAMES = ("fid", "kid", "precision", "recall", "density", "coverage")
SHIFTED = ("fid", "precision", "recall", "density", "coverage")  # biased by resampling with replacement


def fid_statistic(f_real: np.ndarray, f_fake: np.ndarray) -> float:
    mu1, s1 = feature_stats(f_real)
    mu2, s2 = feature_stats(f_fake)
    return frechet_distance(mu1, s1, mu2, s2)


def fid_ci(f_real: Any, f_fake: Any, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
           method: str = "shifted") -> dict:
    """Bootstrap interval of the Fréchet distance between feature matrices (N, F) and (M, F)."""
    x = as_features(f_real, "f_real")
    y = as_features(f_fake, "f_fake")
    if min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("FID needs at least 2 samples in each set")
    with one_blas_thread():
        _, stats, ns = bootstrap_distribution(FIDBootstrap(x, [y]), np.arange(x.shape[0]), np.arange(y.shape[0]),
                                              n_resamples=n_resamples, seed=seed, vectorized=True)
        value = fid_statistic(x, y)  # the reported value by the reference route, as the distribution group's
    out = interval_from_resamples(value, stats[:, 0], level=level, method=method, n=ns, bounds=(0.0, None),
                                  label=f"{method} bootstrap")
    out["seed"] = seed
    return out


def one_blas_thread():
    """Small matrix products and eigen-decompositions, many of them: one BLAS thread is faster
    (measured 0.015 s vs 0.56 s per 128-d FID on two busy cores, where threads spin-wait)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def kid_ci(f_real: Any, f_fake: Any, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
           degree: int = 3, gamma: float | None = None, coef0: float = 1.0, kernels: tuple | None = None) -> dict:
    """Percentile-bootstrap interval of the unbiased MMD^2 (KID) between the whole feature sets.

    The value is the full-set estimate, which equals :func:`medgen.metrics.kid`'s mean when both
    sets have the subset size (every subset is then the whole set). ``kernels``: the whole-set
    kernels (:func:`medgen.metrics.kid.kid_kernels`) when the caller computed them already.
    """
    x = as_features(f_real, "f_real")
    y = as_features(f_fake, "f_fake")
    if min(x.shape[0], y.shape[0]) < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    stat = KIDBootstrap(x, y, degree, gamma, coef0, kernels=kernels)
    with one_blas_thread():
        return bootstrap_ci(stat, np.arange(x.shape[0]), np.arange(y.shape[0]), n_resamples=n_resamples,
                            level=level, seed=seed, vectorized=True)


def prdc_ci(f_real: Any, f_fake: Any, *, k: int = 5, n_resamples: int = 1000, level: float = 0.95,
            seed: int = 0) -> dict[str, dict]:
    """Percentile-bootstrap intervals of precision, recall, density and coverage (one dict each).

    The four metrics are computed on the same resamples; each interval's value is the metric on
    the original sets.
    """
    x = as_features(f_real, "f_real")
    y = as_features(f_fake, "f_fake")
    stat = PRDCBootstrap(x, y, k)
    with one_blas_thread():
        value, stats, ns = bootstrap_distribution(stat, np.arange(x.shape[0]), np.arange(y.shape[0]),
                                                  n_resamples=n_resamples, seed=seed, vectorized=True)
    return {name: {**interval_from_resamples(value[i], stats[:, i], level=level, n=ns, method="shifted",
                                             bounds=(0.0, None if name == "density" else 1.0)), "seed": seed}
            for i, name in enumerate(PRDCBootstrap.NAMES)}


class AllFeatureMetrics:
    """FID, KID, precision, recall, density, coverage of one or more generated sets against one real
    set, on a batch of resamples: called with index batches (real (b, N), generated set 1 (b, M_1),
    ..., set g), it returns an array (b, 6, g) in the order of ``METRIC_NAMES``. The real rows of a
    resample are shared by every set."""

    def __init__(self, real: np.ndarray, generated: list[np.ndarray], k: int = 5):
        self.real, self.generated = real, generated
        self.fid = FIDBootstrap(real, generated)
        self.kid = [KIDBootstrap(real, g) for g in generated]
        self.prdc = [PRDCBootstrap(real, g, k) for g in generated]

    def __call__(self, ir: np.ndarray, *ig: np.ndarray) -> np.ndarray:
        out = np.empty((ir.shape[0], len(METRIC_NAMES), len(ig)))
        out[:, 0] = self.fid(ir, *ig)
        for j, idx in enumerate(ig):
            out[:, 1, j] = self.kid[j](ir, idx)
            out[:, 2:, j] = self.prdc[j](ir, idx)
        return out

    def bootstrap(self, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(value (6, g), resamples (R, 6, g), sizes) over every set at once."""
        with one_blas_thread():
            value, res, ns = bootstrap_distribution(self, np.arange(self.real.shape[0]),
                                                    *[np.arange(g.shape[0]) for g in self.generated],
                                                    n_resamples=n_resamples, seed=seed, vectorized=True)
            value[0] = [fid_statistic(self.real, g) for g in self.generated]  # the reference route, as fid_ci
        return value, res, ns


def feature_metric_intervals(f_real: Any, f_fake: Any, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0,
                             k: int = 5) -> dict[str, dict]:
    """Intervals of all six feature metrics from one bootstrap (the same resamples for each)."""
    x = as_features(f_real, "f_real")
    y = as_features(f_fake, "f_fake")
    value, res, ns = AllFeatureMetrics(x, [y], k).bootstrap(n_resamples, seed)
    bounds = {"fid": (0.0, None), "kid": (None, None), "density": (0.0, None)}
    return {name: {**interval_from_resamples(value[i, 0], res[:, i, 0], level=level, n=ns,
                                             method="shifted" if name in SHIFTED else "percentile",
                                             bounds=bounds.get(name, (0.0, 1.0))), "seed": seed}
            for i, name in enumerate(METRIC_NAMES)}
