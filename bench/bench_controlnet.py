"""The two mask-conditioning routes on built-in data: is the lesion where the mask is, with a ControlNet on a
frozen DDPM (``brain-lesion-controlnet``) and with the SPADE U-Net (``brain-lesion-mask-ddpm``)?

Not part of ``make bench`` (it trains three networks). Prints one JSON object::

    python bench/bench_controlnet.py --out /tmp/cn-bench [--size 32] [--n 400] [--steps 300]

Both routes get the same light U-Net (channels 16-32-32, no attention) and the SPADE preset's noise schedule
(v-prediction), the same optimiser steps (``--steps``, batch 16) and learning rate: the SPADE U-Net from
scratch; the ControlNet route a base ``ddpm`` (on every training slice, lesions included) for ``--base-steps``
and then the ControlNet on top for ``--steps``. One image per lesion mask of the real test split (DDIM 50) is
segmented by one U-Net trained on the real training pairs (:mod:`medgen.evaluation.seg_utility`): mean Dice
against the conditioning masks, against the same masks shuffled between images (chance), and on the real
test images with their own masks (the ceiling), each with a 95 % bootstrap interval over the images, and
the paired difference between the routes (same masks). One training run per route: the intervals do not
include the variation between training seeds.
Trained runs in ``--out`` are reused (delete them to retrain).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

UNET = ["model.unet.channels=[16,32,32]", "model.unet.attention_levels=[false,false,false]",
        "model.unet.num_head_channels=16", "model.unet.norm_num_groups=8"]
# the SPADE preset's schedule (v-prediction: bench_masks.py), for both routes
SCHEDULE = ["model.scheduler.schedule=scaled_linear_beta", "model.scheduler.beta_start=0.0015",
            "model.scheduler.beta_end=0.0195", "model.scheduler.prediction_type=v_prediction"]


def ci(values: np.ndarray, bounds=(0.0, 1.0)) -> dict:
    """Mean with its 95 % percentile-bootstrap interval over the images (medgen.metrics.intervals)."""
    from medgen.metrics.intervals import bootstrap_ci

    r = bootstrap_ci(np.mean, np.asarray(values, dtype=float), n_resamples=2000, bounds=bounds)
    return {k: (round(float(r[k]), 3) if k in ("value", "low", "high") else r[k]) for k in ("value", "low", "high", "method", "n")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/cn-bench")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps of the SPADE U-Net and of the ControlNet")
    ap.add_argument("--base-steps", type=int, default=300, help="optimiser steps of the ControlNet's base DDPM")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seg-steps", type=int, default=400)
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from medgen.data.dataset import PreparedDataset
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.evaluation.seg_utility import SegSettings, predict, read_pairs, scores, train_segmenter
    from medgen.mask_sampling import sample_pairs
    from medgen.training import train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet = lambda *a, **k: None  # noqa: E731
    data = out / "data"
    if not (data / "index.csv").exists():
        prepare("builtin:brain-lesions", data, PrepareOptions(size=(args.size, args.size), workers=1, normalize="minmax",
                                                              source=SourceOptions(n=args.n)))
    common = ["train.epochs=1000", "train.val_every=100000", "train.batch_size=16", f"train.lr={args.lr}",
              "train.ema_decay=0.995", "data.subset={}", *UNET, *SCHEDULE]
    times = {}

    def fit(preset, name, steps, init_from=None):
        run = out / name
        if not (run / "checkpoints" / "final").exists():
            train(preset, data, run, profile="small", force=True, echo=quiet, init_from=init_from,
                  overrides=[*common, f"train.max_steps={steps}"])
        status = json.loads((run / "status.json").read_text())  # a reused run: its own start and finish
        times[name] = round(status["updated"] - status["started"], 1)
        return run

    base = fit("brain-ddpm-anomaly", "base-ddpm", args.base_steps)
    routes = {"controlnet": fit("brain-lesion-controlnet", "controlnet", args.steps, init_from=base),
              "spade": fit("brain-lesion-mask-ddpm", "spade", args.steps)}

    ds = PreparedDataset(data)
    tr, te = np.sort(ds.select("train")), np.sort(ds.select("test"))
    t = time.time()
    seg = train_segmenter(np.asarray(ds.images[tr]), np.asarray(ds.masks[tr]), SegSettings(steps=args.seg_steps), 0)
    times["segmenter"] = round(time.time() - t, 1)
    lesion = te[np.asarray(ds.masks[te]).reshape(len(te), -1).max(1) > 0]

    per_image = {}

    def dice(name, images, masks) -> dict:
        pred = predict(seg, images)
        n = len(masks)
        shift = np.roll(np.arange(n), 1 + np.random.default_rng(0).integers(max(1, n - 1)))  # as mask_adherence
        own, shuffled = scores(pred, masks)["dice"], scores(pred, masks[shift])["dice"]
        per_image[name] = own
        return {"dice_conditioning": ci(own), "dice_shuffled": ci(shuffled), "at_least_0.5": int((own >= 0.5).sum()), "n": n}

    result = {"size": args.size, "n": args.n, "steps": args.steps, "base_steps": args.base_steps, "lr": args.lr,
              "sample_steps": args.sample_steps, "real_ceiling": dice("real", np.asarray(ds.images[lesion]), np.asarray(ds.masks[lesion]))}
    for name, run in routes.items():
        t = time.time()
        sample_pairs(run, "dataset:test", steps=args.sample_steps, out=out / f"{name}-pairs", force=True, echo=quiet)
        times[f"{name}-sample"] = round(time.time() - t, 1)
        result[name] = dice(name, *read_pairs(out / f"{name}-pairs", tuple(ds.size)))
    # the same test masks in the same order for both routes: a paired difference
    result["spade_minus_controlnet"] = ci(per_image["spade"] - per_image["controlnet"], bounds=(None, None))
    result["seconds"] = times
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
