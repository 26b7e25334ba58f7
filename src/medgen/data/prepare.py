"""Prepare a dataset directory from any source.

Output (``OUT/``): ``index.csv`` (id, source, label, split, roi, mask, plus extra manifest
columns), ``images.npy`` (float32 (N, C, *size), memory-mappable, normalised), ``masks.npy``
(uint8, when any input has a mask), ``stats.json`` (normaliser parameters, sizes, labels,
counts, intensity statistics, content hash), ``rejected.csv`` (source, reason) and
``preview.png``. Everything is written into a temporary sibling folder and renamed into place
at the end, so a crash never leaves a half-written dataset and ``--force`` replaces the old
one only once the new one is complete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgen.data.roi import RoiError, check_box, format_box
from medgen.data.sources import Record, SourceOptions, list_records
from medgen.data.split import assign_splits
from medgen.data.transforms import Normalizer, crop_box, preload_resize, resize
from medgen.errors import InputFileError, UserError
from medgen.fsio import acquire_lock, check_free_space, current_umask, spreadsheet_safe
from medgen.parallel import process_map, shared_pool
from medgen.progress import progress_bar

DEFAULT_SIZE = (128, 128)
# the slicing planes of a volume in the readers' (C, z, y, x) layout (NIfTI: closest-canonical, see
# medgen.data.io.read_nifti): the letter of the slice index in item ids, and the array axis
SLICE_AXES = {"axial": ("z", 1), "coronal": ("y", 2), "sagittal": ("x", 3)}


@dataclass
class PrepareOptions:
    size: tuple[int, ...] | None = None
    normalize: str = "minmax"
    keep_aspect: bool = True
    rgb: bool = False
    voi: str = "auto"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    min_foreground: float = 0.05  # slices from volumes with less non-background are skipped (and listed)
    # planes a volume is sliced in when 2D items are asked for; with several, a slice's label is its
    # orientation (three view classes from one atlas), or "LABEL-orientation" where the input has
    # several classes (prepare() sets views_only when it has one: a flat folder, a single file)
    orientations: tuple[str, ...] = ("axial",)
    views_only: bool = False
    workers: int = 0  # 0 = one per CPU core (at most 8)
    source: SourceOptions = field(default_factory=SourceOptions)


@dataclass
class Item:
    id: str
    image: np.ndarray
    mask: np.ndarray | None
    label: str
    roi: str
    group: str
    split: str | None
    source: str
    mask_source: str
    extra: dict


@dataclass
class PrepareSummary:
    out: str
    n_items: int
    n_rejected: int
    counts: dict
    preview: str


def _read(record: Record, opts: PrepareOptions) -> np.ndarray:
    """Every format through the same checks (``medgen.data.io``): DICOM files and series included."""
    if record.kind == "series" and len(record.paths) > 1:
        from medgen.data.dicom import DicomSeries, read_series

        return read_series(DicomSeries(uid=record.group, files=[Path(p) for p in record.paths]), rgb=opts.rgb, voi=opts.voi)
    from medgen.data.io import read_image

    path = Path(record.paths[0])
    if record.kind == "series":  # a DICOM file whatever its suffix
        from medgen.data.dicom import read_dicom

        return read_dicom(path, rgb=opts.rgb, voi=opts.voi)
    return read_image(path, rgb=opts.rgb, voi=opts.voi)


def _read_mask(record: Record) -> np.ndarray:
    """The record's mask; its problems name the mask file, not the image."""
    from medgen.data.io import read_image

    try:
        return read_image(record.mask)[:1]
    except InputFileError as err:
        reason = str(err).removeprefix(f"{err.path}: ") if err.path else str(err)
        raise InputFileError(f"mask {record.mask}: {reason}", record.source) from None


def _builtin_items(record: Record, size: tuple[int, ...]) -> list[Item]:
    from medgen.data.builtin import get_builtin

    name, index, seed = record.builtin  # type: ignore[misc]
    s = get_builtin(name).item(index, seed, size)
    mask = None if s.mask is None else s.mask[None].astype(np.uint8)
    return [Item(record.id, s.image[None].astype(np.float32), mask, s.label, "", record.group, None,
                 record.source, "", dict(s.extra))]


