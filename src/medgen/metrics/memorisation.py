"""Memorisation / privacy audit: are synthetic samples near-copies of training samples?

A synthetic sample is compared with its nearest training sample. "Near" is calibrated on held-out
real data: the distances from *test* samples (real, never trained on) to their nearest training
sample show how close an independent draw from the data distribution typically comes to the
training set. A synthetic sample closer to the training set than all but a small fraction
(``quantile``) of test samples is flagged as a potential copy.

Flag rules (``rule``), thresholds estimated on the test-to-train distances with q = ``quantile``:

* ``"distance"`` (default): d1(s) <= Q_q(d1(test)), d1 = distance to the nearest training sample.
* ``"ratio"``: d1/d2 (s) <= Q_q(d1/d2 (test)), d2 = distance to the second-nearest training
  sample. A copy of one training image is much closer to it than to any other one (ratio ~ 0),
  while an independent sample sits about as far from its first and second neighbours (ratio
  near 1 in high dimensions). The ratio is scale-free, so it is less sensitive to regions of the
  data space that are simply denser; it misses copies of training images that themselves have
  near-duplicates (adjacent slices of one volume), which the distance rule still catches.
* ``"either"`` / ``"both"``: the union / intersection of the two.

For an independent generator the expected flagged fraction is about q for "distance" and
"ratio" (by construction); ``expected_fraction`` reports the same rule applied to the test set
itself and ``binomial_pvalue`` the chance of at least the observed number of flags at that rate.
q = 0.01 (default) to 0.05 are sensible; smaller q needs a larger test set (at least ~10 / q
test samples for a stable quantile). The test set must be disjoint from the training set (and
patient-disjoint: slices of one patient in both sets make the baseline look like copying).

The space is whatever the caller passes (flattened pixels, or features of an encoder);
``space_name`` is only recorded in the result. Distances are Euclidean or cosine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.metrics._arrays import as_features, as_numpy
from medgen.metrics.intervals import binomial_ci

__all__ = ["closest_pairs_figure", "memorisation_audit", "nearest_neighbours"]

_RULES = ("distance", "ratio", "either", "both")


def nearest_neighbours(
    query: Any, reference: Any, metric: str = "euclidean", k: int = 1, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest reference rows of each query row: (distances (Nq, k), indices (Nq, k)).

    Inputs are (N, F) features or image batches (flattened per sample). Always 2-D outputs,
    sorted by increasing distance. ``metric="cosine"`` gives 1 - cos(angle) (an all-zero vector
    has distance 1 to everything). Queries are processed ``batch`` rows at a time against the
    whole reference with ``torch.cdist`` in float64 (matrix-product form); the k + 4 best
    candidates of each row are then re-measured exactly (x - y directly), so distances of exact
    copies come out as 0 rather than as rounding noise.
    """
    import torch

    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    q = as_features(query, "query")
    ref = as_features(reference, "reference")
    if q.shape[1] != ref.shape[1]:
        raise ValueError(f"sizes differ: query has {q.shape[1]} values per sample, reference {ref.shape[1]}")
    if not 1 <= k <= ref.shape[0]:
        raise ValueError(f"k must be in [1, {ref.shape[0]}], got {k}")
    if metric == "cosine":
        # Cosine distance = |u - v|^2 / 2 for unit vectors, so search Euclidean on unit vectors.
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
        ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-300)
    ref_t = torch.from_numpy(ref)
    n_cand = min(ref.shape[0], k + 4)
    dist = np.empty((q.shape[0], k))
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], batch):
        qb = q[start : start + batch]
        approx = torch.cdist(torch.from_numpy(qb), ref_t, compute_mode="use_mm_for_euclid_dist")
        cand = torch.topk(approx, n_cand, dim=1, largest=False).indices.numpy()
        exact = np.stack([np.linalg.norm(qb - ref[cand[:, j]], axis=1) for j in range(n_cand)], axis=1)
        order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        dist[start : start + len(qb)] = np.take_along_axis(exact, order, axis=1)
        idx[start : start + len(qb)] = np.take_along_axis(cand, order, axis=1)
    if metric == "cosine":
        dist = dist**2 / 2.0
    return dist, idx


