"""Detection and localisation metrics (scikit-learn's ROC/PR functions; Dice and its search are here).

Image level (one score per image, or per volume in 3D): AUROC, AUPRC (average precision, the
anomalous class positive), and at the chosen threshold: the false-positive rate on held-out
normals (does the calibrated threshold keep its target?), sensitivity and precision.

Pixel level (one score per pixel/voxel, ground-truth masks): AUROC and AUPRC over the pooled
pixels of all images (deterministically subsampled above ``max_pixels``), the best Dice over all
thresholds (one global threshold for the whole set, searched exactly over the sorted scores: the
upper bound "[Dice]" of Baur et al. 2021), the Dice at the chosen pixel threshold (pooled, and
averaged over the images with lesion pixels inside the region), and the pixel false-positive rate on normal pixels.
"""
from __future__ import annotations

import numpy as np

from medgen.anomaly.thresholds import subsample


def dice(pred, gt) -> float:
    """2|A n B| / (|A| + |B|); 1.0 when both are empty."""
    a = np.asarray(pred, dtype=bool)
    b = np.asarray(gt, dtype=bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def best_dice(scores, gt) -> tuple[float, float]:
    """(best Dice, its threshold) over every threshold "score > t", searched exactly.

    Sorting the scores once, predicting the top k pixels gives Dice = 2 TP_k / (k + P); only k at
    the boundaries between distinct scores are reachable with a threshold.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(gt, dtype=bool).ravel()
    if len(s) != len(g):
        raise ValueError("scores and ground truth differ in size")
    P = int(g.sum())
    if P == 0 or len(s) == 0:
        return (1.0 if P == 0 else 0.0), float(s.max()) if len(s) else 0.0
    order = np.argsort(-s, kind="stable")
    s_sorted, tp = s[order], np.cumsum(g[order])
    k = np.arange(1, len(s) + 1)
    valid = np.r_[s_sorted[:-1] > s_sorted[1:], True]  # a threshold can fall after position k
    d = np.where(valid, 2.0 * tp / (k + P), -1.0)
    i = int(np.argmax(d))
    thr = (s_sorted[i] + s_sorted[i + 1]) / 2 if i + 1 < len(s) else s_sorted[i] - 1e-12
    return float(d[i]), float(thr)


def _roc_pr(y, s) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return {"auroc": None, "auprc": None}
    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s))}


def image_metrics(scores, anomalous, threshold: float | None = None) -> dict:
    """AUROC/AUPRC of image scores (anomalous = positive) and the operating point at ``threshold``."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(anomalous, dtype=bool)
    out = {"n": int(len(s)), "n_anomalous": int(y.sum()), "n_normal": int((~y).sum()), **_roc_pr(y, s)}
    if threshold is not None:
        pred = s > threshold
        out["threshold"] = float(threshold)
        out["fpr_at_threshold"] = float(pred[~y].mean()) if (~y).any() else None
        out["sensitivity_at_threshold"] = float(pred[y].mean()) if y.any() else None
        out["precision_at_threshold"] = float(y[pred].mean()) if pred.any() else None
        out["accuracy_at_threshold"] = float((pred == y).mean()) if len(y) else None
    return out


def pixel_metrics(maps, masks, threshold: float | None = None, region=None, max_pixels: int = 2_000_000,
                  seed: int = 0) -> dict:
    """Pixel AUROC/AUPRC, best Dice and Dice at ``threshold`` over pooled pixels (optionally only
    those in ``region``, e.g. the brain), with per-image Dice averaged over images with lesion pixels in ``region``."""
    # float64: a float32 cast merges nearby scores on a large offset into ties, which moves AUROC
    m = np.asarray(maps, dtype=np.float64)
    gt = np.asarray(masks) > 0
    if gt.shape != m.shape:
        raise ValueError(f"maps {m.shape} and masks {gt.shape} differ in shape")
    keep = np.ones_like(gt) if region is None else np.asarray(region, dtype=bool)
    sel = np.flatnonzero(keep.ravel())
    n_all = len(sel)
    sel = subsample(sel, max_pixels, seed)
    s, g = m.ravel()[sel], gt.ravel()[sel]
    out = {"pixels": int(n_all), "pixels_used": int(len(sel)), "positive_fraction": float(g.mean()) if len(g) else None,
           **_roc_pr(g, s)}
    out["dice_best"], out["dice_best_threshold"] = best_dice(s, g) if g.any() else (None, None)
    if threshold is not None:
        pred = (m > threshold) & keep
        out["threshold"] = float(threshold)
        out["dice_at_threshold"] = dice(pred[keep], gt[keep])
        # only images with lesion pixels inside the region: a lesion wholly outside it cannot be found there
        has = (gt & keep).reshape(len(gt), -1).any(axis=1)
        per = [dice(pred[i], gt[i] & keep[i]) for i in np.flatnonzero(has)]
        out["dice_at_threshold_mean_per_image"] = float(np.mean(per)) if per else None
        normal_px = keep & ~gt
        out["fpr_at_threshold"] = float(pred[normal_px].mean()) if normal_px.any() else None
        out["sensitivity_at_threshold"] = float(pred[gt & keep].mean()) if (gt & keep).any() else None
    return out