def process_record(record: Record, opts: PrepareOptions) -> tuple[list[Item], list[tuple[str, str]]]:
    """Read, crop, slice, resize and normalise one record. Returns its items and any rejections.
    ``train-max`` images come back unnormalised: their divisor is known only once every image is in."""
    items, rejected = _record_items(record, opts)
    normalizer = Normalizer.parse(opts.normalize)
    if normalizer.per_image:
        for it in items:
            it.image = normalizer(it.image)
    return items, rejected


def _record_items(record: Record, opts: PrepareOptions) -> tuple[list[Item], list[tuple[str, str]]]:
    size = tuple(opts.size or DEFAULT_SIZE)
    try:
        if record.kind == "builtin":
            return _builtin_items(record, size), []
        image = _read(record, opts)
        mask = None
        if record.mask:
            mask = _read_mask(record)
            if mask.shape[1:] != image.shape[1:]:
                raise InputFileError(f"mask shape {mask.shape[1:]} differs from image shape {image.shape[1:]}", record.mask)
            mask = (mask > 0).astype(np.float32)
        spatial = image.shape[1:]
        if record.roi is not None:
            if len(spatial) != 2:
                raise InputFileError(f"ROI boxes need 2D images, got shape {spatial}", record.source)
            try:
                box = check_box(record.roi, *spatial)
            except RoiError as err:
                raise InputFileError(str(err), record.source) from None
            image = crop_box(image, box)
            mask = None if mask is None else crop_box(mask, box)
        roi = format_box(record.roi)
        if len(size) == 3 and len(spatial) == 2:
            raise InputFileError(f"2D image {spatial}, but --size {size} asks for volumes", record.source)
        if len(size) == 2 and len(spatial) == 3:
            return _slices(record, image, mask, size, opts, roi)
        out = resize(image, size, keep_aspect=opts.keep_aspect and len(size) == 2)
        out_mask = None if mask is None else (resize(mask, size, keep_aspect=opts.keep_aspect and len(size) == 2, nearest=True) > 0.5).astype(np.uint8)
        return [Item(record.id, out, out_mask, record.label, roi, record.group, record.split, record.source,
                     record.mask or "", record.extra)], []
    except InputFileError as err:
        return [], [(record.source, str(err).removeprefix(f"{err.path}: ") if err.path else str(err))]
    except (MemoryError, ValueError, RuntimeError, OSError, OverflowError) as err:  # a reader tripping on a malformed file
        from medgen.errors import one_line

        return [], [(record.source, f"cannot process ({one_line(err)})")]


def _slices(record, volume, mask, size, opts, roi):
    """2D items from a volume: its slices in each of ``opts.orientations`` (axial only by default)
    with enough foreground. Coronal and sagittal slices need a NIfTI volume, whose header gives the
    anatomical orientation and the voxel size: they are resampled to square pixels first, since a
    clinical volume's slices are often 3-5x thicker than its pixels (axial slices are used as stored)."""
    from medgen.data.io import NIFTI, nifti_voxel_size, suffix_of

    items, rejected = [], []
    several = len(opts.orientations) > 1
    spacing = None
    if set(opts.orientations) - {"axial"}:
        if suffix_of(Path(record.paths[0])) not in NIFTI:
            return [], [(record.source, "coronal and sagittal slices need a NIfTI volume (its header gives the orientation "
                                        "and voxel size); this volume can only be sliced axially")]
        spacing = nifti_voxel_size(Path(record.paths[0]))
    for orientation in opts.orientations:
        letter, axis = SLICE_AXES[orientation]
        label = record.label
        if several:
            label = orientation if opts.views_only else f"{record.label}-{orientation}"
        pixel = None if spacing is None or orientation == "axial" else tuple(spacing[a - 1] for a in (1, 2, 3) if a != axis)
        skipped = 0
        for k in range(volume.shape[axis]):
            sl = np.take(volume, k, axis=axis)
            background = sl.min()
            if np.mean(sl > background + 1e-6 * (abs(background) + 1)) < opts.min_foreground:
                skipped += 1
                continue
            m = None if mask is None else np.take(mask, k, axis=axis)
            if pixel is not None:
                sl, m = _square_pixels(sl, pixel), None if m is None else _square_pixels(m, pixel, nearest=True)
            m = None if m is None else (resize(m, size, opts.keep_aspect, nearest=True) > 0.5).astype(np.uint8)
            items.append(Item(f"{record.id}_{letter}{k:03d}", resize(sl, size, opts.keep_aspect), m, label, roi,
                              record.group, record.split, f"{record.source}#{letter}={k}", record.mask or "", record.extra))
        if skipped:
            what = f"{orientation} slices" if several else "slices"
            rejected.append((record.source, f"{skipped} of {volume.shape[axis]} {what} skipped: less than "
                                            f"{opts.min_foreground:.0%} foreground"))
    return items, rejected


