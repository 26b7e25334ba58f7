"""Where the label maps for mask-conditioned sampling and inpainting come from, and their checks.

A mask source is one of
- ``dataset`` (or ``dataset:SPLIT``): the masks of the run's own prepared dataset (non-empty ones);
- a folder of mask files (PNG/TIFF/NIfTI/NPY/DICOM; values 0 = background, 1..K = classes; a
  0/255 PNG counts as binary) or a single mask file;
- ``random:CLASS[,size=LO-HI][,where=REGION]``: lesion masks drawn from medgen's own lesion simulator
  (:mod:`medgen.data.builtin.lesions`). ``size`` is the lesion area in percent of the image
  (e.g. ``size=1-4``), ``where`` one of left, right, upper, lower, centre (the lesion's centroid).
  For volumes, the simulated 2D outline is extruded into an ellipsoid-like stack of shrinking
  slices (the simulator itself makes 2D slices only).

Every mask is checked before anything is generated, so nothing is half-written: its size and
number of dimensions must be the model's, it must not be empty, and its values must lie within
the classes the model was trained with. The error names the file and the problem (exit code 2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from medgen.errors import UserError

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".nii", ".nii.gz", ".npy", ".dcm", ".bmp", ".jpg", ".jpeg")
REGIONS = ("left", "right", "upper", "lower", "centre", "center")
MAX_TRIES = 400  # simulator draws per requested mask before a constraint is declared unsatisfiable


@dataclass
class MaskSet:
    """Label maps (N, 1, *size) uint8 with where each came from."""

    masks: np.ndarray
    names: list[str]
    source: str
    lesion_class: str | None = None
    details: list[dict] = field(default_factory=list)  # per mask: what the simulator drew (index, area)

    def __len__(self) -> int:
        return len(self.masks)

    def take(self, n: int) -> "MaskSet":
        """n masks, cycling through the set when it holds fewer."""
        idx = np.arange(n) % len(self.masks)
        det = [self.details[i] for i in idx] if self.details else []
        return MaskSet(self.masks[idx], [self.names[i] for i in idx], self.source, self.lesion_class, det)

    def record(self, i: int) -> dict:
        """What samples.json says about the i-th mask's conditioning."""
        m = self.masks[i]
        out = {"mask_source": self.source, "mask_from": self.names[i], "mask_area_px": int((m > 0).sum()),
               "mask_area_pct": round(100.0 * float((m > 0).mean()), 3)}
        if self.lesion_class:
            out["lesion_class"] = self.lesion_class
        if self.details:
            out.update(self.details[i])
        return out


def check_mask(mask: np.ndarray, size: tuple[int, ...], max_value: int, name: str) -> np.ndarray:
    """The mask as (1, *size) uint8, or a UserError naming ``name`` and what is wrong."""
    m = np.asarray(mask)
    if m.ndim == len(size) + 1 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != len(size):
        raise UserError(f"mask has {m.ndim} dimensions {tuple(m.shape)}, the model makes {len(size)}D images {tuple(size)}", name)
    if tuple(m.shape) != tuple(size):
        raise UserError(f"mask size {tuple(m.shape)} does not match the model's image size {tuple(size)}", name)
    if not np.isfinite(m).all():
        raise UserError("mask contains NaN or infinite values", name)
    values = np.unique(m)
    if set(values.tolist()) <= {0, 255} and 255 in values and max_value < 255:
        m = (m > 0)  # an 8-bit binary PNG (0/255)
        values = np.unique(m.astype(np.uint8))
    if (values != np.round(values)).any() or values.min() < 0:
        raise UserError(f"mask values must be whole numbers 0..{max_value} (found {values[:6].tolist()})", name)
    if values.max() > max_value:
        raise UserError(f"mask value {int(values.max())} is outside the trained classes 0..{max_value}", name)
    if values.max() == 0:
        raise UserError("mask is empty (no pixel above 0)", name)
    return m.astype(np.uint8)[None]


def load_masks(source: str, size: tuple[int, ...], max_value: int = 1, n: int | None = None, seed: int = 0,
               dataset: str | Path | None = None, ids: Sequence[str] | None = None) -> MaskSet:
    """The masks ``source`` names, checked against the model's image ``size`` and classes 0..``max_value``.
    ``n``: how many a ``random:`` source draws (others give what they hold). ``ids``: a ``dataset``
    source keeps only these items (the index's ``id`` column), e.g. the K pairs a generator may use."""
    source = str(source)
    is_dataset = source == "dataset" or source.startswith("dataset:")
    if ids is not None and not is_dataset:
        raise UserError(f"mask source '{source}': only a dataset source can be restricted to item ids")
    if source.startswith("random:"):
        return random_masks(source, size, n or 1, seed)
    if is_dataset:
        return dataset_masks(dataset, source.partition(":")[2] or None, size, max_value, ids)
    path = Path(source).expanduser()
    files = image_files(path, "mask", "mask source is neither a file, a folder, 'dataset' nor 'random:CLASS'")
    return MaskSet(np.stack([read_mask(f, size, max_value) for f in files]), [f.name for f in files], str(path))


