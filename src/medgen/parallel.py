"""One way to spread independent per-item work over worker processes (preparation, DICOM headers,
radiomics features)."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterable, Iterator, Sequence

# [workers, pool or None] for each open shared_pool, innermost last
_shared: list[list] = []


def _one_thread() -> None:
    """One process per core: torch's own threads would only contend. Without importing torch where
    the work does not need it (a worker that imports it later, e.g. through MONAI, reads the variable)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _new_pool(workers: int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread)


@contextlib.contextmanager
def shared_pool(workers: int) -> Iterator[None]:
    """Within it, process_map calls for ``workers`` workers share one pool, started at the first
    of them: a job of several parallel phases (a DICOM listing, then the files' work) forks its
    workers once, instead of once a phase (measured in docs/benchmarks.md, *Preparation*)."""
    holder = [workers, None]
    _shared.append(holder)
    try:
        yield
    finally:
        _shared.remove(holder)
        if holder[1] is not None:  # on an error, the chunks not yet started are dropped
            holder[1].shutdown(cancel_futures=True)


def process_map(fn: Callable, items: Sequence, workers: int, *extra: Iterable, min_items: int = 16) -> Iterator:
    """``fn(item, *extra_items)`` for every item, yielded in order. In this process when ``workers`` <= 1
    or there are fewer than ``min_items`` items (a pool costs more than it saves); otherwise in a
    process pool, forked where the platform can (workers inherit the imports instead of redoing them)."""
    if workers <= 1 or len(items) < min_items:
        yield from map(fn, items, *extra)
        return
    chunksize = max(1, min(32, len(items) // (workers * 8)))
    holder = next((h for h in reversed(_shared) if h[0] == workers), None)
    if holder is not None and holder[1] is None:
        holder[1] = _new_pool(workers)
    # a shared pool stays open for the scope's next call; an own one shuts down after this one
    with contextlib.nullcontext(holder[1]) if holder is not None else _new_pool(workers) as pool:
        yield from pool.map(fn, items, *extra, chunksize=chunksize)
