"""medgen's trainer against a bare `for batch: forward, backward, step` loop on the same U-Net,
data and batch size (target: <= 5% slower per step). The trainer's run includes what a real run
does: seeding, logging, the epoch-end step checkpoints (as many as the default
``train.checkpoint_budget`` lets through; the data's 8-step epochs are where that matters), the
end-of-run checkpoints. ``--every_epoch=1`` also times the same run with a checkpoint after every
epoch (budget null) and reports it beside it, without a target (off in ``make bench``).

The two sides run interleaved, step by step, in one run: each time ``Trainer.fit`` hands the
model a batch, one step of the bare loop (its own copy of the U-Net, its own optimiser, the
training images as one tensor) runs first and is timed, then medgen's step. This machine's speed
drifts by a few per cent over seconds (docs/benchmarks.md), and runs of each side one after the
other caught that drift as a difference between the sides; interleaved, both sides meet the same
drift in every step. Five runs of 96 steps, after one untimed run of 32 (imports, first-use
set-up). medgen's cost per step is the time from the start of its step 17 to the start of its step
89, minus the bare steps run in between, over those 72 steps: 9 whole epochs, so it holds 9 epoch
ends with everything the trainer does there (log lines, the budgeted checkpoints) and every batch
read. The bare loop's is the mean of its steps over the same span. The trainer
reads a clock that leaves out the bare steps (``TrainerClock``), so its checkpoint budget lets
through as many checkpoints as in a run of its own. What a run costs once (run directory, model
set-up, the first epoch's and the end-of-run checkpoints) is reported apart
(``fixed_seconds_per_run``); a real run has thousands of steps, so the per-step ratio is the one
with a target. ``BENCH_QUICK=1``: 40 steps, one run (after the same warm-up)."""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from common import TutorialStep, arg, figure, gpu_options, median_ratio, pick

REPEATS = pick(5, 1)  # interleaved runs (each holds both sides)
BATCH, EPOCH_STEPS = 16, 8  # 128 training images in batches of 16
WARMUP_STEPS = 4 * EPOCH_STEPS  # the untimed first run (imports, first-use set-up): the shortest with a steady span


def steady_span(steps: int) -> tuple[int, int]:
    """The (0-based) steps whose start times bound the steady-state span of a run of ``steps``: from
    the start of the third epoch to the start of the step after the last whole epoch, so the span
    holds whole epochs (each with its epoch end) and none of the first two (warm-up, the first
    epoch end's forced checkpoint)."""
    first = 2 * EPOCH_STEPS
    last = first + (steps - 1 - first) // EPOCH_STEPS * EPOCH_STEPS
    if last <= first:
        raise ValueError(f"{steps} steps are too few for a steady-state span")
    return first, last


def steady_per_step(starts: list[float], inserted: list[float]) -> float:
    """Seconds per step over ``steady_span`` from the start times of a run's steps, less the time of
    the work ``inserted`` before each step (``inserted[i]`` ran just before step ``i`` started)."""
    first, last = steady_span(len(starts))
    return (starts[last] - starts[first] - sum(inserted[first + 1:last + 1])) / (last - first)


class TrainerClock:
    """The ``time`` module as the trainer sees it in an interleaved run: real time less the bare
    steps run inside the run, so its checkpoint budget (a share of training time since the last
    checkpoint) and its logged seconds count its own work only."""

    def __init__(self):
        self.skipped = 0.0

    def perf_counter(self) -> float:
        return time.perf_counter() - self.skipped

    def time(self) -> float:
        return time.time() - self.skipped

    def __getattr__(self, name):
        return getattr(time, name)


