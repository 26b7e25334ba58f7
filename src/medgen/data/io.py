"""Read medical and ordinary image files into float32 arrays, channel first.

Every reader returns ``(C, *spatial)``: C is 1 for grey (the default) or 3 for RGB when
``rgb=True``; spatial is (H, W) for 2D images and (D, H, W) for volumes and multi-frame files.
Problems with one file raise InputFileError naming the file, so the caller can reject it.

Every reader goes through the same checks (``read_image``; DICOM series through ``check_array``):
regular files only (a device or a pipe would hang the reader), image size from the header
against the pixel limit *before* decoding, and after decoding no empty, 1-pixel or non-finite
image. The pixel limit is the environment variable ``MEDGEN_MAX_PIXELS``: the most pixels in one
2D image, slice or frame (default 50 million, e.g. 7000 x 7000); a whole file (a volume or a
multi-frame object) may hold 16 times that.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from medgen.errors import InputFileError, one_line

PNG_LIKE = {".png", ".jpg", ".jpeg", ".bmp"}
TIFF = {".tif", ".tiff"}
NIFTI = {".nii", ".nii.gz"}
NUMPY = {".npy"}
DICOM = {".dcm", ".dicom", ".ima", ""}
IMAGE_SUFFIXES = PNG_LIKE | TIFF | NIFTI | NUMPY | {".dcm", ".dicom", ".ima"}
MAX_PIXELS_ENV = "MEDGEN_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000
VOLUME_FACTOR = 16  # a file may hold this many times the per-image limit (volumes, multi-frame)


def max_pixels() -> int:
    """The pixel limit of one 2D image or slice (``MEDGEN_MAX_PIXELS``, default 50 million)."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        value = 0
    if value < 4:
        from medgen.errors import UserError

        raise UserError(f"{MAX_PIXELS_ENV}={raw!r} is not a pixel count (a whole number >= 4, e.g. 50000000)")
    return value


def check_size(shape: tuple[int, ...], path: Path) -> None:
    """Refuse an image whose header declares more pixels than the limit, before anything is decoded
    (a 65-byte PNG can declare 30000 x 30000; a 140 KB one takes minutes and gigabytes to decode)."""
    dims = [int(d) for d in shape]
    if len(dims) < 2:
        return
    limit = max_pixels()
    plane = dims[-1] * dims[-2]
    total = 1
    for d in dims:
        total *= d
    if plane > limit or total > limit * VOLUME_FACTOR:
        size = "x".join(map(str, dims))
        raise InputFileError(f"image of {size} pixels is larger than the limit of {limit} pixels per image "
                             f"(set {MAX_PIXELS_ENV} to raise it)", path)


def check_array(arr: np.ndarray, path: Path) -> np.ndarray:
    """The checks every decoded image passes, whatever its reader."""
    if arr.size == 0 or arr.ndim < 3 or min(arr.shape[1:]) < 2:
        raise InputFileError(f"image is empty or too small ({tuple(arr.shape[1:])})", path)
    if not np.isfinite(arr).all():
        raise InputFileError("image contains NaN or infinite values", path)
    return arr


