"""Shared fixtures: small real-format files made on the fly (PNG 8/16-bit, TIFF, DICOM CT series,
MG with MONOCHROME1 and VOI window, multi-frame, NIfTI, an EMBED-style manifest with bad rows)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def write_dicom(path: Path, pixels: np.ndarray, *, modality="CT", slope=1.0, intercept=0.0, photometric="MONOCHROME2",
                window=None, series_uid=None, position=None, instance=1, frames=None, patient_name="Doe^Jane"):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = "PID-12345"
    ds.Modality = modality
    ds.InstanceNumber = instance
    arr = np.asarray(pixels, dtype=np.uint16)
    if frames:
        ds.NumberOfFrames = arr.shape[0]
        rows, cols = arr.shape[1:]
    else:
        rows, cols = arr.shape
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if position is not None:
        ds.ImagePositionPatient = [0.0, 0.0, float(position)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelData = arr.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture
def png_classes(tmp_path):
    """Class folders with non-square 16-bit PNGs (and one 8-bit RGB), plus a stray text file."""
    from PIL import Image

    root = tmp_path / "pngs"
    rng = np.random.default_rng(0)
    for label in ("normal", "tumor"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            arr = (rng.random((40, 70)) * 60000).astype(np.uint16)
            arr[10:20, 30:40] = 65535 if label == "tumor" else arr[10:20, 30:40]
            Image.fromarray(arr).save(root / label / f"img{i}.png")
    Image.fromarray((rng.random((30, 30, 3)) * 255).astype(np.uint8)).save(root / "normal" / "colour.png")
    (root / "tumor" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def ct_series(tmp_path):
    """A 12-slice CT series in HU (slope 1, intercept -1024), files named out of order."""
    from pydicom.uid import generate_uid

    root = tmp_path / "dicom" / "ct"
    root.mkdir(parents=True)
    uid = generate_uid()
    for k in range(12):
        img = np.full((48, 48), 1024 - 1000, dtype=np.uint16)  # air
        img[8:40, 8:40] = 1024 + 40 + k  # soft tissue whose value encodes the slice
        write_dicom(root / f"slice_{(k * 7) % 12:02d}.dcm", img, intercept=-1024.0, series_uid=uid, position=k * 2.5, instance=k + 1)
    return tmp_path / "dicom"


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    """40 breast-phantom ROIs at 32x32 (3 classes, cohorts class0/beta)."""
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions

    out = tmp_path_factory.mktemp("data") / "ph"
    prepare("builtin:breast-phantom", out, PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=40)))
    return out


@pytest.fixture(scope="session")
def ldm_run(phantom, tmp_path_factory):
    """A finished tiny class-conditional latent diffusion run on ``phantom``."""
    from medgen.training import train

    out = tmp_path_factory.mktemp("runs") / "ldm"
    train("mammo-roi-ldm", phantom, out, profile="tiny", overrides=["model.conditional=true"], echo=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of small convolutions (``pytestmark = pytest.mark.usefixtures(...)``):
    on a 2-core machine shared with other jobs, two OpenMP threads made them up to 100x slower
    (measured); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mask_lesions(tmp_path_factory):
    """32 brain-lesion slices at 32x32 with their masks (the mask-conditioned tests share them)."""
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions

    out = tmp_path_factory.mktemp("data") / "mask-lesions"
    prepare("builtin:brain-lesions", out, PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=32)))
    return out


@pytest.fixture(scope="session")
def mask_run(mask_lesions, tmp_path_factory):
    """A finished tiny ``brain-lesion-mask-ddpm`` run on ``mask_lesions``."""
    from medgen.training import train

    out = tmp_path_factory.mktemp("runs") / "mask"
    train("brain-lesion-mask-ddpm", mask_lesions, out, profile="tiny", echo=lambda *a: None)
    return out
