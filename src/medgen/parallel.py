"""One way to spread independent per-item work over worker processes (preparation, DICOM headers,
radiomics features)."""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator, Sequence


def _one_thread() -> None:
    """One process per core: torch's own threads would only contend. Without importing torch where
    the work does not need it (a worker that imports it later, e.g. through MONAI, reads the variable)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def process_map(fn: Callable, items: Sequence, workers: int, *extra: Iterable, min_items: int = 16) -> Iterator:
    """``fn(item, *extra_items)`` for every item, yielded in order. In this process when ``workers`` <= 1
    or there are fewer than ``min_items`` items (a pool costs more than it saves); otherwise in a
    process pool, forked where the platform can (workers inherit the imports instead of redoing them)."""
    if workers <= 1 or len(items) < min_items:
        yield from map(fn, items, *extra)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread) as pool:
        yield from pool.map(fn, items, *extra, chunksize=max(1, min(32, len(items) // (workers * 8))))