def check_regular_file(path: Path, what: str = "file") -> None:
    if not path.exists():
        raise InputFileError(f"{what} not found", path)
    if path.is_dir():
        raise InputFileError(f"{what} is a folder, not an image file", path)
    if not path.is_file():
        raise InputFileError(f"{what} is not a regular file (a device, pipe or socket)", path)


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _to_channels(arr: np.ndarray, rgb: bool, path: Path) -> np.ndarray:
    """(H, W[, C]) -> (C, H, W); grey unless rgb is asked for. Alpha is dropped."""
    if arr.ndim == 2:
        grey = arr[None]
        return np.repeat(grey, 3, axis=0) if rgb else grey
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        colour = arr[..., :3].astype(np.float32)
        if rgb:
            return np.moveaxis(colour, -1, 0)
        # ITU-R 601 luma, the same weights as Pillow's convert("L").
        return (colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[None]
    if arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha
        return _to_channels(arr[..., 0], rgb, path)
    raise InputFileError(f"unsupported image layout {arr.shape}", path)


def read_pil(path: Path, rgb: bool = False) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: the size is checked here instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:  # far above Pillow's limit, so above ours too
        raise InputFileError(f"image is larger than the limit of {max_pixels()} pixels per image "
                             f"(set {MAX_PIXELS_ENV} to raise it)", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputFileError(f"cannot read image ({one_line(err)})", path) from err
    try:
        with img:
            check_size((img.size[1], img.size[0]), path)
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("L" if img.mode == "1" else "RGB")
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputFileError(f"cannot read image ({one_line(err)})", path) from err
    return _to_channels(arr, rgb, path).astype(np.float32)


def read_tiff(path: Path, rgb: bool = False) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            check_size(tif.series[0].shape if tif.series else tif.pages[0].shape, path)
            arr = tif.asarray()
    except InputFileError:
        raise
    except Exception as err:  # tifffile raises many types on corrupt files
        raise InputFileError(f"cannot read TIFF ({one_line(err)})", path) from err
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4):
        return arr.astype(np.float32)[None]  # a stack of pages: a volume
    return _to_channels(arr, rgb, path).astype(np.float32)


def read_numpy(path: Path, rgb: bool = False) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        check_size(arr.shape, path)
        arr = np.array(arr)
    except InputFileError:
        raise
    except Exception as err:
        raise InputFileError(f"cannot read .npy ({one_line(err)})", path) from err
    if not np.issubdtype(arr.dtype, np.number):
        raise InputFileError(f"array of dtype {arr.dtype} is not numeric", path)
    arr = np.squeeze(arr)
    if arr.ndim not in (2, 3):
        raise InputFileError(f"expected a 2D image or 3D volume, got shape {arr.shape}", path)
    return arr.astype(np.float32)[None]


def read_nifti(path: Path, rgb: bool = False) -> np.ndarray:
    """A NIfTI volume in closest-canonical (RAS) orientation as (D, H, W) = (S->I... see below).

    The array is reordered to (z, y, x) with y and z flipped so that an axial slice
    ``vol[k]`` displays anterior up, like a radiology viewer.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        check_size(tuple(d for d in img.shape if d > 1)[:3], path)
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except InputFileError:
        raise
    except Exception as err:
        raise InputFileError(f"cannot read NIfTI ({one_line(err)})", path) from err
    data = np.squeeze(data)
    if data.ndim == 4:
        raise InputFileError(f"4D NIfTI with {data.shape[-1]} volumes; give one volume per file", path)
    if data.ndim == 2:
        return np.ascontiguousarray(np.flipud(data.T))[None]
    if data.ndim != 3:
        raise InputFileError(f"unsupported NIfTI shape {data.shape}", path)
    if not np.isfinite(data).all():
        raise InputFileError("volume contains NaN or infinite values", path)
    vol = np.transpose(data, (2, 1, 0))[::-1, ::-1, :]  # (x,y,z) RAS -> (z,y,x), superior & anterior first
    return np.ascontiguousarray(vol)[None]


def nifti_voxel_size(path: Path) -> tuple[float, float, float]:
    """The voxel size of a NIfTI volume in :func:`read_nifti`'s (z, y, x) layout, from its header
    alone (``as_closest_canonical`` would read and reorder the whole volume again)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        zooms = img.header.get_zooms()[:3]
        to_ras = nib.orientations.io_orientation(img.affine)[:, 0]  # stored axis i is RAS axis to_ras[i]
    except Exception as err:
        raise InputFileError(f"cannot read the NIfTI header ({one_line(err)})", path) from err
    if len(zooms) < 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
        raise InputFileError(f"NIfTI header gives no usable voxel size ({tuple(map(float, zooms))})", path)
    ras = [0.0, 0.0, 0.0]
    for axis, z in zip(to_ras, zooms):
        ras[int(axis)] = float(z)
    return ras[2], ras[1], ras[0]


def read_image(path: str | Path, rgb: bool = False, voi: str = "auto") -> np.ndarray:
    """Read any supported file into a float32 (C, *spatial) array (``voi``: DICOM only, see
    ``medgen.data.dicom``). The one entry point for single files: every format gets the same checks."""
    path = Path(path)
    check_regular_file(path)
    suffix = suffix_of(path)
    if suffix in PNG_LIKE:
        arr = read_pil(path, rgb)
    elif suffix in TIFF:
        arr = read_tiff(path, rgb)
    elif suffix in NIFTI:
        arr = read_nifti(path, rgb)
    elif suffix in NUMPY:
        arr = read_numpy(path, rgb)
    else:
        from medgen.data.dicom import read_dicom

        return read_dicom(path, rgb, voi)  # checked there: series slices are read the same way
    return check_array(arr, path)
