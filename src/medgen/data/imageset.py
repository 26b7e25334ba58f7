"""Image sets: "a folder of images or a prepared dataset", read one way for every command.

* :func:`load_image_set` (``medgen evaluate``): a folder (every readable image file below it; a
  ``medgen sample`` folder's samples.json is followed, its labels and settings kept; class
  sub-folders give labels; one intensity rule per set maps it to [0, 1]), a prepared dataset
  (``DIR`` / ``DIR@split``), an array or an :class:`ImageSet`.
* :func:`read_like_run` (``medgen detect``): one image file made like the run's data — the run's
  channel count, its resize (aspect kept as the dataset was prepared) and its normaliser.
* :func:`rows_set`: chosen rows of a prepared dataset as an :class:`ImageSet`.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.errors import InputFileError, UserError

__all__ = ["ImageSet", "image_files", "is_prepared_dataset", "labels_or_none", "load_image_set", "read_like_run", "resize_to", "rows_set"]

SKIP_FILES = {"grid.png", "histogram.png", "histograms.png", "preview.png", "closest_pairs.png"}


def image_files(root: Path, skip_names: set[str] | frozenset[str] = frozenset()) -> list[Path]:
    """Image files below ``root`` (png, jpg, tif, dcm, nii, npy...), sorted; hidden files and folders skipped."""
    from medgen.data.io import IMAGE_SUFFIXES, suffix_of

    return sorted(p for p in root.rglob("*") if p.is_file() and suffix_of(p) in IMAGE_SUFFIXES
                  and p.name not in skip_names and not any(part.startswith(".") for part in p.relative_to(root).parts))


def rows_set(ds, rows: np.ndarray, source: dict) -> "ImageSet":
    """Rows of a PreparedDataset as an ImageSet (labels, item ids, ``n_images`` added to ``source``)."""
    return ImageSet(np.asarray(ds.images[rows], dtype=np.float32), labels_or_none(ds.index["label"].to_numpy()[rows]),
                    {**source, "n_images": int(len(rows))}, ds, ds.index["id"].to_numpy()[rows])


def read_like_run(path: Path, info, normalize: dict | None, keep_aspect: bool) -> np.ndarray:
    """One image file as the run's data was prepared: its channels, size (``info``) and normaliser."""
    from medgen.data.io import read_image
    from medgen.data.transforms import Normalizer, resize

    arr = read_image(path, rgb=info.channels == 3)
    if arr.ndim - 1 != info.spatial_dims:
        raise UserError(f"{arr.ndim - 1}D image, but the run's model is {info.spatial_dims}D", path)
    if arr.shape[0] != info.channels:
        arr = arr.mean(axis=0, keepdims=True) if info.channels == 1 else np.repeat(arr[:1], info.channels, axis=0)
    out = resize(arr, tuple(info.size), keep_aspect=keep_aspect and info.spatial_dims == 2)
    return Normalizer.from_json(normalize)(out) if normalize else out


