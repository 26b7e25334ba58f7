"""Quality against sampling steps: rectified flow (``model.scheduler.objective: rflow``, samplers
``rflow`` and ``rflow-heun``) against the noise objective (``ddim``, and ``ddpm`` at all of its
training timesteps as the reference), on two models trained the same way at the same budget.

This bench calls the functions behind the public commands: ``medgen data prepare`` (the built-in
brain-lesions, SIZExSIZE), ``medgen train brain-ddpm-anomaly --profile small`` twice (all labels,
the same seed, data, U-Net, optimiser and number of steps; the second with
``model.scheduler.objective=rflow``, logit-normal training times), then ``medgen evaluate
--metrics distribution --features domain --sweep ...`` on each run: every setting draws the same
number of images with the same seed, and FID / KID (with the bootstrap intervals ``medgen evaluate``
gives) are taken in the domain classifier's feature space against the same real training images.

Steps are network evaluations (NFE) for ``ddim``, ``ddpm`` and ``rflow``; a ``rflow-heun`` step costs
two, the last one, so ``rflow-heun:S`` is 2S - 1 evaluations (its rows carry ``nfe``).

One JSON line per setting (``bench: rflow_steps``), then one summary line. ``BENCH_QUICK=1``: a few
training steps and images, to prove the script runs; its numbers mean nothing.
Options: ``--train_steps=N``, ``--n=N`` (images per setting), ``--size=S``, ``--batch=B`` (training
batch), ``--steps=5,10,25,50`` (the NFE grid), ``--ref_steps=N`` (ddpm reference; 0: none),
``--resamples=N`` (bootstrap resamples of the intervals), ``--objectives=diffusion,rflow`` (one of them
alone: run the two in parallel processes on a machine with cores to spare; the settings are the same),
``--data=DIR`` (a dataset already prepared with ``medgen data prepare --source builtin:brain-lesions
--size S S --n 1200``, instead of preparing one here).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import arg, emit, gpu_options, machine, pick


def heun_steps(nfe: int) -> int:
    """The rflow-heun step count whose 2S - 1 evaluations come nearest ``nfe`` from below (at least 2)."""
    return max(2, (nfe + 1) // 2)


def main() -> None:
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.evaluation.evaluate import evaluate
    from medgen.progress import set_quiet
    from medgen.training import train

    set_quiet(True)
    train_steps = arg("train_steps", pick(1500, 6))
    n_images = arg("n", pick(100, 8))
    side = arg("size", pick(16, 16))
    batch = arg("batch", 16)
    grid = [int(s) for s in arg("steps", pick("5,10,25,50", "2,4")).split(",")]
    ref_steps = arg("ref_steps", pick(1000, 20))
    resamples = arg("resamples", pick(1000, 50))
    timesteps = pick(1000, 40)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(arg("data", "")) if arg("data", "") else Path(tmp) / "data"
        if not arg("data", ""):
            prepare("builtin:brain-lesions", data, PrepareOptions(size=(side, side), source=SourceOptions(n=pick(1200, 120))))
        common = [f"train.max_steps={train_steps}", "train.epochs=100000", "train.val_every=100000", "data.subset={}",
                  f"train.batch_size={batch}", f"model.scheduler.num_train_timesteps={timesteps}", "sample.batch_size=100"]
        setups = {
            "diffusion": (["sample.sampler=ddim"], [f"ddim:{s}" for s in grid] + ([f"ddpm:{ref_steps}"] if ref_steps else [])),
            "rflow": (["model.scheduler.objective=rflow", "sample.sampler=rflow"],
                      [f"rflow:{s}" for s in grid] + [f"rflow-heun:{heun_steps(s)}" for s in grid]),
        }
        for objective in arg("objectives", "diffusion,rflow").split(","):
            over, sweep = setups[objective]
            run = Path(tmp) / objective
            t0 = time.perf_counter()
            train("brain-ddpm-anomaly", data, run, profile="small", overrides=common + over, echo=lambda *_: None)
            t1 = time.perf_counter()
            for setting in dict.fromkeys(sweep):  # one evaluation per setting: its result keeps the intervals
                res = evaluate(run=run, real=f"{data}@train", metrics="distribution", features="domain", n=n_images,
                               sweep=setting, n_resamples=resamples, echo=lambda *_: None)
                row, dist = res["sweep"][0], res["distribution"]["domain"]
                nfe = 2 * row["steps"] - 1 if row["sampler"] == "rflow-heun" else row["steps"]
                rec = {"objective": objective, "sampler": row["sampler"], "steps": row["steps"], "nfe": nfe,
                       **{k: v for k, v in row.items() if k.startswith(("fid", "kid"))}, "intervals": dist.get("intervals"),
                       "seconds_per_image": row["seconds_per_image"], "n_fake": row["n_fake"]}
                emit("rflow_steps", rec)
                out.append(rec)
            t2 = time.perf_counter()
            emit("rflow_steps", {"objective": objective, "train_seconds": t1 - t0, "evaluate_seconds": t2 - t1,
                                 "train_steps": train_steps, "size": side, "n_images": n_images})
    emit("rflow_steps", {"summary": out, "settings": {"train_steps": train_steps, "n": n_images, "size": side, "batch": batch,
                                                      "timesteps": timesteps, "resamples": resamples, "quick": pick(False, True)},
                         "data": str(data), "gpu_options": gpu_options(), "machine": machine()})


if __name__ == "__main__":
    main()
