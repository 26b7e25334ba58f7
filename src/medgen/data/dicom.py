"""DICOM through pydicom: modality LUT (rescale), VOI LUT or window, MONOCHROME1, multi-frame, series.

VOI policy (``voi``): ``auto`` applies the file's VOI LUT / window only for projection
radiography (MG, CR, DX, IO, PX, RF, XA), where it is part of how the image is meant to be
seen; CT, MR and PET keep their quantitative values (use ``--normalize window:C,W`` for CT).
``always`` and ``never`` force it.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medgen.data.io import check_array, check_regular_file, check_size
from medgen.errors import InputFileError, one_line
from medgen.parallel import process_map

PROJECTION_MODALITIES = {"MG", "CR", "DX", "IO", "PX", "RF", "XA"}


def _dcmread(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        try:  # files without the 128-byte preamble are common from older scanners
            return pydicom.dcmread(str(path), stop_before_pixels=stop_before_pixels, force=True)
        except Exception as err:
            raise InputFileError(f"not a DICOM file ({one_line(err)})", path) from None
    except Exception as err:
        raise InputFileError(f"cannot read DICOM ({one_line(err)})", path) from None


def pixels(ds, path: Path, rgb: bool = False, voi: str = "auto") -> np.ndarray:
    """Pixel data of a dataset as float32 (C, H, W) or (C, F, H, W) for multi-frame."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputFileError("no DICOM pixel data (corrupt file, or not a DICOM image)", path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    check_size((frames, int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)), path)
    try:
        arr = ds.pixel_array
    except Exception as err:
        raise InputFileError(f"cannot decode DICOM pixel data ({one_line(err)})", path) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    colour = ds.get("SamplesPerPixel", 1) > 1
    if colour:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        arr = arr.astype(np.float32)
        if rgb:
            arr = np.moveaxis(arr, -1, 0)
        else:
            arr = (arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[None]
        return arr
    arr = apply_modality_lut(arr, ds).astype(np.float32)
    modality = str(ds.get("Modality", "")).upper()
    if voi == "always" or (voi == "auto" and modality in PROJECTION_MODALITIES):
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            arr = apply_voi_lut(arr, ds, prefer_lut=True).astype(np.float32)
    if photometric == "MONOCHROME1":
        # MONOCHROME1: low values are bright. Invert so every image reads "higher = brighter".
        arr = arr.max() + arr.min() - arr
    arr = arr[None]
    if rgb:
        arr = np.repeat(arr, 3, axis=0)
    if frames == 1 and arr.ndim == 4:
        arr = arr[:, 0]
    return arr


def read_dicom(path: Path, rgb: bool = False, voi: str = "auto") -> np.ndarray:
    """One DICOM file, with the checks every reader's images pass (``medgen.data.io``)."""
    path = Path(path)
    check_regular_file(path)
    return check_array(pixels(_dcmread(path), path, rgb=rgb, voi=voi), path)


@dataclass
class DicomSeries:
    """One series: its files sorted along the slice axis (a single file for 2D images)."""

    uid: str
    files: list[Path]
    modality: str = ""


def _slice_position(ds) -> float:
    pos = ds.get("ImagePositionPatient")
    orient = ds.get("ImageOrientationPatient")
    if pos is not None and orient is not None and len(orient) == 6:
        normal = np.cross(np.asarray(orient[:3], float), np.asarray(orient[3:], float))
        return float(np.dot(normal, np.asarray(pos, float)))
    return float(ds.get("InstanceNumber", 0) or 0)


def _header(f: Path) -> tuple[str, float, str] | str:
    """(series key, slice position, modality) of one file from its header, or why it is not usable."""
    try:
        ds = _dcmread(f, stop_before_pixels=True)
    except InputFileError as err:
        return str(err).split(": ", 1)[-1]
    if "SOPClassUID" not in ds and "Rows" not in ds:
        return "not a DICOM image (no SOPClassUID/Rows)"
    uid = str(ds.get("SeriesInstanceUID", f"file:{f}"))
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:  # a multi-frame object is its own series
        uid = f"{uid}:{f.name}"
    return uid, _slice_position(ds), str(ds.get("Modality", ""))


def scan_series(root: Path, workers: int = 1) -> tuple[list[DicomSeries], list[tuple[str, str]]]:
    """Group the DICOM files under ``root`` by SeriesInstanceUID, sorted by slice position.

    Returns the series and the (file, reason) pairs that were not usable DICOM images. ``workers``
    > 1 reads the headers in that many processes (the result is the same).
    """
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files = [f for f in files if not (f.name.startswith(".") or f.name.upper() == "DICOMDIR")]
    rejected: list[tuple[str, str]] = []
    groups: dict[str, list[tuple[float, Path]]] = defaultdict(list)
    modality: dict[str, str] = {}
    # reading headers is most of a DICOM listing's time: worker processes for large folders
    for f, head in zip(files, process_map(_header, files, workers, min_items=64)):
        if isinstance(head, str):
            rejected.append((str(f), head))
            continue
        uid, position, modality[uid] = head
        groups[uid].append((position, f))
    series = []
    for uid, items in groups.items():
        items.sort(key=lambda t: t[0])
        series.append(DicomSeries(uid=uid, files=[f for _, f in items], modality=modality[uid]))
    series.sort(key=lambda s: str(s.files[0]))
    return series, rejected


def read_series(series: DicomSeries, rgb: bool = False, voi: str = "auto") -> np.ndarray:
    """A series as (C, H, W) for one 2D file, (C, D, H, W) for several slices or multi-frame."""
    if len(series.files) == 1:
        return read_dicom(series.files[0], rgb=rgb, voi=voi)
    slices = [read_dicom(f, rgb=rgb, voi=voi) for f in series.files]
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise InputFileError(f"series slices differ in shape {sorted(shapes)}", series.files[0].parent)
    return np.stack(slices, axis=1)
