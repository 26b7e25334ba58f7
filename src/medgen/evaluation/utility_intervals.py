"""Intervals of the utility table's scores over seeds and test images.

A score in the utility table varies with two things: which real test images happened to be in
the test split, and which seed trained the classifier. The interval resamples both at once from
the stored per-seed predictions (no classifier is trained again): each bootstrap draw takes the
test images with replacement within each true class (so every class keeps its count and the
macro averages stay defined) and the seeds with replacement, scores every drawn seed's
predictions on the drawn images and averages over the drawn seeds. With one seed it is a
bootstrap over test images only; the record says so through ``n_seeds``.

The scores are computed from confusion counts with numpy (the same definitions as the table's
scikit-learn scores: macro averages over every class, 0 where a ratio is 0 / 0) because a
thousand resamples of scikit-learn calls per set would cost more than the training.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from medgen.metrics.intervals import bootstrap_distribution, interval_from_resamples

__all__ = ["METHOD", "confusion_scores", "score_intervals"]

METHOD = "percentile bootstrap over test images (stratified by class) and seeds"


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def confusion_scores(y_true: np.ndarray, preds: np.ndarray, k: int, metrics: Sequence[str]) -> np.ndarray:
    """(seeds, metrics) scores of each row of ``preds`` (seeds, n) against ``y_true`` (n,).

    Metrics: ``accuracy``, ``{precision,recall,f1}_{micro,macro}`` (micro ones equal the accuracy
    for single-label classification).
    """
    s = preds.shape[0]
    codes = (np.arange(s)[:, None] * k + y_true[None, :]) * k + preds
    cm = np.bincount(codes.ravel(), minlength=s * k * k).reshape(s, k, k).astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    accuracy = tp.sum(1) / max(len(y_true), 1)
    macro = {"precision_macro": _ratio(tp, predicted).mean(1), "recall_macro": _ratio(tp, support).mean(1),
             "f1_macro": _ratio(2 * tp, support + predicted).mean(1)}
    return np.stack([accuracy if m in ("accuracy", "precision_micro", "recall_micro", "f1_micro") else macro[m]
                     for m in metrics], axis=1)


def score_intervals(y_true: np.ndarray, preds: np.ndarray, k: int, metrics: Sequence[str], *,
                    n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """{metric: interval dict} of the seed-averaged scores of ``preds`` (seeds, n) against ``y_true`` (n,).

    Each interval is a :mod:`medgen.metrics.intervals` dict with ``n`` = the number of images,
    ``n_seeds`` and the bootstrap ``seed``; its value is the mean score over the seeds.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(preds, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != len(y):
        raise ValueError(f"preds must be (seeds, {len(y)}), got {p.shape}")

    def statistic(images: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        return confusion_scores(y[images], p[seeds][:, images], k, metrics).mean(0)

    value, stats, _ = bootstrap_distribution(statistic, np.arange(len(y)), np.arange(p.shape[0]),
                                             n_resamples=n_resamples, seed=seed, strata=[y, None])
    return {m: {**interval_from_resamples(value[i], stats[:, i], level=level, n=int(len(y)), bounds=(0.0, 1.0),
                                          label=METHOD), "n_seeds": int(p.shape[0]), "seed": seed}
            for i, m in enumerate(metrics)}