def _square_pixels(sl: np.ndarray, pixel: tuple[float, float], nearest: bool = False) -> np.ndarray:
    """A (C, H, W) slice whose pixels measure ``pixel`` (rows, columns; mm) resampled so that they are
    square, at the finer of the two sizes."""
    finest = min(pixel)
    factors = (1.0, pixel[0] / finest, pixel[1] / finest)
    if max(factors) < 1.01:
        return sl
    from scipy import ndimage as ndi

    return ndi.zoom(sl, factors, order=0 if nearest else 1, grid_mode=True, mode="nearest")


def _check_orientations(opts: PrepareOptions) -> None:
    unknown = [o for o in opts.orientations if o not in SLICE_AXES]
    if unknown or not opts.orientations:
        raise UserError(f"bad orientations {', '.join(unknown) or '(none)'}: expected some of {', '.join(SLICE_AXES)}")
    if len(set(opts.orientations)) != len(opts.orientations):
        raise UserError(f"orientations listed twice: {', '.join(opts.orientations)}")
    if tuple(opts.orientations) != ("axial",) and opts.size is not None and len(opts.size) == 3:
        raise UserError("orientations slice volumes into 2D images: they need a 2D --size (H W)")


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and (out.is_file() or any(out.iterdir())):
        if not force:
            raise UserError("output already exists; use --force to replace it", out)
        if out.is_file():
            raise UserError("output path is a file, not a folder", out)
    parent = out.parent if out.parent != Path("") else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise UserError("cannot write here (permission denied)", parent)


def prepare(source: str, out: str | Path, opts: PrepareOptions | None = None, force: bool = False) -> PrepareSummary:
    """Prepare ``source`` into the dataset directory ``out``. See the module docstring."""
    opts = opts or PrepareOptions()
    _check_orientations(opts)
    out = Path(out)
    _check_out(out, force)
    # one preparation per output folder at a time: a second is refused, naming the first's pid
    with acquire_lock(_parent(out) / f".{out.name}.lock", f"output folder {out}"):
        remove_stale_temporaries(out)  # left by a killed run: none can be live while the lock is held
        return _prepare(source, out, opts, force)