@dataclass
class ImageSet:
    """Images (N, C, *spatial) float32 in [0, 1], optional per-image labels (str), and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None = None
    source: dict = field(default_factory=dict)
    dataset: Any = None  # a PreparedDataset when the set came from one
    ids: np.ndarray | None = None  # the dataset's item ids (index.csv "id"), to find an image again

    def __len__(self) -> int:
        return len(self.images)


def is_prepared_dataset(path: Path) -> bool:
    return path.is_dir() and all((path / f).exists() for f in ("index.csv", "images.npy", "stats.json"))


def _split_spec(spec: str) -> tuple[Path, str | None]:
    """'DIR@test' -> (DIR, 'test'); a literal path containing '@' wins when it exists."""
    p = Path(spec).expanduser()
    if p.exists() or "@" not in spec:
        return p, None
    base, _, split = spec.rpartition("@")
    return Path(base).expanduser(), split or None


def labels_or_none(labels: Sequence[str]) -> np.ndarray | None:
    arr = np.asarray([str(v) for v in labels], dtype=object)
    return None if len(arr) == 0 or all(v == "" for v in arr) else arr


def _dataset_set(path: Path, split: str | None, role: str) -> ImageSet:
    from medgen.data.dataset import PreparedDataset

    ds = PreparedDataset(path)
    if split is None:
        split = "test" if role == "real" and len(ds.select("test")) >= 2 else "all"
    rows = ds.select(None if split == "all" else split)
    if len(rows) == 0:
        splits = sorted(set(ds.index["split"]))
        raise UserError(f"no items in split '{split}' (splits: {', '.join(splits)}; use DIR@SPLIT or DIR@all)", path)
    return rows_set(ds, rows, {"kind": "prepared dataset", "path": str(path.resolve()), "split": split})


def _folder_files(root: Path) -> tuple[list[Path], list[str] | None, dict]:
    manifest = root / "samples.json"
    if manifest.exists():  # a `medgen sample` folder: its own file list, labels and settings
        try:
            m = json.loads(manifest.read_text())
            files = [root / f["file"] for f in m["files"]]
            labels = [f.get("label", "") for f in m["files"]]
            meta = {k: m.get(k) for k in ("sampler", "steps", "seed", "guidance", "run", "format")}
            return files, labels, meta
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"samples.json is not a medgen sample manifest ({err})", manifest) from None
    files = image_files(root, skip_names=SKIP_FILES)
    rel = [p.relative_to(root).parts for p in files]
    labels = [r[0] for r in rel] if files and all(len(r) == 2 for r in rel) else None  # class sub-folders
    return files, labels, {}


def _scale_rule(images: list[np.ndarray]) -> tuple[float, float, str]:
    """One rule per set (never per image, which would erase real brightness differences)."""
    lo = min(float(a.min()) for a in images)
    hi = max(float(a.max()) for a in images)
    if lo >= 0 and hi <= 1.0 + 1e-6:
        return 0.0, 1.0, "none (values already in [0, 1])"
    if lo >= 0 and hi <= 255:
        return 0.0, 255.0, "divided by 255 (8-bit range)"
    if lo >= 0 and hi <= 65535:
        return 0.0, 65535.0, "divided by 65535 (16-bit range)"
    return lo, hi - lo if hi > lo else 1.0, f"min-max over the set ({lo:g}..{hi:g})"


def resize_to(img: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]
    shrink = all(s >= t for s, t in zip(img.shape[1:], spatial))
    mode = "area" if shrink else ("bilinear" if len(spatial) == 2 else "trilinear")
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=spatial, mode=mode, **kw)[0].numpy()


def _conform(images: list[np.ndarray], files: list[Path], target: tuple[int, ...] | None, resize: bool, role: str) -> tuple[np.ndarray, dict]:
    """Stack images of one shape: ``target`` (C, *spatial) or the most common shape of the set."""
    shapes = [a.shape for a in images]
    target = tuple(target) if target is not None else Counter(shapes).most_common(1)[0][0]
    odd = [(f, s) for f, s in zip(files, shapes) if s != target]
    info = {"shape": list(target), "n_resized": 0}
    if odd:
        bad = [(f, s) for f, s in odd if len(s) != len(target) or s[0] != target[0]]
        if bad or not resize:
            shown = "; ".join(f"{f} {tuple(s)}" for f, s in (bad or odd)[:5])
            more = f" and {len(bad or odd) - 5} more" if len(bad or odd) > 5 else ""
            why = "different channel count or dimensionality" if bad else "different size (resizing is off)"
            raise UserError(f"{role} images do not match the expected shape (C, *spatial) = {target}: {why}: {shown}{more}")
        images = [(resize_to(a, target[1:]) if a.shape != target else a) for a in images]
        info.update(n_resized=len(odd), resized_examples=[str(f) for f, _ in odd[:5]],
                    resize_method="area when shrinking, else bilinear/trilinear")
    return np.stack(images).astype(np.float32), info


def load_image_set(spec: Any, role: str = "fake", target: tuple[int, ...] | None = None, resize: bool = True) -> ImageSet:
    """A folder of images, a prepared dataset (``DIR`` / ``DIR@split``), an array, or an ImageSet.

    Folders: every readable image file below it (a ``medgen sample`` folder's samples.json is
    followed, its labels and settings kept; class sub-folders give labels). One intensity rule per
    set maps it to [0, 1] (see :func:`_scale_rule`). Images whose size differs from ``target``
    (else from the set's most common shape) are resized when ``resize``, otherwise refused with a
    message naming the files.
    """
    if isinstance(spec, ImageSet):
        return spec
    if isinstance(spec, np.ndarray) or hasattr(spec, "detach"):
        arr = np.asarray(spec.detach().cpu().numpy() if hasattr(spec, "detach") else spec, dtype=np.float32)
        if arr.ndim not in (4, 5):
            raise UserError(f"{role} images must be (N, C, H, W) or (N, C, D, H, W), got shape {arr.shape}")
        if target is not None and arr.shape[1:] != tuple(target):
            if not resize or arr.shape[1] != target[0] or arr.ndim - 1 != len(target):
                raise UserError(f"{role} images have shape {arr.shape[1:]}, expected {tuple(target)}")
            arr = np.stack([resize_to(a, tuple(target[1:])) for a in arr])
        return ImageSet(arr, None, {"kind": "array", "n_images": int(len(arr))})
    path, split = _split_spec(str(spec))
    if not path.exists():
        raise UserError(f"{role} images not found", path)
    if is_prepared_dataset(path):
        s = _dataset_set(path, split, role)
        if target is not None and s.images.shape[1:] != tuple(target):
            s.images, info = _conform(list(s.images), [path] * len(s), target, resize, role)
            s.source.update(info)
        return s
    if split is not None:
        raise UserError(f"'@{split}' selects a split of a prepared dataset; this is not one", path)
    if path.is_file():
        raise UserError(f"{role}: give a folder of images or a prepared dataset, not a single file", path)
    files, labels, meta = _folder_files(path)
    if not files:
        raise UserError(f"no image files in this {role} folder", path)
    from medgen.data.io import read_image

    images, errors = [], []
    for f in files:
        try:
            images.append(read_image(f))
        except InputFileError as err:
            errors.append(str(err))
    if errors:
        raise UserError(f"{len(errors)} {role} image file(s) could not be read: " + "; ".join(errors[:5])
                        + (" ..." if len(errors) > 5 else ""))
    if meta.get("format") in ("png", "dcm") and all(a.shape[0] == 1 for a in images):
        # medgen's own export: grey PNG and DICOM are 16-bit whatever the brightest pixel is
        offset, scale, rule = 0.0, 65535.0, "divided by 65535 (medgen sample export, 16-bit)"
    elif meta.get("format") in ("npy", "nii"):
        offset, scale, rule = 0.0, 1.0, "none (medgen sample export, values in [0, 1])"
    else:
        offset, scale, rule = _scale_rule(images)
    images = [(a - offset) / scale for a in images]
    stacked, info = _conform(images, files, target, resize, role)
    source = {"kind": "folder", "path": str(path.resolve()), "n_images": len(files), "intensity_scaling": rule, **info}
    source.update({k: v for k, v in meta.items() if v is not None})
    return ImageSet(stacked, labels_or_none(labels) if labels is not None else None, source)
