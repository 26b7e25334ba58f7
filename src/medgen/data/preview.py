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
    """The grid is composed as one image on one set of axes: sixteen matplotlib axes cost more than
    reading and scaling the images (0.2 s, a serial tail of every ``data prepare``)."""
    from medgen.data.dataset import PreparedDataset
    from medgen.plots import _plt

    plt = _plt()
    ds = PreparedDataset(root)
    labels = ds.labels
    h, w = ds.size[-2:]  # a volume shows its middle slice
    gap, band = max(1, w // 32), max(4, h // 4)  # white space between images; a band above each row for its title
    grid = np.ones((len(labels) * (band + h + gap), per_class * (w + gap), 3), dtype=np.float32)
    masks = np.zeros(grid.shape[:2], dtype=np.float32)
    counts = []
    for r, label in enumerate(labels):
        rows = ds.select(where={"label": label})
        counts.append(len(rows))
        pick = rows[np.linspace(0, len(rows) - 1, min(per_class, len(rows))).astype(int)] if len(rows) else []
        for c, i in enumerate(pick):
            y, x = r * (band + h + gap) + band, c * (w + gap)
            img = _display(np.asarray(ds.images[i]))
            grid[y:y + h, x:x + w] = img[..., None] if img.ndim == 2 else img  # grey fills all three channels
            if ds.masks is not None:
                m = np.asarray(ds.masks[i])
                masks[y:y + h, x:x + w] = m[0, m.shape[1] // 2] if m.ndim == 4 else m[0]
    fig = plt.figure(figsize=(1.4 * per_class, 1.5 * len(labels) + 0.4))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98 - 0.4 / fig.get_figheight()))
    ax.imshow(grid, interpolation="nearest", aspect="equal")
    if masks.any():
        ax.contour(masks, levels=[0.5], colors="red", linewidths=0.6)
    for r, (label, n) in enumerate(zip(labels, counts)):
        ax.text(0, r * (band + h + gap) + band / 2, f"{label} (n={n})", fontsize=8, va="center", ha="left")
    ax.axis("off")
    fig.suptitle(f"{title or root.name}: {len(ds)} items, {'x'.join(map(str, ds.size))}", fontsize=9)
    path = root / "preview.png"
    # zlib level 1: a quarter of the default level's time (a serial tail of every data prepare), and
    # on textured images no larger a file
    fig.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return path