def _summary(d: np.ndarray) -> dict[str, float]:
    qs = np.quantile(d, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "min": float(d.min()),
        "q01": float(qs[0]),
        "q05": float(qs[1]),
        "q25": float(qs[2]),
        "median": float(qs[3]),
        "q75": float(qs[4]),
        "q95": float(qs[5]),
        "max": float(d.max()),
        "mean": float(d.mean()),
    }


def _ratio(d: np.ndarray) -> np.ndarray:
    # d1 <= d2, so d2 == 0 means an exact duplicate: ratio 0 (most suspicious).
    if d.shape[1] < 2:
        return np.zeros(d.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d[:, 1] > 0, d[:, 0] / d[:, 1], 0.0)


def _flags(d1: np.ndarray, ratio: np.ndarray, t_dist: float, t_ratio: float, rule: str) -> np.ndarray:
    by_distance = d1 <= t_dist
    by_ratio = ratio <= t_ratio
    return {
        "distance": by_distance,
        "ratio": by_ratio,
        "either": by_distance | by_ratio,
        "both": by_distance & by_ratio,
    }[rule]


def memorisation_audit(
    synthetic: Any,
    train: Any,
    test: Any,
    space_name: str = "pixels",
    quantile: float = 0.01,
    rule: str = "distance",
    metric: str = "euclidean",
    top_k: int = 16,
    batch: int = 256,
) -> dict:
    """Flag synthetic samples that are closer to the training set than held-out real data is.

    See the module docstring for the rules. Returns a dict with:
      space, metric, rule, rule_description, quantile, threshold (distance), ratio_threshold,
      n_synthetic, n_train, n_test, n_flagged, fraction_flagged, fraction_flagged_distance,
      fraction_flagged_ratio, expected_fraction (the rule applied to the test set),
      binomial_pvalue, fraction_flagged_ci (exact binomial interval), baseline_test (the flagged
      fractions of synthetic and of held-out real images compared, the baseline's own sampling
      noise included: Fisher's exact test), synthetic_to_train and test_to_train distance summaries (min, q01, q05,
      q25, median, q75, q95, max, mean), closest_pairs (the top_k synthetic samples with the
      smallest distance: dicts synthetic, train, distance, ratio, flagged; pass them to
      :func:`closest_pairs_figure`), and per-sample arrays nn_distance, nn_index, nn_ratio,
      flagged (synthetic) and test_nn_distance.
    """
    from scipy import stats

    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    syn = as_features(synthetic, "synthetic")
    tr = as_features(train, "train")
    te = as_features(test, "test")
    k = min(2, tr.shape[0])
    d_syn, i_syn = nearest_neighbours(syn, tr, metric=metric, k=k, batch=batch)
    d_test, _ = nearest_neighbours(te, tr, metric=metric, k=k, batch=batch)
    ratio_syn, ratio_test = _ratio(d_syn), _ratio(d_test)
    threshold = float(np.quantile(d_test[:, 0], quantile))
    ratio_threshold = float(np.quantile(ratio_test, quantile))

    flagged = _flags(d_syn[:, 0], ratio_syn, threshold, ratio_threshold, rule)
    expected = float(_flags(d_test[:, 0], ratio_test, threshold, ratio_threshold, rule).mean())
    n_flagged = int(flagged.sum())
    pvalue = float(stats.binomtest(n_flagged, syn.shape[0], min(max(expected, 1e-12), 1.0), alternative="greater").pvalue)
    n_test_flagged = int(round(expected * te.shape[0]))

    order = np.argsort(d_syn[:, 0], kind="stable")[: max(0, top_k)]
    pairs = [
        {
            "synthetic": int(i),
            "train": int(i_syn[i, 0]),
            "distance": float(d_syn[i, 0]),
            "ratio": float(ratio_syn[i]),
            "flagged": bool(flagged[i]),
        }
        for i in order
    ]
    descriptions = {
        "distance": f"nearest-train distance <= {quantile:g}-quantile of test-to-train distances",
        "ratio": f"nearest/second-nearest train distance ratio <= {quantile:g}-quantile of the test ratios",
        "either": f"distance or ratio at or below the {quantile:g}-quantile of the test values",
        "both": f"distance and ratio both at or below the {quantile:g}-quantile of the test values",
    }
    return {
        "space": space_name,
        "metric": metric,
        "rule": rule,
        "rule_description": descriptions[rule],
        "quantile": quantile,
        "threshold": threshold,
        "ratio_threshold": ratio_threshold,
        "n_synthetic": int(syn.shape[0]),
        "n_train": int(tr.shape[0]),
        "n_test": int(te.shape[0]),
        "n_flagged": n_flagged,
        "fraction_flagged": n_flagged / syn.shape[0],
        "fraction_flagged_distance": float((d_syn[:, 0] <= threshold).mean()),
        "fraction_flagged_ratio": float((ratio_syn <= ratio_threshold).mean()),
        "expected_fraction": expected,
        "binomial_pvalue": pvalue,
        "fraction_flagged_ci": binomial_ci(n_flagged, syn.shape[0]),
        "baseline_test": _baseline_test(n_flagged, syn.shape[0], n_test_flagged, te.shape[0]),
        "synthetic_to_train": _summary(d_syn[:, 0]),
        "test_to_train": _summary(d_test[:, 0]),
        "closest_pairs": pairs,
        "nn_distance": d_syn[:, 0],
        "nn_index": i_syn[:, 0],
        "nn_ratio": ratio_syn,
        "flagged": flagged,
        "test_nn_distance": d_test[:, 0],
    }


