"""Figures of ``medgen detect``: S003's rows of original / reconstruction / error map / ground truth,
and the histogram of anomaly scores of normal vs anomalous images with the threshold."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.plots import _plt, middle


def pick_items(labels: list[str], truth: np.ndarray | None, k: int) -> list[int]:
    """Up to k items: anomalous ones cycling over their labels, plus two normals (deterministic)."""
    n = len(labels)
    if truth is None or not truth.any() or truth.all():
        return list(np.linspace(0, n - 1, min(k, n)).astype(int)) if n else []
    normals = np.flatnonzero(~truth)
    n_norm = min(len(normals), 2 if k > 3 else 1)
    by_label: dict[str, list[int]] = {}
    for i in np.flatnonzero(truth):
        by_label.setdefault(labels[i], []).append(int(i))
    picked: list[int] = []
    while len(picked) < k - n_norm and any(by_label.values()):
        for lab in sorted(by_label):
            if by_label[lab] and len(picked) < k - n_norm:
                picked.append(by_label[lab].pop(0))
    return picked + [int(i) for i in normals[:n_norm]]


def detection_figure(items, recon, maps, scores, predicted, truth, pixel_thr, path: Path, k: int = 8, title: str = "") -> Path:
    plt = _plt()
    idx = pick_items(items.labels, truth, k)
    rows = ["original", "reconstruction", "anomaly map", "ground truth"]
    ncol = max(1, len(idx))
    fig, axes = plt.subplots(4, ncol, figsize=(1.55 * ncol + 0.6, 6.6), squeeze=False)
    sel = maps[idx] if idx else maps[:1]
    vmax = float(max(np.percentile(sel, 99.5), (pixel_thr or 0) * 1.5, 1e-6))
    for c, i in enumerate(idx):
        img = np.clip(middle(items.images[i]), 0, 1)
        m = middle(maps[i])
        lab = items.labels[i] or items.ids[i][:12]
        flag = "anomalous" if predicted[i] else "normal"
        axes[0, c].imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, c].set_title(f"{lab}\nscore {scores[i]:.3g}: {flag}", fontsize=7, color="crimson" if predicted[i] else "black")
        if recon is not None:
            axes[1, c].imshow(np.clip(middle(recon[i]), 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            axes[1, c].text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=8)
        axes[2, c].imshow(m, cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
        if pixel_thr is not None and (m > pixel_thr).any():
            axes[2, c].contour(m > pixel_thr, levels=[0.5], colors="cyan", linewidths=0.6)
        axes[3, c].imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if items.masks is not None:
            gt = middle(items.masks[i].astype(np.float32)) > 0
            if gt.any():
                axes[3, c].contour(gt, levels=[0.5], colors="red", linewidths=0.8)
        else:
            axes[3, c].text(0.5, 0.5, "no mask", ha="center", va="center", fontsize=7, transform=axes[3, c].transAxes,
                            color="white")
    for r, name in enumerate(rows):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title + ("  (cyan: pixels above the pixel threshold; red: ground truth)" if pixel_thr is not None else ""),
                     fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def score_histogram(scores, truth, calib_scores, threshold, path: Path, title: str = "") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    scores = np.asarray(scores, dtype=float)
    allv = np.r_[scores, calib_scores if calib_scores is not None else [], [threshold]]
    lo, hi = float(np.min(allv)), float(np.max(allv))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
    if truth is not None:
        if (~truth).any():
            ax.hist(scores[~truth], bins=edges, alpha=0.55, label=f"normal (n={int((~truth).sum())})", color="tab:blue")
        if truth.any():
            ax.hist(scores[truth], bins=edges, alpha=0.55, label=f"anomalous (n={int(truth.sum())})", color="tab:red")
    else:
        ax.hist(scores, bins=edges, alpha=0.6, label=f"input (n={len(scores)})", color="tab:gray")
    if calib_scores is not None:
        ax.hist(calib_scores, bins=edges, histtype="step", linestyle="--", color="black",
                label=f"normal validation (n={len(calib_scores)})")
    ax.axvline(threshold, color="black", linewidth=1.2, label=f"threshold {threshold:.3g}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
