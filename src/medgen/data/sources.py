"""Input sources: turn ``folder:``, ``csv:``, ``dicom:``, ``nifti:`` and ``builtin:`` specs into records.

A record is one thing to read (a file, a DICOM series, a built-in item, one ROI box of an
image). Sources only list; reading happens in ``medgen.data.prepare`` (possibly in worker
processes, so records are plain picklable data). Whatever a source cannot use goes to the
returned rejections with its reason, never silently away.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medgen.data.io import IMAGE_SUFFIXES, NIFTI, suffix_of
from medgen.data.roi import RoiError, parse_boxes
from medgen.errors import UserError

SOURCE_KINDS = ("folder", "csv", "dicom", "nifti", "builtin")
PATH_COLUMNS = ("path", "file", "filename", "image", "image_path", "filepath", "source")
GROUP_COLUMNS = ("patient_id", "patient", "subject", "subject_id", "empi_anon")
SPLITS = ("train", "val", "test")


@dataclass
class Record:
    id: str
    source: str  # what index.csv shows as the input (a path, or builtin:NAME#i)
    kind: str  # "file" | "series" | "builtin"
    paths: tuple[str, ...] = ()
    label: str = "all"
    roi: tuple[int, int, int, int] | None = None  # unchecked [ymin, xmin, ymax, xmax]
    mask: str | None = None
    group: str = ""  # items of one group stay in one split (patient, source volume)
    split: str | None = None  # fixed by the manifest
    builtin: tuple[str, int, int] | None = None  # (name, index, seed)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class SourceOptions:
    label_column: str | None = None
    roi_column: str | None = None
    path_column: str | None = None
    mask_column: str | None = None
    group_column: str | None = None
    n: int | None = None  # built-ins: number of items
    seed: int = 0
    workers: int = 1  # processes for listing (DICOM headers)


def parse_source(spec: str) -> tuple[str, str]:
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in SOURCE_KINDS or not rest:
        raise UserError(
            f"bad --source '{spec}': expected KIND:PATH with KIND one of {', '.join(SOURCE_KINDS)}"
            " (e.g. folder:./images, csv:meta.csv, builtin:mni152)"
        )
    return kind, rest


def list_records(spec: str, opts: SourceOptions) -> tuple[list[Record], list[tuple[str, str]]]:
    kind, rest = parse_source(spec)
    if kind == "builtin":
        return builtin_records(rest, opts), []
    path = Path(rest).expanduser()
    if not path.exists():
        raise UserError(f"{kind} source not found", path)
    if kind == "folder":
        return folder_records(path)
    if kind == "csv":
        return csv_records(path, opts)
    if kind == "dicom":
        return dicom_records(path, opts)
    return nifti_records(path)


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _safe_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _dedupe(records: list[Record]) -> list[Record]:
    seen: dict[str, int] = {}
    for r in records:
        if r.id in seen:
            seen[r.id] += 1
            r.id = f"{r.id}-{seen[r.id]}"
        else:
            seen[r.id] = 0
    return records


def _image_files(folder: Path, recursive: bool) -> tuple[list[Path], list[tuple[str, str]]]:
    files, rejected = [], []
    for p in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if not p.is_file():
            continue
        suffix = suffix_of(p)
        if suffix in IMAGE_SUFFIXES or suffix == "":  # extension-less files are often DICOM
            files.append(p)
        else:
            rejected.append((str(p), f"not an image file (suffix '{suffix}')"))
    return files, rejected


def folder_records(root: Path) -> tuple[list[Record], list[tuple[str, str]]]:
    """Class sub-folders (label = sub-folder name), or a flat folder = one class (its own name)."""
    if root.is_file():
        raise UserError("folder: source must be a folder", root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    records: list[Record] = []
    rejected: list[tuple[str, str]] = []
    if class_dirs:
        for d in class_dirs:
            files, rej = _image_files(d, recursive=True)
            rejected += rej
            records += [_file_record(f, d.name, root) for f in files]
        for p in sorted(root.iterdir()):
            if p.is_file():
                rejected.append((str(p), "file outside the class sub-folders (label unknown)"))
    else:
        files, rejected = _image_files(root, recursive=False)
        records = [_file_record(f, root.resolve().name, root) for f in files]
    if not records and not rejected:
        raise UserError("no image files found", root)
    return _dedupe(records), rejected


def _file_record(f: Path, label: str, root: Path) -> Record:
    rel = f.relative_to(root) if f.is_relative_to(root) else f
    ident = _safe_id(str(rel.with_name(_stem(f))).replace("/", "_"))
    return Record(id=ident, source=str(f), kind="file", paths=(str(f),), label=label, group=str(f))


def _file_problem(f: Path) -> str:
    """Why a manifest's path cannot be read, or '' (regular files only: /dev/zero would never end)."""
    if not f.exists():
        return "file not found"
    if not f.is_file():
        return "a folder, not an image file" if f.is_dir() else "not a regular file (a device, pipe or socket)"
    return ""


