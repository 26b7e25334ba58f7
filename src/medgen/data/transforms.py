"""Crop, resize and normalise. Resizing uses MONAI's transforms; normalisation is medgen's own
because the ``train-max`` mode (S000) needs a statistic of the training split stored for reuse.

Normalisation modes (``stats.json`` keeps the mode and its parameters, so new data is
normalised exactly as the training data was):
- ``train-max``: divide by the largest pixel value of the training split (S000). Val/test and
  new data use the same divisor; values above it are kept (>1), not clipped.
- ``minmax``: per image, (x - min) / (max - min) to [0, 1].
- ``percentile[:LO,HI]``: per image, clip to the LO-th/HI-th percentiles (default 0.5, 99.5)
  and scale to [0, 1].
- ``zscore``: per image, (x - mean) / std.
- ``window:C,W``: clip to [C - W/2, C + W/2] and scale to [0, 1] (CT windows in HU).
- ``none``: values unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from medgen.errors import UserError

NORMALIZE_MODES = ("train-max", "minmax", "percentile", "zscore", "window", "none")


def crop_box(arr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop a (C, H, W) array to a checked [ymin, xmin, ymax, xmax] box."""
    y0, x0, y1, x1 = box
    return arr[..., y0:y1, x0:x1]


def preload_resize() -> None:
    """Import what ``resize`` needs (MONAI, and torch through it) now. Worker processes forked
    afterwards inherit the modules; otherwise each imports them itself on its first image, all at
    once, 4-5 CPU-seconds apiece here. ``prepare`` of 1,000 DICOM files in a fresh process on 2
    cores (4 runs each): 5.2-6.8 s and 7.2-9.0 CPU-s instead of 6.6-8.0 s and 12.6-15.2 CPU-s.
    Only for work that resizes: the import costs about 4 s where nothing else needs it."""
    import importlib

    importlib.import_module("monai.transforms")  # imports monai.data too (_untracked's get_track_meta)


def resize(arr: np.ndarray, size: tuple[int, ...], keep_aspect: bool = True, nearest: bool = False) -> np.ndarray:
    """Resize (C, *spatial) to (C, *size).

    keep_aspect scales by the smallest factor and pads symmetrically with the image minimum
    (zero for masks), so anatomy is never stretched; otherwise each axis is stretched.
    Downsampling is anti-aliased (MONAI's Gaussian pre-filter) so fine texture does not alias.
    """
    from monai.transforms import Resize, SpatialPad

    spatial = arr.shape[1:]
    if len(spatial) != len(size):
        raise ValueError(f"cannot resize {len(spatial)}D data to {len(size)}D size {size}")
    if tuple(spatial) == tuple(size):
        return arr
    mode = "nearest" if nearest else ("bilinear" if len(size) == 2 else "trilinear")
    if keep_aspect:
        scale = min(t / s for t, s in zip(size, spatial))
        inner = tuple(max(1, min(t, int(round(s * scale)))) for t, s in zip(size, spatial))
    else:
        inner = tuple(size)
    kwargs = {} if nearest else {"anti_aliasing": True}
    with _untracked():
        out = np.asarray(Resize(inner, mode=mode, **kwargs)(arr))
        if tuple(out.shape[1:]) != tuple(size):
            fill = 0.0 if nearest else float(arr.min())
            out = np.asarray(SpatialPad(size, mode="constant", value=fill)(out))
    return out.astype(arr.dtype, copy=False)


@contextmanager
def _untracked():
    """MONAI transforms without metadata tracking: their results become plain arrays here, and
    tracking (MetaTensor) took 40% of a resize's time."""
    from monai.data import get_track_meta, set_track_meta

    tracked = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(tracked)


@dataclass(frozen=True)
class Normalizer:
    """A normalisation mode with its parameters; ``to_json`` / ``from_json`` round-trip stats.json."""

    mode: str
    params: dict

    @classmethod
    def parse(cls, spec: str) -> "Normalizer":
        name, _, arg = spec.partition(":")
        name = name.strip().lower()
        if name not in NORMALIZE_MODES:
            raise UserError(f"unknown --normalize mode '{spec}'; choose one of {', '.join(NORMALIZE_MODES)}")
        try:
            if name == "percentile":
                lo, hi = (float(v) for v in arg.split(",")) if arg else (0.5, 99.5)
                if not 0 <= lo < hi <= 100:
                    raise ValueError
                return cls(name, {"low": lo, "high": hi})
            if name == "window":
                c, w = (float(v) for v in arg.split(","))
                if w <= 0:
                    raise ValueError
                return cls(name, {"center": c, "width": w})
        except ValueError:
            hint = "percentile:LOW,HIGH with 0 <= LOW < HIGH <= 100" if name == "percentile" else "window:CENTER,WIDTH with WIDTH > 0"
            raise UserError(f"bad --normalize '{spec}': expected {hint}") from None
        if arg:
            raise UserError(f"--normalize {name} takes no argument (got '{spec}')")
        return cls(name, {})

    @property
    def per_image(self) -> bool:
        """Whether an image's normalised values depend on that image alone (every mode but
        ``train-max``): preparation then normalises in its worker processes."""
        return self.mode != "train-max"

    def fit(self, train_max: float) -> "Normalizer":
        """Fill dataset-level parameters from the training split."""
        if self.mode == "train-max":
            if not train_max > 0:
                raise UserError("cannot normalise by train-max: the training images are all zero or negative")
            return Normalizer(self.mode, {"max": float(train_max)})
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32, copy=False)
        if self.mode == "none":
            return x
        if self.mode == "train-max":
            return x / np.float32(self.params["max"])
        if self.mode == "minmax":
            lo, hi = float(x.min()), float(x.max())
            return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        if self.mode == "percentile":
            lo, hi = np.percentile(x, [self.params["low"], self.params["high"]])
            return np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x)
        if self.mode == "zscore":
            sd = float(x.std())
            return (x - x.mean()) / sd if sd > 0 else x - x.mean()
        if self.mode == "window":
            c, w = self.params["center"], self.params["width"]
            return np.clip((x - (c - w / 2)) / w, 0, 1)
        raise AssertionError(self.mode)

    def to_json(self) -> dict:
        return {"mode": self.mode, **self.params}

    @classmethod
    def from_json(cls, d: dict) -> "Normalizer":
        d = dict(d)
        return cls(d.pop("mode"), d)