def _parent(out: Path) -> Path:
    return out.parent if str(out.parent) else Path(".")


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove the ``.NAME.tmp-*`` folders a killed preparation of ``out`` left behind."""
    prefix = f".{out.name}.tmp-"
    stale = [p for p in _parent(out).iterdir() if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _prepare(source: str, out: Path, opts: PrepareOptions, force: bool) -> PrepareSummary:
    from medgen.data.builtin import get_builtin

    normalizer = Normalizer.parse(opts.normalize)
    builtin = source.startswith("builtin:")  # generated at the asked size: never resized
    if opts.size is None and builtin:
        opts.size = tuple(get_builtin(source.split(":", 1)[1]).default_size)
    opts.size = tuple(opts.size or DEFAULT_SIZE)
    if len(opts.size) not in (2, 3) or min(opts.size) < 2:
        raise UserError(f"--size must be H W or D H W with sizes >= 2, got {opts.size}")
    opts.source.seed = opts.seed
    workers = opts.workers or min(os.cpu_count() or 1, 8)
    opts.source.workers = workers
    if workers > 1 and not builtin:
        preload_resize()

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent if str(out.parent) else "."))
    try:
        images_path = tmp / "images.npy"
        with shared_pool(workers):  # the DICOM listing and the files' work fork their workers once
            records, rejected = list_records(source, opts.source)
            if len(opts.orientations) > 1:
                opts = dataclasses.replace(opts, views_only=len({r.label for r in records}) == 1)
            # images.npy: float32, one row per record at least
            check_free_space(out, len(records) * (3 if opts.rgb else 1) * int(np.prod(opts.size)) * 4, "the prepared images")
            items_meta, maxima, mask_rows, shape = _write_images(images_path, records, opts, workers, normalizer, rejected)
        if not items_meta:
            reasons = "; ".join(f"{Path(s).name}: {r}" for s, r in rejected[:3])
            raise UserError(f"no usable images in {source} ({len(rejected)} rejected: {reasons})")

        splits = assign_splits([it.label for it in items_meta], [it.group for it in items_meta],
                               [it.split for it in items_meta], opts.split, opts.seed)
        if normalizer.per_image:
            images = np.load(images_path, mmap_mode="r")
        else:  # train-max: the divisor comes from the training split, so it is applied now, in place
            normalizer = normalizer.fit(max((m for m, s in zip(maxima, splits) if s == "train"), default=max(maxima)))
            images = np.load(images_path, mmap_mode="r+")
            for i in range(0, len(images), 64):
                images[i:i + 64] = normalizer(np.asarray(images[i:i + 64]))
        if mask_rows:
            masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(shape[0], 1, *opts.size))
            masks[:] = 0
            for i, m in mask_rows.items():
                masks[i] = m
            del masks  # closing the map leaves its pages to the kernel (a flush would wait for the disk)

        _write_index(tmp, items_meta, splits, mask_rows)
        _write_rejected(tmp, rejected)
        from medgen.data.preview import write_preview

        stats = _stats(images, items_meta, splits, normalizer, opts, source, bool(mask_rows))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))  # the preview reads it
        # The content hash and the intensity statistics run in threads beside the preview: hashlib
        # and numpy let go of the GIL, matplotlib mostly holds it. stats.json gets both at the end.
        with ThreadPoolExecutor(2) as pool:
            digest = pool.submit(content_hash, tmp)
            intensity = pool.submit(_intensity, images, splits)
            write_preview(tmp, title=out.name)
            stats["intensity"], stats["content_hash"] = intensity.result(), digest.result()
        del images
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes an owner-only folder
        if out.exists():
            _check_out(out, force)  # something else may have written it meanwhile: checked again
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareSummary(str(out), len(items_meta), len(rejected), stats["counts"], str(out / "preview.png"))


def _write_images(images_path: Path, records: list[Record], opts: PrepareOptions, workers: int, normalizer,
                  rejected: list[tuple[str, str]]) -> tuple[list[Item], list[float], dict[int, np.ndarray], tuple]:
    """Every record's images, read in ``workers`` processes, into ``images_path`` as they arrive,
    behind room for its header: the number of images is known only at the end (volumes give many
    slices, files get rejected). Returns the items (their arrays dropped: the bytes are on disk),
    each image's maximum where the normaliser needs it, the masks by row, and the array's shape.
    Rejected inputs are appended to ``rejected``."""
    items_meta: list[Item] = []
    maxima: list[float] = []
    mask_rows: dict[int, np.ndarray] = {}
    channels, shape = None, ()
    with open(images_path, "wb") as f, progress_bar("prepare", len(records)) as advance:
        for items, rej in process_map(process_record, records, workers, [opts] * len(records)):
            rejected += rej
            for it in items:
                if channels is None:
                    channels = it.image.shape[0]
                    room = f.write(_npy_header((0, channels, *opts.size)))
                if it.image.shape[0] != channels:
                    rejected.append((it.source, f"{it.image.shape[0]} channels, but earlier images have {channels}"))
                    continue
                f.write(np.ascontiguousarray(it.image, dtype=np.float32).tobytes())
                if it.mask is not None:
                    mask_rows[len(items_meta)] = it.mask
                if not normalizer.per_image:
                    maxima.append(float(it.image.max()))
                it.label = spreadsheet_safe(it.label)  # the same label in index.csv, stats.json and runs
                it.image = None  # type: ignore[assignment] - free memory; the bytes are on disk
                it.mask = None
                items_meta.append(it)
            advance()
        if items_meta:
            shape = (len(items_meta), channels, *opts.size)
            header = _npy_header(shape)
            if len(header) != room:  # only if numpy stopped padding the header for axis 0 to grow
                raise RuntimeError(f"the .npy header for {shape} does not fit the room left for it")
            f.seek(0)
            f.write(header)
    return items_meta, maxima, mask_rows, shape


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The .npy header of a C-order float32 array. numpy leaves room in it for the first axis to
    grow to 21 digits, so a placeholder written for 0 images has the length of the final one."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _write_index(folder: Path, items: list[Item], splits: list[str], mask_rows: dict) -> None:
    import pandas as pd

    rows = []
    for i, (it, split) in enumerate(zip(items, splits)):
        rows.append({"id": it.id, "source": it.source, "label": it.label, "split": split, "roi": it.roi,
                     "mask": (it.mask_source or "inline") if i in mask_rows else "", "group": it.group, **it.extra})
    pd.DataFrame(rows).map(spreadsheet_safe).to_csv(folder / "index.csv", index=False)


def _write_rejected(folder: Path, rejected: list[tuple[str, str]]) -> None:
    import pandas as pd

    pd.DataFrame(rejected, columns=["source", "reason"]).map(spreadsheet_safe).to_csv(folder / "rejected.csv", index=False)


def _stats(images, items, splits, normalizer, opts, source, has_masks) -> dict:
    """stats.json, its intensity statistics still empty (``_intensity`` fills them)."""
    labels = sorted({it.label for it in items})
    counts: dict = {s: {lab: 0 for lab in labels} for s in ("train", "val", "test")}
    for it, s in zip(items, splits):
        counts[s][it.label] += 1
    from medgen import __version__

    return {
        "source": source, "medgen_version": __version__, "n": len(items), "channels": int(images.shape[1]),
        "size": list(opts.size), "spatial_dims": len(opts.size), "labels": labels, "counts": counts,
        "normalize": normalizer.to_json(), "keep_aspect": opts.keep_aspect, "split_fractions": list(opts.split),
        "seed": opts.seed, "has_masks": has_masks, "intensity": {},
        **({"orientations": list(opts.orientations)} if tuple(opts.orientations) != ("axial",) else {}),
    }


def _intensity(images, splits) -> dict:
    """Intensity statistics of each split, from about 256 of its images spread over it."""
    intensity = {}
    for s in ("train", "val", "test"):
        idx = [i for i, sp in enumerate(splits) if sp == s]
        if idx:
            sample = np.stack([np.asarray(images[i]) for i in idx[:: max(1, len(idx) // 256)]])
            p01, p99 = np.percentile(sample, [1, 99])  # one partition for both
            intensity[s] = {"min": float(sample.min()), "max": float(sample.max()), "mean": float(sample.mean()),
                            "std": float(sample.std()), "p01": float(p01), "p99": float(p99)}
    return intensity


def content_hash(folder: Path) -> str:
    """SHA-256 over the index and the arrays: identifies exactly which data a run used."""
    h = hashlib.sha256()
    for name in ("index.csv", "images.npy", "masks.npy"):
        p = folder / name
        if p.exists():
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()