def main() -> None:
    from medgen.config import resolve
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.data.dataset import PreparedDataset
    from medgen.engine.context import StepContext
    from medgen.engine.trainer import Trainer
    from medgen.models.base import DataInfo, build_model
    from medgen.rundir import RunDir

    tmp = Path(tempfile.mkdtemp())
    prepare("builtin:breast-phantom", tmp / "d", PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=160)))
    ds = PreparedDataset(tmp / "d")
    steps = pick(96, 40)
    info = DataInfo(2, 1, (32, 32), ds.labels)
    rows = ds.select("train")
    assert len(rows) == BATCH * EPOCH_STEPS, f"{len(rows)} training images, expected {BATCH * EPOCH_STEPS}"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def config(*extra, n_steps=steps):
        return resolve("dbt-ddpm-3d", "tiny", ["model.spatial_dims=2", f"train.batch_size={BATCH}", "train.epochs=100",
                                              f"train.max_steps={n_steps}", "train.ema_decay=null", "train.log_every=1000",
                                              "train.val_every=1000", *extra])

    cfg = config()
    amp = StepContext(device, cfg.train.amp, None, torch.Generator()).amp_dtype  # the precision medgen trains in
    images = torch.from_numpy(np.asarray(ds.images[np.sort(rows)])).to(device)

    def bare_loop():
        """One step of the bare loop per call, on its own U-Net and optimiser."""
        torch.manual_seed(0)
        den = build_model(cfg, info).to(device).denoiser
        opt = torch.optim.Adam(den.parameters(), lr=1e-4)
        step = TutorialStep(device, amp)
        done = [0]

        def one():
            x = images[(done[0] * BATCH) % (len(images) - BATCH):][:BATCH] * 2 - 1
            noise = torch.randn_like(x)
            t = torch.randint(0, den.T, (len(x),), device=device)
            with step.autocast():
                pred = den.eps(den.q_sample(x, t, noise), t, None)
            step.step(torch.nn.functional.mse_loss(pred.float(), noise), opt)
            done[0] += 1
        return one

    def interleaved(*extra, n_steps=steps) -> dict:
        """One medgen run of ``n_steps`` with a bare step before each of its steps: both sides' seconds
        per step."""
        import medgen.engine.trainer as trainer_module

        bare = bare_loop()
        torch.manual_seed(0)
        model = build_model(cfg, info)
        starts, bare_s = [], []
        step = model.training_step
        clock = TrainerClock()

        def timed_step(batch, stage, ctx):
            t0 = time.perf_counter()
            bare()
            t1 = time.perf_counter()
            clock.skipped += t1 - t0
            bare_s.append(t1 - t0)
            starts.append(t1)  # medgen's step starts when the trainer's hand-over (and the bare step) is done
            return step(batch, stage, ctx)

        model.training_step = timed_step
        run_dir = RunDir.create(tmp / "run", force=True)
        with mock.patch.object(trainer_module, "time", clock):
            t = time.perf_counter()
            Trainer(model, config(*extra, n_steps=n_steps), ds, run_dir, rows, np.array([], dtype=int), device).fit()
            wall = time.perf_counter() - t
        assert len(starts) == n_steps, len(starts)
        first, last = steady_span(n_steps)
        medgen = steady_per_step(starts, bare_s)
        return {"medgen": medgen, "bare": statistics.mean(bare_s[first + 1:last + 1]),
                "fixed": wall - sum(bare_s) - n_steps * medgen}

    variants = {"medgen": ()}
    if arg("every_epoch", 0):
        variants["every_epoch"] = ("train.checkpoint_budget=null",)
    interleaved(n_steps=min(WARMUP_STEPS, steps))  # one short untimed run first (imports, first-use set-up)
    runs: dict = {k: [] for k in variants}
    for r in range(REPEATS):
        for k in (variants if r % 2 == 0 else reversed(list(variants))):
            runs[k].append(interleaved(*variants[k]))
    shutil.rmtree(tmp, ignore_errors=True)
    # per run: medgen's per-step time over the bare loop's, interleaved step by step in that run
    ratios = {k: median_ratio([r["medgen"] for r in v], [r["bare"] for r in v]) for k, v in runs.items()}
    ratio, spread = ratios["medgen"]
    per_step = {k: statistics.median(r[k] for r in runs["medgen"]) for k in ("medgen", "bare")}
    fixed = statistics.median(r["fixed"] for r in runs["medgen"])
    extra = {} if "every_epoch" not in runs else {"checkpoint_after_every_epoch": {
        "s_per_step": statistics.median(r["medgen"] for r in runs["every_epoch"]), "ratio": ratios["every_epoch"][0],
        "ratio_range": ratios["every_epoch"][1]}}
    span = steady_span(steps)
    figure("trainer_overhead", f"trainer overhead per step: Trainer.fit vs bare loop, interleaved step by step (dbt-ddpm-3d "
           f"tiny U-Net in 2D, 32x32, batch {BATCH}; runs of {steps} steps, per step over steps {span[0] + 1}-{span[1]})",
           "s/step", per_step["medgen"], per_step["bare"], "bare for-batch loop, same U-Net and data", ratio, "<= 1.05",
           ratio_range=spread, repeats=REPEATS, steps=steps, fixed_seconds_per_run={"medgen": round(fixed, 3)}, **extra,
           note="each run interleaves the two sides step by step (a bare step before each of medgen's); medgen per step: "
                "the time from the start of one of its steps to the start of another, whole epochs apart (epoch ends, "
                "checkpoints and batch reads included), less the bare steps in between; bare per step: the mean of its "
                "steps over the same span; ratio: the median over the runs of the per-run ratio (ratio_range: the lowest "
                "and highest); what a run costs once (run directory, first and last checkpoints) is fixed_seconds_per_run",
           gpu_options=gpu_options(str(amp).replace("torch.", "") if amp else None))


if __name__ == "__main__":
    main()
