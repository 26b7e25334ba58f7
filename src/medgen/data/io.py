"""Read medical and ordinary image files into float32 arrays, channel first.

Every reader returns ``(C, *spatial)``: C is 1 for grey (the default) or 3 for RGB when
``rgb=True``; spatial is (H, W) for 2D images and (D, H, W) for volumes and multi-frame files.
Problems with one file raise InputFileError naming the file, so the caller can reject it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.errors import InputFileError

PNG_LIKE = {".png", ".jpg", ".jpeg", ".bmp"}
TIFF = {".tif", ".tiff"}
NIFTI = {".nii", ".nii.gz"}
NUMPY = {".npy"}
DICOM = {".dcm", ".dicom", ".ima", ""}
IMAGE_SUFFIXES = PNG_LIKE | TIFF | NIFTI | NUMPY | {".dcm", ".dicom", ".ima"}


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
        with Image.open(path) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("L" if img.mode == "1" else "RGB")
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputFileError(f"cannot read image ({err.__class__.__name__}: {err})", path) from None
    return _to_channels(arr, rgb, path).astype(np.float32)


def read_tiff(path: Path, rgb: bool = False) -> np.ndarray:
    import tifffile

    try:
        arr = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types on corrupt files
        raise InputFileError(f"cannot read TIFF ({err.__class__.__name__}: {err})", path) from None
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] not in (2, 3, 4):
        return arr.astype(np.float32)[None]  # a stack of pages: a volume
    return _to_channels(arr, rgb, path).astype(np.float32)


def read_numpy(path: Path, rgb: bool = False) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise InputFileError(f"cannot read .npy ({err.__class__.__name__}: {err})", path) from None
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
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:
        raise InputFileError(f"cannot read NIfTI ({err.__class__.__name__}: {err})", path) from None
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


def read_image(path: str | Path, rgb: bool = False) -> np.ndarray:
    """Read any supported file into a float32 (C, *spatial) array."""
    path = Path(path)
    if not path.exists():
        raise InputFileError("file not found", path)
    if path.is_dir():
        raise InputFileError("is a folder, not an image file", path)
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

        arr = read_dicom(path, rgb)
    if arr.size == 0 or min(arr.shape[1:]) < 2:
        raise InputFileError(f"image is empty or too small ({tuple(arr.shape[1:])})", path)
    if not np.isfinite(arr).all():
        raise InputFileError("image contains NaN or infinite values", path)
    return arr
