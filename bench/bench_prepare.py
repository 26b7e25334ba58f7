"""Preparation of a 1,000-file PNG folder and a 1,000-file DICOM folder with worker processes (one
per core) against the single-process reader (target: >= 1.6x on 2 cores; the two runs of a repeat
back to back, the ratio the median of 7 repeats' speed-ups; ``BENCH_QUICK=1``: 200 files, one run,
no target).

Both runs do the whole ``medgen data prepare``: listing (for DICOM, reading every header to group
series, in the same worker processes), reading, resizing, normalising and writing the
memory-mapped dataset. Inputs are 16-bit 256x200 images in two class folders, resized to 128x128.

A second figure per format, with no target, times the per-file work alone (read, resize, normalise)
in two processes at once against one process alone: what two cores give that work on this
machine: about the most the first figure's ratio can reach.

For DICOM a third figure, with no target, runs ``medgen data prepare`` from the command line, a
fresh process each time, both ways (3 repeats): what a user waits for, imports and exit included.
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


def bench_format(kind: str, write, source: str, n: int, repeats: int, command_line: bool = False) -> None:
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
    # the inputs just written are still dirty in the page cache: the kernel's flusher would write them
    # back (30 s after) in the middle of the timed runs, taking CPU from the side that uses both cores
    os.sync()

    cpu: dict = {0: [], 1: []}  # CPU seconds of each run: this process and its (joined) worker processes

    def run(workers):  # workers=0: one worker process per core, at most 8 (medgen's default)
        def call():
            before = _cpu_seconds()
            prepare(f"{source}:{tmp / 'in'}", tmp / f"out{workers}", PrepareOptions(size=(128, 128), workers=workers), force=True)
            cpu[workers].append(_cpu_seconds() - before)
        return call

    runs = paired_times({0: run(0), 1: run(1)}, repeats=repeats, warmup=0)
    ceiling_repeats = pick(3, 1)
    ceiling, ceiling_spread, together, alone = parallel_ceiling(f"{source}:{tmp / 'in'}", ceiling_repeats)
    if command_line:
        cli_runs = command_line_times(f"{source}:{tmp / 'in'}", tmp, pick(3, 1))
    shutil.rmtree(tmp)
    ratio, spread = median_ratio(runs[1], runs[0])  # the speed-up in each repeat (its two runs back to back)
    times = {k: statistics.median(v) for k, v in runs.items()}
    workers = min(os.cpu_count() or 1, 8)
    figure("prepare", f"prepare {n} {kind} files ({workers} worker processes vs one process)", "files/s", n / times[0],
           n / times[1], "single-process reader, workers=1", ratio, ">= 1.6" if n >= 1000 else None, ratio_range=spread,
           seconds={"parallel": times[0], "single": times[1]},
           cpu_seconds={"parallel": statistics.median(cpu[0]), "single": statistics.median(cpu[1])}, workers=workers,
           repeats=repeats)
    figure("prepare", f"{kind} per-file work only (read, resize, normalise; 400 files): 2 processes at once vs 1 alone, "
           "one torch thread each", "files/s",
           together, alone, "1 process alone", ceiling, None, ratio_range=ceiling_spread, repeats=ceiling_repeats)
    if command_line:
        ratio, spread = median_ratio(cli_runs[1], cli_runs[0])
        times = {k: statistics.median(v) for k, v in cli_runs.items()}
        figure("prepare", f"medgen data prepare from the command line, {n} {kind} files (a fresh process each: "
               "imports, work, exit): default workers vs --workers 1", "files/s", n / times[0], n / times[1],
               "--workers 1, same command", ratio, None, ratio_range=spread,
               seconds={"parallel": times[0], "single": times[1]}, repeats=len(cli_runs[0]))


def command_line_times(source: str, tmp: Path, repeats: int) -> dict:
    """Seconds of ``medgen data prepare`` as a user runs it, each call a fresh process: the imports
    (torch and MONAI: several seconds), the work and the interpreter's exit, with default workers
    (key 0) and ``--workers 1`` (key 1), interleaved."""
    import subprocess
    import sys

    def run(workers):
        cmd = [sys.executable, "-m", "medgen", "--quiet", "data", "prepare", "--source", source, "--out",
               str(tmp / f"cli{workers}"), "--size", "128", "128", "--workers", str(workers), "--force"]
        return lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    return paired_times({0: run(0), 1: run(1)}, repeats=repeats, warmup=0)


def _cpu_seconds() -> float:
    """User and system CPU time of this process and of its children that have been waited for (a
    process pool's workers are, once it shuts down): more than the wall time where a run keeps
    both cores busy, torch's own threads included."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _work(records, opts) -> float:
    """Seconds one worker process takes for ``records``' per-file work."""
    import time

    from medgen.data.prepare import process_record

    t = time.perf_counter()
    for r in records:
        items, rejected = process_record(r, opts)
        assert items and not rejected, rejected
    return time.perf_counter() - t


def parallel_ceiling(source: str, repeats: int) -> tuple[float, list, float, float]:
    """Throughput of two processes doing the per-file work at once against one doing it alone: the
    ratio, its range, and the two throughputs (files/s). It bounds what the workers can gain:
    the whole preparation adds serial work (listing, the pool's start, statistics, hash, preview),
    and the single-process reference may use a second torch thread. The two cores share the memory
    bus and the L3 cache, so array-heavy work gains less than 2x."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from medgen.data.prepare import PrepareOptions
    from medgen.data.sources import SourceOptions, list_records
    from medgen.parallel import _one_thread

    records = list_records(source, SourceOptions(workers=1))[0][:400]
    opts = PrepareOptions(size=(128, 128))
    _work(records[:16], opts)  # the workers fork from a process that has done the work once
    with ProcessPoolExecutor(2, mp_context=mp.get_context("fork"), initializer=_one_thread) as pool:
        list(pool.map(_work, [records[:32]] * 2, [opts] * 2))  # both workers warm
        alone, together = [], []
        for _ in range(repeats):
            alone.append(pool.submit(_work, records, opts).result())
            together.append(statistics.mean(pool.map(_work, [records] * 2, [opts] * 2)))
    ratio, spread = median_ratio([2 * a for a in alone], together)  # files/s of two at once over one alone
    n = len(records)
    return ratio, spread, 2 * n / statistics.median(together), n / statistics.median(alone)


def main() -> None:
    n = arg("n", pick(1000, 200))
    repeats = pick(7, 1)
    bench_format("PNG", write_png, "folder", n, repeats)
    bench_format("DICOM", write_dicom, "dicom", n, repeats, command_line=True)


if __name__ == "__main__":
    main()
