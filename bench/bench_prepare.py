"""Preparation of a 1,000-file PNG folder and a 1,000-file DICOM folder with worker processes (one
per core) against the single-process reader (target: >= 1.6x on 2 cores; the two runs of a repeat
back to back, the ratio the median of 9 repeats' speed-ups; ``BENCH_QUICK=1``: 200 files, one run,
no target).

Both runs do the whole ``medgen data prepare``: listing (for DICOM, reading every header to group
series, in the same worker processes), reading, resizing, normalising and writing the
memory-mapped dataset. Inputs are 16-bit 256x200 images in two class folders, resized to 128x128.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from common import arg, figure, median_ratio, paired_times, pick


def write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path.with_suffix(".png"))


def write_dicom(path: Path, arr: np.ndarray) -> None:
    """A single-frame MONOCHROME2 CT image, as tests/conftest.py writes them (its own series)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "BENCH", 1
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    ds.PixelData = arr.tobytes()
    ds.save_as(str(path.with_suffix(".dcm")), enforce_file_format=True)


def bench_format(kind: str, write, source: str, n: int, repeats: int) -> None:
    from medgen.data.prepare import PrepareOptions, prepare

    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp / "in" / label).mkdir(parents=True)
    for i in range(n):
        write(tmp / "in" / ("a" if i % 2 else "b") / f"{i:04d}", (rng.random((256, 200)) * 4095).astype(np.uint16))
    # one small untimed in-process run first: the imports and first-use setup of the readers would
    # otherwise land on the single-process run (worker processes fork from this process and inherit them)
    (tmp / "warm" / "a").mkdir(parents=True)
    for f in sorted((tmp / "in" / "a").iterdir())[:32]:
        shutil.copy(f, tmp / "warm" / "a")
    prepare(f"{source}:{tmp / 'warm'}", tmp / "out-warm", PrepareOptions(size=(128, 128), workers=1), force=True)

    def run(workers):  # workers=0: one worker process per core, at most 8 (medgen's default)
        return lambda: prepare(f"{source}:{tmp / 'in'}", tmp / f"out{workers}", PrepareOptions(size=(128, 128), workers=workers),
                               force=True)

    runs = paired_times({0: run(0), 1: run(1)}, repeats=repeats, warmup=0)
    shutil.rmtree(tmp)
    ratio, spread = median_ratio(runs[1], runs[0])  # the speed-up in each repeat (its two runs back to back)
    times = {k: statistics.median(v) for k, v in runs.items()}
    workers = min(os.cpu_count() or 1, 8)
    figure("prepare", f"prepare {n} {kind} files ({workers} worker processes vs one process)", "files/s", n / times[0],
           n / times[1], "single-process reader, workers=1", ratio, ">= 1.6" if n >= 1000 else None, ratio_range=spread,
           seconds={"parallel": times[0], "single": times[1]}, workers=workers, repeats=repeats)


def main() -> None:
    n = arg("n", pick(1000, 200))
    repeats = pick(9, 1)
    bench_format("PNG", write_png, "folder", n, repeats)
    bench_format("DICOM", write_dicom, "dicom", n, repeats)


if __name__ == "__main__":
    main()
