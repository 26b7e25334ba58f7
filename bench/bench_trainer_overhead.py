"""medgen's trainer against a bare `for batch: forward, backward, step` loop on the same U-Net,
data and batch size (target: <= 5% slower per step). The trainer's run includes what a real run
does: seeding, logging, the epoch-end step checkpoints (as many as the default
``train.checkpoint_budget`` lets through; the data's 8-step epochs are where that matters), the
end-of-run checkpoints. ``--every_epoch=1`` also times the same run with a checkpoint after every
epoch (budget null) and reports it beside it, without a target (a third more time; off in ``make
bench``, whose 15-minute budget it does not fit). Both loops run at two lengths: the difference
divided by the extra steps is the cost of a step, and what is left is a fixed cost per run
(checkpoints, run directory), reported apart; a real run has thousands of steps, so the per-step
ratio is the one with a target (``BENCH_QUICK=1``: fewer steps, one repeat)."""
from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import TutorialStep, arg, figure, gpu_options, median_ratio, paired_times, pick

REPEATS = pick(11, 1)


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
    short, long = pick(16, 4), pick(128, 12)
    info = DataInfo(2, 1, (32, 32), ds.labels)
    rows = ds.select("train")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def config(steps, *extra):
        return resolve("dbt-ddpm-3d", "tiny", ["model.spatial_dims=2", "train.batch_size=16", "train.epochs=100",
                                              f"train.max_steps={steps}", "train.ema_decay=null", "train.log_every=1000",
                                              "train.val_every=1000", *extra])

    cfg = config(short)
    amp = StepContext(device, cfg.train.amp, None, torch.Generator()).amp_dtype  # the precision medgen trains in

    def medgen_loop(steps, *extra):
        torch.manual_seed(0)
        model = build_model(cfg, info)
        run = RunDir.create(tmp / "run", force=True)
        Trainer(model, config(steps, *extra), ds, run, rows, np.array([], dtype=int), device).fit()

    def bare_loop(steps):
        torch.manual_seed(0)
        model = build_model(cfg, info).to(device)
        den = model.denoiser
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        step = TutorialStep(device, amp)
        images = torch.from_numpy(np.asarray(ds.images[np.sort(rows)])).to(device)
        for s in range(steps):
            x = images[(s * 16) % (len(images) - 16):][:16] * 2 - 1
            noise = torch.randn_like(x)
            t = torch.randint(0, den.T, (len(x),), device=device)
            with step.autocast():
                pred = den.eps(den.q_sample(x, t, noise), t, None)
            step.step(torch.nn.functional.mse_loss(pred.float(), noise), opt)

    runs = {"medgen_short": lambda: medgen_loop(short), "bare_short": lambda: bare_loop(short),
            "medgen_long": lambda: medgen_loop(long), "bare_long": lambda: bare_loop(long)}
    sides = ["medgen", "bare"]
    if arg("every_epoch", 0):
        every_epoch = "train.checkpoint_budget=null"
        runs |= {"every_epoch_short": lambda: medgen_loop(short, every_epoch),
                 "every_epoch_long": lambda: medgen_loop(long, every_epoch)}
        sides.append("every_epoch")
    t = paired_times(runs, repeats=REPEATS)
    shutil.rmtree(tmp, ignore_errors=True)
    # per repeat: the cost of a step on each side, then their ratio (the sides of a repeat ran back to back)
    per_step = {k: [(lg - sh) / (long - short) for sh, lg in zip(t[f"{k}_short"], t[f"{k}_long"])] for k in sides}
    ratio, spread = median_ratio(per_step["medgen"], per_step["bare"])
    every = median_ratio(per_step["every_epoch"], per_step["bare"]) if "every_epoch" in sides else None
    per_step = {k: statistics.median(v) for k, v in per_step.items()}
    extra = {} if every is None else {"checkpoint_after_every_epoch": {
        "s_per_step": per_step["every_epoch"], "ratio": every[0], "ratio_range": every[1]}}
    fixed = {k: statistics.median(t[f"{k}_short"]) - short * per_step[k] for k in sides}
    figure("trainer_overhead", f"trainer overhead per step: Trainer.fit vs bare loop (dbt-ddpm-3d tiny U-Net in 2D, 32x32, batch 16; "
           f"{short} and {long} steps)", "s/step", per_step["medgen"], per_step["bare"], "bare for-batch loop, same U-Net and data",
           ratio, "<= 1.05", ratio_range=spread, repeats=REPEATS, steps=[short, long],
           fixed_seconds_per_run={k: round(v, 3) for k, v in fixed.items()}, **extra,
           note="per step = (time of the long run - time of the short run) / extra steps; ratio: the median over "
                "the repeats of medgen's per-step time over the bare loop's in the same repeat (ratio_range: the lowest "
                "and highest); the fixed cost per run (run directory, end-of-run checkpoints) is fixed_seconds_per_run",
           gpu_options=gpu_options(str(amp).replace("torch.", "") if amp else None))


if __name__ == "__main__":
    main()