def image_files(path: Path, what: str, missing: str) -> list[Path]:
    """The image files of a folder (sorted), or the one file ``path``; ``missing`` is the error otherwise."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and any(p.name.lower().endswith(s) for s in MASK_SUFFIXES))
        if not files:
            raise UserError(f"no {what} files in folder (PNG, TIFF, NIfTI, NPY or DICOM)", path)
        return files
    if path.is_file():
        return [path]
    raise UserError(missing, path)


def read_mask(path: Path, size: tuple[int, ...], max_value: int) -> np.ndarray:
    from medgen.data.io import read_image

    arr = np.load(path) if path.suffix.lower() == ".npy" else read_image(path)
    return check_mask(arr, size, max_value, str(path))


def dataset_masks(root: str | Path | None, split: str | None, size: tuple[int, ...], max_value: int,
                  ids: Sequence[str] | None = None) -> MaskSet:
    from medgen.data.dataset import PreparedDataset

    if root is None:
        raise UserError("--masks dataset: this run records no prepared dataset")
    ds = PreparedDataset(root)
    if ds.masks is None:
        raise UserError("--masks dataset: the prepared dataset has no masks (masks.npy)", ds.root)
    rows = ds.select(split, None if ids is None else {"id": "|".join(map(str, ids))})
    rows = rows[np.asarray(ds.masks[rows]).reshape(len(rows), -1).max(axis=1) > 0] if len(rows) else rows
    if not len(rows):
        where = ('split ' + split if split else 'the dataset') + (f" among the {len(ids)} chosen items" if ids is not None else "")
        raise UserError(f"--masks dataset: no non-empty mask in {where}", ds.root)
    ids = ds.index["id"].to_numpy()[rows] if "id" in ds.index.columns else rows.astype(str)
    masks = np.stack([check_mask(np.asarray(ds.masks[r]), size, max_value, f"{ds.root}/masks.npy[{r}]") for r in rows])
    labels = ds.index["label"].to_numpy()[rows]
    details = [{"mask_label": str(lab)} for lab in labels]
    return MaskSet(masks, [str(i) for i in ids], f"dataset:{split}" if split else "dataset", None, details)


def parse_random(spec: str) -> tuple[str, tuple[float, float] | None, str | None]:
    """``random:CLASS[,size=LO-HI][,where=REGION]`` -> (class, size range in % of the image, region)."""
    from medgen.data.builtin.lesions import LABELS

    parts = [p.strip() for p in spec.partition(":")[2].split(",") if p.strip()]
    lesion_classes = [c for c in LABELS if c != "none"]
    if not parts or "=" in parts[0] or parts[0] not in lesion_classes:
        raise UserError(f"bad mask source '{spec}': random:CLASS needs a class, one of {', '.join(lesion_classes)}")
    size, where = None, None
    for p in parts[1:]:
        key, _, value = p.partition("=")
        if key == "size":
            try:
                lo, hi = (float(v) for v in value.split("-"))
            except ValueError:
                raise UserError(f"bad mask source '{spec}': size=LO-HI in percent of the image, e.g. size=1-4") from None
            if not 0 <= lo < hi <= 100:
                raise UserError(f"bad mask source '{spec}': size needs 0 <= LO < HI <= 100 (percent of the image)")
            size = (lo, hi)
        elif key == "where":
            if value not in REGIONS:
                raise UserError(f"bad mask source '{spec}': where= is one of {', '.join(REGIONS[:5])}")
            where = "centre" if value == "center" else value
        else:
            raise UserError(f"bad mask source '{spec}': unknown option '{key}' (size=LO-HI, where=REGION)")
    return parts[0], size, where


def _in_region(mask: np.ndarray, where: str | None) -> bool:
    if where is None:
        return True
    cy, cx = ndi.center_of_mass(mask)
    h, w = mask.shape
    fy, fx = cy / h, cx / w
    return {"left": fx < 0.45, "right": fx > 0.55, "upper": fy < 0.45, "lower": fy > 0.55,
            "centre": abs(fy - 0.5) < 0.2 and abs(fx - 0.5) < 0.2}[where]


def random_masks(spec: str, size: tuple[int, ...], n: int, seed: int) -> MaskSet:
    """n simulator lesion masks of one class that meet the size and position constraints."""
    from medgen.data.builtin.lesions import LABELS, generate

    lesion_class, size_range, where = parse_random(spec)
    plane = tuple(size[-2:])
    k = LABELS.index(lesion_class)
    masks, names, details = [], [], []
    for draw in range(n * MAX_TRIES):
        index = k + len(LABELS) * draw  # the simulator's class is index % len(LABELS)
        m = generate(index, seed, plane)[0].mask
        area = 100.0 * float(m.mean())
        if m.max() == 0 or (size_range and not size_range[0] <= area <= size_range[1]) or not _in_region(m, where):
            continue
        vol = m if len(size) == 2 else extrude(m, size[0], np.random.default_rng([seed, index]))
        masks.append(vol[None].astype(np.uint8))
        names.append(f"simulator:{lesion_class}:{index}")
        details.append({"simulator_index": index, "simulator_seed": seed})
        if len(masks) == n:
            return MaskSet(np.stack(masks), names, spec, lesion_class, details)
    raise UserError(f"mask source '{spec}': the lesion simulator gave only {len(masks)} of {n} masks meeting "
                    f"the constraints in {n * MAX_TRIES} draws at {'x'.join(map(str, plane))} (widen size= or drop where=)")


def extrude(mask2d: np.ndarray, depth: int, rng: np.random.Generator) -> np.ndarray:
    """A (depth, H, W) lesion from a 2D outline: slices shrink towards the ends like an ellipsoid's."""
    inside = ndi.distance_transform_edt(mask2d)
    half = max(1.0, depth * rng.uniform(0.25, 0.4))
    centre = rng.uniform(half, max(half, depth - 1 - half)) if depth > 2 * half else (depth - 1) / 2
    vol = np.zeros((depth, *mask2d.shape), dtype=np.uint8)
    top = inside.max()
    for z in range(depth):
        r = 1.0 - ((z - centre) / half) ** 2
        if r > 0:
            vol[z] = inside > top * (1.0 - np.sqrt(r))
    if vol.max() == 0:  # a very thin stack: keep the central slice
        vol[int(round(centre))] = mask2d
    return vol
