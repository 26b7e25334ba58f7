"""95 % intervals of detect's numbers (medgen.metrics.intervals; no bootstrap of its own).

Image AUROC/AUPRC: bootstrap over images, stratified by class (every resample keeps the counts
of anomalous and normal images). Pixel AUROC and best Dice inside the region: the same bootstrap
over IMAGES (a lesion's pixels are not independent), fewer resamples since each recomputes the
pooled statistic. Held-out false-positive rate: exact binomial over the normal input images.
"""
from __future__ import annotations

import numpy as np

IMAGE_RESAMPLES = 1000
PIXEL_RESAMPLES = 200


def image_intervals(scores, truth, threshold: float | None, seed: int = 0) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from medgen.metrics.intervals import binomial_ci, bootstrap_ci

    s, y = np.asarray(scores, np.float64), np.asarray(truth, bool)
    out: dict = {}
    if y.all() or not y.any():
        return out
    for key, fn in (("auroc", roc_auc_score), ("auprc", average_precision_score)):
        out[f"{key}_interval"] = bootstrap_ci(lambda i: fn(y[i], s[i]), np.arange(len(s)), strata=y,
                                              n_resamples=IMAGE_RESAMPLES, seed=seed, bounds=(0, 1))
    if threshold is not None:
        out["fpr_at_threshold_interval"] = binomial_ci(int((s[~y] > threshold).sum()), int((~y).sum()))
    return out


def pixel_intervals(maps, masks, region, truth, seed: int = 0) -> dict:
    from sklearn.metrics import roc_auc_score

    from medgen.anomaly.evaluation import best_dice
    from medgen.metrics.intervals import bootstrap_ci

    m = np.asarray(maps, np.float64).reshape(len(maps), -1)
    g = (np.asarray(masks) > 0).reshape(len(maps), -1)
    keep = np.ones_like(g) if region is None else np.asarray(region, bool).reshape(len(maps), -1)
    y = np.asarray(truth, bool)

    def pooled(i, fn):
        gi, si = g[i][keep[i]], m[i][keep[i]]
        return fn(gi, si) if gi.any() and not gi.all() else float("nan")

    out = {}
    for key, fn in (("auroc", roc_auc_score), ("dice_best", lambda gi, si: best_dice(si, gi)[0])):
        out[f"{key}_interval"] = bootstrap_ci(lambda i, fn=fn: pooled(i, fn), np.arange(len(m)), strata=y,
                                              n_resamples=PIXEL_RESAMPLES, seed=seed, bounds=(0, 1))
    return out
