"""Graded anomaly-detection benchmark on the built-in ``brain-lesions`` tiers.

Prepares ``brain-lesions-SIZE-CONTRAST`` (64x64, n items, the same normal slices in every tier),
trains ONE run on the normal training images of a tier (the normals are the same in all tiers),
then runs ``medgen detect`` on every tier's test split with each detector asked for. Thresholds
come from the run's normal validation images only; no test lesion chooses anything.

    PYTHONPATH=src python bench/anomaly_tiers.py --out /tmp/tiers [--preset brain-patchcore-anomaly]
        [--detectors patchcore,padim] [--tiers medium-strong,small-strong] [--n 800] [--detect-option tune=none]

Writes OUT/results.json (one record per tier and detector: image AUROC, AUPRC, pixel AUROC inside
the brain, best Dice, Dice at the validation threshold, held-out FPR, n) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TIERS = [f"{s}-{c}" for s in ("large", "medium", "small") for c in ("strong", "subtle")]


def record(tier: str, detector: str, r: dict) -> dict:
    im, px = r.get("image", {}), r.get("pixel_foreground") or r.get("pixel") or {}
    return {"tier": tier, "detector": detector, "n_lesion": im.get("n_anomalous"), "n_normal": im.get("n_normal"),
            "image_auroc": im.get("auroc"), "image_auprc": im.get("auprc"), "fpr_held_out": im.get("fpr_at_threshold"),
            "sensitivity": im.get("sensitivity_at_threshold"), "pixel_auroc": px.get("auroc"),
            "pixel_auprc": px.get("auprc"), "dice_best": px.get("dice_best"),
            "dice_at_threshold": px.get("dice_at_threshold"), "image_auroc_interval": im.get("auroc_interval"),
            "pixel_auroc_interval": px.get("auroc_interval"), "dice_best_interval": px.get("dice_best_interval"),
            "settings": r.get("settings"), "seconds": r.get("seconds")}


def summary(x: dict) -> str:
    def v(key):
        c = x.get(f"{key}_interval")
        return f"{x[key]:.3f}" + (f" [{c['low']:.3f}, {c['high']:.3f}]" if c else "")

    return (f"{x['tier']:14s} {x['detector']:10s} image AUROC {v('image_auroc')}  pixel AUROC (brain) "
            f"{v('pixel_auroc')}  best Dice {v('dice_best')}  Dice@thr {x['dice_at_threshold']:.3f}  "
            f"held-out FPR {x['fpr_held_out']:.3f}  ({x['n_lesion']} lesion / {x['n_normal']} normal)")


def parser() -> argparse.ArgumentParser:
    """The options both anomaly benchmarks take (this one and anomaly_unseen.py)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", default="brain-patchcore-anomaly")
    ap.add_argument("--profile", default="small")
    ap.add_argument("--detectors", default="auto")
    ap.add_argument("--set", action="append", default=[], help="config overrides for the run (KEY=VALUE)")
    ap.add_argument("--detect-option", action="append", default=[],
                    help="detect keyword overrides (KEY=VALUE), e.g. tune=none for the plain scoring")
    return ap


def detect_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as keyword arguments of :func:`medgen.anomaly.detect`, typed like its defaults."""
    from medgen.anomaly import detect

    extra = {}
    for kv in pairs:
        k, v = kv.split("=", 1)
        default = detect.__kwdefaults__.get(k)
        if default is None:  # unset scoring settings (the detector's own): numbers where they parse
            try:
                v = float(v)
            except ValueError:
                pass
        extra[k] = type(default)(v) if default is not None else v
    return extra


def main() -> None:
    from medgen.anomaly import detect
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.training import train

    ap = parser()
    ap.add_argument("--tiers", default=",".join(TIERS))
    ap.add_argument("--train-tier", default="medium-strong")
    ap.add_argument("--n", type=int, default=800)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    data = {}
    for tier in [a.train_tier, *[t for t in a.tiers.split(",") if t != a.train_tier]]:
        data[tier] = a.out / f"bl-{tier}"
        if not (data[tier] / "index.csv").exists():
            prepare(f"builtin:brain-lesions-{tier}", data[tier],
                    PrepareOptions(size=(64, 64), workers=1, source=SourceOptions(n=a.n)))
    run = a.out / f"run-{a.preset}"
    if not (run / "checkpoints").exists():
        t0 = time.time()
        train(a.preset, data[a.train_tier], run, profile=a.profile, subset=["label=none"], overrides=a.set,
              echo=lambda *_: None)
        print(f"trained {a.preset} ({a.profile}) in {time.time() - t0:.0f} s")
    extra = detect_options(a.detect_option)
    results = []
    for tier in a.tiers.split(","):
        for det in a.detectors.split(","):
            r = detect(run, input=data[tier], split="test", out=a.out / "detect" / f"{tier}-{det}", force=True,
                       detector=det, echo=lambda *_: None, **extra)
            results.append(record(tier, r["settings"]["detector"], r))
            print(summary(results[-1]), flush=True)
    (a.out / "results.json").write_text(json.dumps({"preset": a.preset, "profile": a.profile, "set": a.set,
                                                     "train_tier": a.train_tier, "n": a.n, "results": results}, indent=2))


if __name__ == "__main__":
    main()
