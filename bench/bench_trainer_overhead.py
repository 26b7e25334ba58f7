"""medgen's trainer against a bare `for batch: forward, backward, step` loop on the same U-Net,
data and batch size (target: <= 5% slower per step). The trainer's run includes what a real run
does: seeding, logging, the epoch-end step checkpoints (as many as the default
``train.checkpoint_budget`` lets through; the data's 8-step epochs are where that matters), the
end-of-run checkpoints. ``--every_epoch=1`` also times the same run with a checkpoint after every
epoch (budget null) and reports it beside it, without a target (half again the bench's time; off in
``make bench``, whose 15-minute budget it does not fit).

The cost of a step is taken inside each run, in steady state: each side notes the time at which
every step starts (medgen: when ``Trainer.fit`` calls the model's ``training_step``; the bare loop:
at the top of its loop), and the per-step figure is the time from the start of step 17 to the start
of step 121 over those 104 steps: 13 whole epochs, so it holds 13 epoch ends with everything the
trainer does there (log lines, the budgeted checkpoints), and every batch read. What a run costs
once (run directory, model set-up, the first epoch's and the end-of-run checkpoints) is reported
apart (``fixed_seconds_per_run``: the run's time minus its steps at that rate); a real run has
thousands of steps, so the per-step ratio is the one with a target. (Until this version the bench
timed whole runs of 16 and 128 steps and divided the difference by 112: the short runs' own
scatter of +-0.3 s came on top of the machine's.) ``BENCH_QUICK=1``: 40 steps, one repeat."""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import TutorialStep, arg, figure, gpu_options, median_ratio, paired_times, pick

REPEATS = pick(13, 1)
BATCH, EPOCH_STEPS = 16, 8  # 128 training images in batches of 16


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


def steady_per_step(starts: list[float]) -> float:
    """Seconds per step over ``steady_span`` from the start times of a run's steps."""
    first, last = steady_span(len(starts))
    return (starts[last] - starts[first]) / (last - first)


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
    steps = pick(128, 40)
    info = DataInfo(2, 1, (32, 32), ds.labels)
    rows = ds.select("train")
    assert len(rows) == BATCH * EPOCH_STEPS, f"{len(rows)} training images, expected {BATCH * EPOCH_STEPS}"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def config(*extra):
        return resolve("dbt-ddpm-3d", "tiny", ["model.spatial_dims=2", f"train.batch_size={BATCH}", "train.epochs=100",
                                              f"train.max_steps={steps}", "train.ema_decay=null", "train.log_every=1000",
                                              "train.val_every=1000", *extra])

    cfg = config()
    amp = StepContext(device, cfg.train.amp, None, torch.Generator()).amp_dtype  # the precision medgen trains in
    starts: dict = {}  # side -> the start time of each step of its last run

    def medgen_loop(side, *extra):
        def run():
            torch.manual_seed(0)
            model = build_model(cfg, info)
            starts[side] = noted = []
            step = model.training_step

            def timed_step(batch, stage, ctx):  # the time at which the trainer hands over a batch
                noted.append(time.perf_counter())
                return step(batch, stage, ctx)

            model.training_step = timed_step
            run_dir = RunDir.create(tmp / "run", force=True)
            Trainer(model, config(*extra), ds, run_dir, rows, np.array([], dtype=int), device).fit()
        return run

    def bare_loop():
        torch.manual_seed(0)
        model = build_model(cfg, info).to(device)
        den = model.denoiser
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        step = TutorialStep(device, amp)
        images = torch.from_numpy(np.asarray(ds.images[np.sort(rows)])).to(device)
        starts["bare"] = noted = []
        for s in range(steps):
            noted.append(time.perf_counter())
            x = images[(s * BATCH) % (len(images) - BATCH):][:BATCH] * 2 - 1
            noise = torch.randn_like(x)
            t = torch.randint(0, den.T, (len(x),), device=device)
            with step.autocast():
                pred = den.eps(den.q_sample(x, t, noise), t, None)
            step.step(torch.nn.functional.mse_loss(pred.float(), noise), opt)

    sides = {"medgen": medgen_loop("medgen"), "bare": bare_loop}
    if arg("every_epoch", 0):
        sides["every_epoch"] = medgen_loop("every_epoch", "train.checkpoint_budget=null")
    per_step: dict = {k: [] for k in sides}

    def timed(side):
        def call():
            sides[side]()
            assert len(starts[side]) == steps, (side, len(starts[side]))
            per_step[side].append(steady_per_step(starts[side]))
        return call

    for run in sides.values():  # one untimed run of each side first (imports, first-use set-up)
        run()
    t = paired_times({k: timed(k) for k in sides}, repeats=REPEATS, warmup=0)
    shutil.rmtree(tmp, ignore_errors=True)
    # per repeat: medgen's per-step time over the bare loop's (the sides of a repeat ran back to back)
    ratio, spread = median_ratio(per_step["medgen"], per_step["bare"])
    every = median_ratio(per_step["every_epoch"], per_step["bare"]) if "every_epoch" in sides else None
    fixed = {k: statistics.median(tt - steps * p for tt, p in zip(t[k], per_step[k])) for k in sides}
    per_step = {k: statistics.median(v) for k, v in per_step.items()}
    extra = {} if every is None else {"checkpoint_after_every_epoch": {
        "s_per_step": per_step["every_epoch"], "ratio": every[0], "ratio_range": every[1]}}
    span = steady_span(steps)
    figure("trainer_overhead", f"trainer overhead per step: Trainer.fit vs bare loop (dbt-ddpm-3d tiny U-Net in 2D, 32x32, batch "
           f"{BATCH}; runs of {steps} steps, per step over steps {span[0] + 1}-{span[1]})", "s/step", per_step["medgen"],
           per_step["bare"], "bare for-batch loop, same U-Net and data", ratio, "<= 1.05", ratio_range=spread,
           repeats=REPEATS, steps=steps, fixed_seconds_per_run={k: round(v, 3) for k, v in fixed.items()}, **extra,
           note="per step: the time from the start of one step to the start of another, whole epochs apart (epoch ends, "
                "checkpoints and batch reads included), over the steps between; ratio: the median over the repeats of "
                "medgen's per-step time over the bare loop's in the same repeat (ratio_range: the lowest and highest); "
                "what a run costs once (run directory, first and last checkpoints) is fixed_seconds_per_run",
           gpu_options=gpu_options(str(amp).replace("torch.", "") if amp else None))


if __name__ == "__main__":
    main()
