"""Figures people would rather look at than read: image grids and intensity histograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    """pyplot on the file backend, every text plain: titles carry names users chose (classes,
    folders, runs), and a '$' in one must print as a '$', not start a formula that fails to parse."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def middle(img: np.ndarray) -> np.ndarray:
    """(C, *spatial) -> a 2D display image (middle slice of volumes, first channel or RGB)."""
    if img.ndim == 4:
        img = img[:, img.shape[1] // 2]
    return img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)


def image_grid(images: np.ndarray, path: Path, titles: list[str] | None = None, ncols: int = 8, title: str = "") -> Path:
    plt = _plt()
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.6 * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(np.clip(middle(images[i]), 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if titles:
                ax.set_title(titles[i], fontsize=7)
    return save_figure(fig, path, title, dpi=100)


def save_figure(fig, path: Path, title: str = "", dpi: int = 100) -> Path:
    """Title, tight layout, write and close: the end of every figure here."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    return path


def intensity_histogram(real: np.ndarray, fake: np.ndarray, path: Path, bins: int = 64, title: str = "") -> Path:
    """Pixel-value histograms of real vs generated images (S000/S002 compare these)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    lo = float(min(real.min(), fake.min()))
    hi = float(max(real.max(), fake.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    ax.hist(real.ravel(), bins=edges, density=True, alpha=0.5, label=f"real (n={len(real)})")
    ax.hist(fake.ravel(), bins=edges, density=True, alpha=0.5, label=f"generated (n={len(fake)})")
    ax.set_xlabel("intensity")
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
