"""Each opt-in speed option of a training run against the same medgen training step without it,
on the demo's latent-diffusion U-Net (``demo-brain-ldm`` small, diffusion stage: 3x16x16 latents of
64x64 images, batch 32, attention at the second level): ``train.efficient_attention``,
``train.channels_last`` and ``train.compile`` (Inductor); AMP against fp32 is bench_families.py's
row. No targets: the issue asks that these options be used where they help and measured, and this is the
measurement (``ratio`` = the plain step's time over the option's: above 1 the option is faster).

Every row also gives the achieved TFLOP/s: the floating-point operations of one training step
(forward and backward, counted by ``torch.utils.flop_counter.FlopCounterMode``) over its time,
and its peak memory (CUDA: allocated; CPU: resident set).

``train.compile`` runs in child processes with an empty kernel cache of their own: the first
child's first step is the cold compilation, a second child with the cache the first left shows
what the cache saves (``--compile-child CACHE [--first-step-only]`` is that child; it prints one
JSON line). The compile rows run on a GPU, and on a CPU only with ``BENCH_COMPILE=1``: there the
cold compilation alone took 60-100 s (a sixth of the 15-minute budget of ``make bench``) for a step
2-13 % faster (sessions 17-23, docs/benchmarks.md); without it a row says they were not measured.
``BENCH_QUICK=1``: one repeat, and the compile rows are skipped (a sanity run only). About 30 s on
2 CPU cores, 2.5-3 minutes with the compile rows.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from common import QUICK, StageData, env_flag, figure, interleaved_times, median_ratio, peak_memory_mb, pick

PRESET, PROFILE, SIZE, BATCH, STEPS = "demo-brain-ldm", "small", (64, 64), 32, 3
LABELS = ["axial", "coronal", "sagittal"]
REPEATS = pick(3, 1)
COMPILE_REPEATS = 3  # in each compile child: its compiled steps scatter less (1.11-1.22x over 5)
NET = f"{PRESET} {PROFILE} diffusion stage, 3x16x16 latents, batch {BATCH}"


def make_step(overrides: list[str], device):
    """medgen's diffusion-stage training step with the given train.* options, on its own STEPS
    batches (the same for every variant); returns (step function: batch number -> one step, the
    options as the run reports them)."""
    from medgen.config import resolve
    from medgen.engine.context import StepContext
    from medgen.engine.speed import apply_speed_options
    from medgen.models.base import DataInfo, build_model

    cfg = resolve(PRESET, PROFILE, overrides)
    gen = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(BATCH, 1, *SIZE, generator=gen).to(device),
                "label": torch.randint(0, len(LABELS), (BATCH,), generator=gen).to(device),
                "index": torch.arange(i * BATCH, (i + 1) * BATCH)} for i in range(STEPS)]
    torch.manual_seed(0)  # every variant starts from the same weights
    m = build_model(cfg, DataInfo(2, 1, SIZE, LABELS)).to(device).train()
    on = apply_speed_options(m, cfg.train, device)
    scfg = cfg.stage("diffusion")
    ctx = StepContext(device, scfg.amp, scfg.grad_clip, torch.Generator().manual_seed(0))
    ctx.stage = "diffusion"
    m.on_stage_start("diffusion", StageData(batches))
    ctx.optimizers = m.optimizers("diffusion", scfg)
    return (lambda i: m.training_step(batches[i], "diffusion", ctx)), on


def step_flops(one_step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        one_step()
    return counter.get_total_flops()


def compile_child(cache: str, first_step_only: bool) -> None:
    """In a fresh process: the first compiled step (compilation included), then, unless
    ``first_step_only``, compiled against eager steps, interleaved. Prints one JSON line."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compiled, on = make_step(["train.compile=true"], device)
    t = time.perf_counter()
    compiled(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    first = time.perf_counter() - t
    if first_step_only:
        print(json.dumps({"first_step_s": first}))
        return
    eager, _ = make_step([], device)
    times = interleaved_times({"compiled": compiled, "eager": eager}, list(range(STEPS)), 1, COMPILE_REPEATS, warmup=1)
    speedup, spread = median_ratio(times["eager"], times["compiled"])
    print(json.dumps({"first_step_s": first, "compiled_s": statistics.median(times["compiled"]) / STEPS,
                      "eager_s": statistics.median(times["eager"]) / STEPS, "speedup": speedup, "range": spread,
                      "options": on}))


def _child(cache: str, *flags: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--compile-child", cache, *flags], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_compile(flops: int) -> None:
    with tempfile.TemporaryDirectory() as cache:
        cold = _child(cache)
        warm = _child(cache, "--first-step-only")
    figure("speed-options", f"train.compile (Inductor) vs eager ({NET})", "s/step", cold["compiled_s"], cold["eager_s"],
           "the same step, eager", cold["speedup"], None, ratio_range=cold["range"],
           achieved_tflops=flops / cold["compiled_s"] / 1e12, reference_tflops=flops / cold["eager_s"] / 1e12,
           options=cold["options"], repeats=COMPILE_REPEATS)
    figure("speed-options", f"train.compile: first step, empty kernel cache vs the cache of a previous run ({NET})", "s",
           warm["first_step_s"], cold["first_step_s"], "first step with an empty cache (cold compilation)",
           cold["first_step_s"] / warm["first_step_s"], None,
           note="each in a fresh process; the ratio is how many times faster the cached start is")


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variants = {"plain": [], "efficient_attention": ["train.efficient_attention=true"],
                "channels_last": ["train.channels_last=true"]}
    steps, options, mem = {}, {}, {}
    flops = None
    for name, overrides in variants.items():
        step, options[name] = make_step(overrides, device)
        mem[name] = peak_memory_mb(lambda: step(0))  # the first step: optimiser state and activations allocated
        flops = flops or step_flops(lambda: step(0))
        steps[name] = step
    # step by step, the variants interleaved (common.interleaved_times): the machine's drift over
    # seconds meets them alike
    times = interleaved_times(steps, list(range(STEPS)), 1, REPEATS, warmup=1)
    per = {k: statistics.median(v) / STEPS for k, v in times.items()}
    figure("speed-options", f"plain training step ({NET})", "s/step", per["plain"], None,
           "none: the reference of the rows below", None, None, achieved_tflops=flops / per["plain"] / 1e12,
           flops_per_step=flops, peak_memory_mb=mem["plain"][0], memory_method=mem["plain"][1],
           options=options["plain"], device=str(device), repeats=REPEATS)
    for name in variants:
        if name == "plain":
            continue
        speedup, spread = median_ratio(times["plain"], times[name])
        figure("speed-options", f"{name} vs plain step ({NET})", "s/step", per[name], per["plain"],
               "the same step without the option", speedup, None, ratio_range=spread,
               achieved_tflops=flops / per[name] / 1e12, peak_memory_mb={"option": mem[name][0], "plain": mem["plain"][0]},
               options=options[name], repeats=REPEATS)
    if QUICK:
        return
    if device.type == "cuda" or env_flag("BENCH_COMPILE"):
        bench_compile(flops)
    else:
        figure("speed-options", f"train.compile (Inductor) vs eager ({NET})", "s/step", None, None,
               "not measured: on a CPU the compile rows run only with BENCH_COMPILE=1 (2.5-3 minutes more, most "
               "of it the cold compilation)", None, None)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--compile-child":
        compile_child(sys.argv[2], "--first-step-only" in sys.argv[3:])
    else:
        main()
