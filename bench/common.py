"""Shared helpers for the benchmarks: timing medians, peak memory, JSON output.

Every figure is one JSON line (``figure()``): the medgen value, the value of a plain reference
implementation of the same work measured in the same process run, their ratio, the target and
whether the measured ratio meets it (``target_met``, computed here from the numbers, never set by
hand; ``null`` where the issue sets no target), and the machine.

``BENCH_QUICK=1`` cuts repeats and sizes for a sanity run; its figures are not the reported ones.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import statistics
import sys
import time

def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to something other than empty or 0."""
    return os.environ.get(name, "") not in ("", "0")


QUICK = env_flag("BENCH_QUICK")


def pick(full, quick):
    """The full-run value, or the quick (sanity-run) one under BENCH_QUICK=1."""
    return quick if QUICK else full


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: time it to completion


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired_times(fns: dict, repeats: int = 5, warmup: int = 1) -> dict:
    """Seconds of every call of each function, their runs interleaved (A B, B A, A B, ...) so a
    change of load on a shared machine hits medgen and its reference alike; repeat ``r`` of each
    function is at index ``r``, so ratios can be taken per repeat (``median_ratio``)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            _sync()
            t = time.perf_counter()
            fns[n]()
            _sync()
            times[n].append(time.perf_counter() - t)
    return times


def interleaved_times(steps: dict, items: list, passes: int, repeats: int, warmup: int = 0) -> dict:
    """Seconds of each side per repeat, the sides interleaved step by step: a repeat makes
    ``passes`` passes over ``items``, and for every item runs one step of each side back to back
    (``steps[name](item)``, each timed by itself; the order alternates from pass to pass). The
    machine's speed drifts over seconds, and calls of each side one after the other caught that
    drift as a difference between the sides; interleaved, both meet it in every step. ``warmup``
    repeats run first, uncounted (first-use allocations)."""
    names = list(steps)
    times: dict = {n: [] for n in names}
    for r in range(-warmup, repeats):
        total = dict.fromkeys(names, 0.0)
        for p in range(passes):
            order = names if (r * passes + p) % 2 == 0 else names[::-1]
            for item in items:
                for n in order:
                    _sync()
                    t = time.perf_counter()
                    steps[n](item)
                    _sync()
                    total[n] += time.perf_counter() - t
        if r >= 0:
            for n in names:
                times[n].append(total[n])
    return times


def paired_median(fns: dict, repeats: int = 5, warmup: int = 1) -> dict:
    """Median seconds per call of each function, measured by ``paired_times``."""
    return {n: statistics.median(v) for n, v in paired_times(fns, repeats, warmup).items()}


def median_ratio(a: list, b: list) -> tuple[float, list[float]]:
    """The median of the per-repeat ratios a[r] / b[r], and their range. Each pair ran back to back,
    so a slow spell of a noisy machine slows both sides of a pair: the per-pair ratio cancels it,
    where a ratio of the two medians would keep it when it hit the sides unevenly."""
    ratios = [x / y for x, y in zip(a, b)]
    return statistics.median(ratios), [min(ratios), max(ratios)]


class TutorialStep:
    """A plain tutorial's optimiser step (zero_grad, backward, step, loss.item()), with the AMP of
    the MONAI tutorials on a GPU (autocast; GradScaler for fp16). ``amp_dtype``: what medgen's
    StepContext picked for the same run, so both sides use the same precision."""

    def __init__(self, device, amp_dtype):
        import torch

        self.amp_dtype = amp_dtype if device.type == "cuda" else None
        self.device = device
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def autocast(self):
        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step(self, loss, opt):
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
        return loss.item()  # the tutorials log loss.item() every step


class StageData:
    """What ``LatentDiffusion.on_stage_start`` reads of the trainer: the training batches (it encodes
    them once to cache their latents) and a seeded generator."""

    def __init__(self, batches: list):
        import torch

        self.batches, self.generator = batches, torch.Generator().manual_seed(0)

    def train_batches(self):
        yield from self.batches


# --- peak memory ---------------------------------------------------------------------------------

def _proc_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))


def peak_memory_mb(fn) -> tuple[float | None, str]:
    """Peak memory that ``fn()`` adds, in MB, and how it was measured.

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before. CPU (Linux): the
    process's resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) above the
    resident set before; freed heap memory is first given back (malloc_trim) so memory cached from
    earlier work does not hide the peak. psutil is not a dependency; tracemalloc would not see
    torch's allocations (they bypass Python's allocator)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20, "torch.cuda.max_memory_allocated above the allocation before"
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        base = _proc_kb("VmRSS")
    except OSError:
        fn()
        return None, "unavailable (needs Linux /proc/self/clear_refs)"
    fn()
    return (_proc_kb("VmHWM") - base) / 1024, "CPU peak resident set (VmHWM) above the resident set before"


# --- machine and output --------------------------------------------------------------------------

def gpu_options(autocast: str | None = None) -> dict:
    """Which speed options a figure ran with. ``autocast``: the precision the figure autocast to, if
    it did (on CUDA medgen's default; on a CPU only with train.cpu_amp, so a CPU row without it
    says 'n/a (CPU)' rather than a faked 'off'); channels_last, torch.compile and efficient
    attention are opt-in ``train.*`` options, off in every row but bench_speed_options.py's,
    which measures each of them."""
    import torch

    amp = autocast or ("off" if torch.cuda.is_available() else "n/a (CPU)")
    return {"autocast": amp, "channels_last": "off", "torch_compile": "off", "efficient_attention": "off"}


def machine() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "cuda": torch.cuda.get_device_name(0) if cuda else None, "platform": platform.platform(), "quick": QUICK}


def meets(ratio: float, target: str) -> bool:
    """Whether a measured ratio meets a target written as '>= X' or '<= X'."""
    op, value = target.split()
    return ratio >= float(value) if op == ">=" else ratio <= float(value)


def figure(bench: str, name: str, unit: str, medgen, reference, reference_name: str, ratio=None,
           target: str | None = None, **extra) -> dict:
    """One figure: medgen's value and its reference's, ``ratio`` as the target reads it."""
    rec = {"figure": name, "unit": unit, "medgen": medgen, "reference": reference, "reference_name": reference_name,
           "ratio": ratio, "target": target,
           "target_met": None if target is None or ratio is None else meets(ratio, target), **extra}
    emit(bench, {**rec, "machine": machine()})
    return rec


def emit(name: str, result: dict) -> None:
    print(json.dumps({"bench": name, **result}), flush=True)


def arg(name: str, default):
    for a in sys.argv[1:]:
        if a.startswith(f"--{name}="):
            return type(default)(a.split("=", 1)[1])
    return default