def _baseline_test(k_syn: int, n_syn: int, k_test: int, n_test: int) -> dict:
    """Are synthetic images flagged more often than held-out real images are? One-sided Fisher's
    exact test on the 2x2 table; unlike ``binomial_pvalue`` it does not take the real rate as exact."""
    from scipy.stats import fisher_exact

    table = [[k_syn, n_syn - k_syn], [k_test, n_test - k_test]]
    return {"method": "Fisher's exact test, one-sided: synthetic flagged more often than held-out real images",
            "p_value": float(fisher_exact(table, alternative="greater")[1]),
            "synthetic": binomial_ci(k_syn, n_syn), "real_baseline": binomial_ci(k_test, n_test)}


def _display_image(img: np.ndarray) -> tuple[np.ndarray, bool]:
    """(C, H, W) or (C, D, H, W) -> a 2-D array (or H x W x 3 RGB); 3-D shows the middle slice."""
    if img.ndim == 4:
        img = img[:, img.shape[1] // 2]
    if img.ndim == 2:
        return img, False
    if img.ndim != 3:
        raise ValueError(f"closest_pairs_figure needs images (C, H, W) or (C, D, H, W), got {img.shape}")
    if img.shape[0] == 3:
        return np.clip(np.moveaxis(img, 0, -1), 0.0, 1.0), True
    return img[0], False


def closest_pairs_figure(
    synthetic: Any,
    train: Any,
    pairs: Sequence[Any],
    path: str | Path,
    max_pairs: int = 16,
    title: str | None = None,
    pairs_per_row: int = 4,
) -> Path:
    """Save a PNG showing each synthetic sample next to its nearest training sample.

    pairs: ``audit["closest_pairs"]`` (dicts with synthetic, train, distance) or
    (synthetic_index, train_index[, distance]) tuples. Each pair shares one grey scale so that
    intensity differences are visible. Uses matplotlib's Agg canvas directly, without pyplot,
    so the global backend is left alone. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    syn = as_numpy(synthetic, np.float64)
    tr = as_numpy(train, np.float64)
    rows = []
    for p in list(pairs)[:max_pairs]:
        if isinstance(p, dict):
            rows.append((int(p["synthetic"]), int(p["train"]), p.get("distance")))
        else:
            rows.append((int(p[0]), int(p[1]), p[2] if len(p) > 2 else None))
    if not rows:
        raise ValueError("no pairs to draw")
    n_cols = 2 * min(pairs_per_row, len(rows))
    n_rows = -(-len(rows) // pairs_per_row)
    fig = Figure(figsize=(1.6 * n_cols, 2.0 * n_rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for n, (i, j, d) in enumerate(rows):
        a, rgb = _display_image(syn[i])
        b, _ = _display_image(tr[j])
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        r, c = divmod(n, pairs_per_row)
        dist = f"d={float(d):.3g}" if d is not None else ""
        for ax, img, label in ((axes[r, 2 * c], a, f"synthetic {i}\n{dist}"), (axes[r, 2 * c + 1], b, f"train {j}\n")):
            ax.imshow(img, cmap=None if rgb else "gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out
