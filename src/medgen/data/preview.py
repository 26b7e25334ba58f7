"""preview.png: a grid per class (rows = classes), the middle slice for volumes, masks outlined."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _display(img: np.ndarray) -> np.ndarray:
    """(C, *spatial) -> 2D grey or (H, W, 3) for display, scaled by its 1st-99th percentiles."""
    if img.ndim == 4:
        img = img[:, img.shape[1] // 2]
    out = img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)
    lo, hi = np.percentile(out, [1, 99])
    return np.clip((out - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(out)


def write_preview(root: Path, per_class: int = 8, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen.data.dataset import PreparedDataset

    ds = PreparedDataset(root)
    labels = ds.labels
    fig, axes = plt.subplots(len(labels), per_class, figsize=(1.4 * per_class, 1.5 * len(labels) + 0.4), squeeze=False)
    for r, label in enumerate(labels):
        rows = ds.select(where={"label": label})
        pick = rows[np.linspace(0, len(rows) - 1, min(per_class, len(rows))).astype(int)] if len(rows) else []
        for c in range(per_class):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(pick):
                img = np.asarray(ds.images[pick[c]])
                ax.imshow(_display(img), cmap="gray", interpolation="nearest")
                if ds.masks is not None:
                    m = np.asarray(ds.masks[pick[c]])
                    m = m[0, m.shape[1] // 2] if m.ndim == 4 else m[0]
                    if m.any():
                        ax.contour(m, levels=[0.5], colors="red", linewidths=0.6)
        axes[r][0].set_title(f"{label} (n={len(rows)})", fontsize=8, loc="left")
    fig.suptitle(f"{title or root.name}: {len(ds)} items, {'x'.join(map(str, ds.size))}", fontsize=9)
    fig.tight_layout()
    path = root / "preview.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
