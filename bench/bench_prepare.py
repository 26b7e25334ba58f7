"""Preparation of a 1,000-file PNG folder with worker processes against a single-process reader
(target: >= 1.6x on 2 cores)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import arg, emit, machine


def main() -> None:
    from PIL import Image

    from medgen.data.prepare import PrepareOptions, prepare

    n = arg("n", 1000)
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp / "in" / label).mkdir(parents=True)
    for i in range(n):
        Image.fromarray((rng.random((256, 200)) * 65535).astype(np.uint16)).save(tmp / "in" / ("a" if i % 2 else "b") / f"{i}.png")
    timings = {}
    for workers in (1, 0):
        t = time.perf_counter()
        prepare(f"folder:{tmp / 'in'}", tmp / f"out{workers}", PrepareOptions(size=(128, 128), workers=workers), force=True)
        timings[workers] = time.perf_counter() - t
    shutil.rmtree(tmp)
    emit("prepare_png", {"files": n, "single_process_s": timings[1], "parallel_s": timings[0],
                         "files_per_s_parallel": n / timings[0], "speedup": timings[1] / timings[0], "target": ">= 1.6",
                         "machine": machine()})


if __name__ == "__main__":
    main()