def csv_records(path: Path, opts: SourceOptions) -> tuple[list[Record], list[tuple[str, str]]]:
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise UserError(f"cannot read CSV manifest ({err.__class__.__name__}: {err})", path) from None
    columns = list(table.columns)

    def pick(explicit: str | None, candidates: tuple[str, ...], what: str) -> str | None:
        if explicit:
            if explicit not in columns:
                raise UserError(f"{what} column '{explicit}' not in manifest (columns: {', '.join(columns)})", path)
            return explicit
        lower = {c.lower(): c for c in columns}
        return next((lower[c] for c in candidates if c in lower), None)

    path_col = pick(opts.path_column, PATH_COLUMNS, "path")
    if path_col is None:
        raise UserError(f"no image path column (expected one of {', '.join(PATH_COLUMNS)}; columns: {', '.join(columns)})", path)
    label_col = pick(opts.label_column, ("label", "class"), "label")
    roi_col = pick(opts.roi_column, (), "ROI")
    mask_col = pick(opts.mask_column, ("mask", "mask_path"), "mask")
    group_col = pick(opts.group_column, GROUP_COLUMNS, "group")
    split_col = "split" if "split" in columns else None
    base = path.parent
    records: list[Record] = []
    rejected: list[tuple[str, str]] = []
    used = {c for c in (path_col, label_col, roi_col, mask_col, group_col, split_col) if c}
    for row_no, row in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        where = f"{path}:{row_no}"
        raw = str(row[path_col]).strip()
        if not raw:
            rejected.append((where, f"empty '{path_col}' cell"))
            continue
        f = Path(raw).expanduser()
        f = f if f.is_absolute() else base / f
        problem = _file_problem(f)
        if problem:
            rejected.append((str(f), f"{problem} (manifest line {row_no})"))
            continue
        label = str(row[label_col]).strip() if label_col else "all"
        if label_col and not label:
            rejected.append((str(f), f"empty label in column '{label_col}' (manifest line {row_no})"))
            continue
        split = str(row[split_col]).strip().lower() if split_col else None
        if split_col and split not in SPLITS:
            rejected.append((str(f), f"split '{row[split_col]}' is not one of {', '.join(SPLITS)} (manifest line {row_no})"))
            continue
        mask = None
        if mask_col and str(row[mask_col]).strip():
            m = Path(str(row[mask_col]).strip()).expanduser()
            mask = str(m if m.is_absolute() else base / m)
            problem = _file_problem(Path(mask))
            if problem:
                rejected.append((str(f), f"mask {mask}: {problem} (column '{mask_col}', manifest line {row_no})"))
                continue
        extra = {c: str(row[c]) for c in columns if c not in used}
        group = str(row[group_col]) if group_col and str(row[group_col]).strip() else str(f)
        ident = _safe_id(_stem(f))
        common = dict(source=str(f), kind="file", paths=(str(f),), label=label, mask=mask, group=group, split=split, extra=extra)
        if roi_col:
            try:
                boxes = parse_boxes(row[roi_col])
            except RoiError as err:
                rejected.append((str(f), f"{err} (column '{roi_col}', manifest line {row_no})"))
                continue
            for k, box in enumerate(boxes):
                records.append(Record(id=f"{ident}_roi{k}", roi=box, **common))
        else:
            records.append(Record(id=ident, **common))
    if not records and not rejected:
        raise UserError("manifest has no rows", path)
    return _dedupe(records), rejected


def dicom_records(root: Path, opts: SourceOptions) -> tuple[list[Record], list[tuple[str, str]]]:
    """One record per series; label = first sub-folder under root (or 'all'), or a DICOM attribute."""
    from medgen.data.dicom import scan_series

    series, rejected = scan_series(root, workers=opts.workers)
    records = []
    for s in series:
        first = s.files[0]
        rel = first.relative_to(root) if root.is_dir() else Path(first.name)
        label = rel.parts[0] if len(rel.parts) > 1 else "all"
        if opts.label_column:
            import pydicom

            value = pydicom.dcmread(str(first), stop_before_pixels=True, force=True).get(opts.label_column)
            if value is None:
                rejected.append((str(first), f"DICOM attribute '{opts.label_column}' (label) missing"))
                continue
            label = str(value)
        src = str(first) if len(s.files) == 1 else str(first.parent)
        ident = _safe_id(str(rel.with_name(_stem(first))).replace("/", "_")) if len(s.files) == 1 else _safe_id(str(rel.parent).replace("/", "_") or root.name)
        records.append(Record(id=ident, source=src, kind="series", paths=tuple(map(str, s.files)), label=label, group=s.uid))
    if not records and not rejected:
        raise UserError("no DICOM files found", root)
    return _dedupe(records), rejected


def nifti_records(root: Path) -> tuple[list[Record], list[tuple[str, str]]]:
    if root.is_file():
        files, rejected = [root], []
        base = root.parent
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and suffix_of(p) in NIFTI)
        rejected = [(str(p), f"not a NIfTI file (suffix '{suffix_of(p)}')") for p in sorted(root.rglob("*"))
                    if p.is_file() and suffix_of(p) not in NIFTI]
        base = root
    records = []
    for f in files:
        rel = f.relative_to(base)
        label = rel.parts[0] if len(rel.parts) > 1 else "all"
        records.append(Record(id=_safe_id(_stem(f)), source=str(f), kind="file", paths=(str(f),), label=label, group=str(f)))
    if not records and not rejected:
        raise UserError("no NIfTI files found", root)
    return _dedupe(records), rejected


def builtin_records(spec: str, opts: SourceOptions) -> list[Record]:
    from medgen.data.builtin import get_builtin

    builtin = get_builtin(spec)
    n = opts.n or builtin.default_n
    return [
        Record(id=f"{spec}-{i:05d}", source=f"builtin:{spec}#{i}", kind="builtin", builtin=(spec, i, opts.seed), group=str(i))
        for i in range(n)
    ]
