"""Mask-conditioned synthesis on built-in data: is the lesion where the mask is, does inpainting keep
the rest of the image, and do the synthetic pairs help a segmentation network?

Not part of ``make bench`` (it trains a generator: ~25-40 min on 2 CPU cores). Prints one JSON
object and writes the guide's figures::

    python bench/bench_masks.py --out /tmp/mask-bench [--epochs 20] [--size 32] [--n 600]

Steps: prepare ``builtin:brain-lesions``; train ``brain-lesion-mask-ddpm`` (small profile, a lighter
U-Net, fewer epochs); generate one image per lesion mask of the real test split (DDIM 50) and measure
:func:`medgen.evaluation.seg_utility.mask_adherence` (a U-Net trained on the real training pairs
segments the generated images; Dice against the conditioning masks vs the same masks shuffled);
inpaint ``random:glioma`` lesions into real test images without one and check every pixel outside
the mask; then the segmentation-utility table (:func:`medgen.evaluation.seg_utility.run_seg_utility`)
on synthetic pairs made from the training masks, with K rows whose synthetic pairs come from a second
generator trained on K lesion pairs only (``--k``, ``--k-epochs``), as ``medgen evaluate --seg-utility
--k-run`` requires.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np


# the small profile with a lighter U-Net (no attention): 2 shared CPU cores
LIGHT = ["model.spade_channels=16", "model.unet.channels=[16,32,32]", "model.unet.attention_levels=[false,false,false]",
         "model.unet.num_head_channels=16", "model.unet.norm_num_groups=8"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/mask-bench")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seg-steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=8, help="real pairs of the scarce rows (a generator is trained on them only)")
    ap.add_argument("--k-epochs", type=int, default=600, help="epochs of the K-pair generator (one batch each)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="an extra config override of both generators, e.g. model.scheduler.prediction_type=v_prediction")
    ap.add_argument("--parts", default="adherence,inpaint,utility", help="comma list of adherence, inpaint, utility")
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}

    import torch

    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.evaluation.seg_utility import SegSettings, run_seg_utility
    from medgen.training import train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = out / "data"
    if not (data / "index.csv").exists():
        prepare("builtin:brain-lesions", data, PrepareOptions(size=(args.size, args.size), workers=1, source=SourceOptions(n=args.n)))
    run = out / "run"
    if not (run / "checkpoints" / "final").exists():
        train("brain-lesion-mask-ddpm", data, run, profile="small", force=True, echo=lambda *a: None,
              overrides=[f"train.epochs={args.epochs}", "train.val_every=100", "train.lr=1e-3", *LIGHT, *args.overrides])
    t_train = time.time() - t0
    from medgen.data.dataset import PreparedDataset

    ds = PreparedDataset(data)
    tr, te = np.sort(ds.select("train")), np.sort(ds.select("test"))
    real_train = (np.asarray(ds.images[tr]), np.asarray(ds.masks[tr]))
    settings = SegSettings(steps=args.seg_steps)

    result = {"train_s": round(t_train, 1), "size": args.size, "n": args.n, "epochs": args.epochs, "overrides": args.overrides}
    if "adherence" in parts:
        result.update(adherence_part(run, ds, tr, te, real_train, settings, out))
    if "inpaint" in parts:
        result["inpaint"] = inpaint_part(run, ds, te, out)
    if "utility" in parts:
        # the K rows from a generator trained on K lesion pairs only (the same U-Net, about as many
        # optimiser steps: one batch per epoch), as medgen evaluate --seg-utility --k-run requires
        k_run = out / f"run-k{args.k}"
        if not (k_run / "checkpoints" / "final").exists():
            lesion = tr[np.asarray(ds.masks[tr]).reshape(len(tr), -1).max(1) > 0]
            ids = sorted(ds.index["id"].to_numpy()[np.random.default_rng(0).permutation(lesion)[:args.k]])
            train("brain-lesion-mask-ddpm", data, k_run, profile="small", force=True, echo=lambda *a: None, subset=["id=" + "|".join(ids)],
                  overrides=[f"train.epochs={args.k_epochs}", "train.val_every=100000", "train.lr=1e-3", *LIGHT, *args.overrides])
        result["seg_utility"] = run_seg_utility(run, None, seeds=args.seeds, k_runs=[k_run], settings=settings, steps=50,
                                                echo=lambda m="": print(m, file=sys.stderr))
    result["total_s"] = round(time.time() - t0, 1)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


def roughness(images: np.ndarray) -> float:
    """Mean absolute Laplacian: pixel-to-pixel noise (a noisy generator scores far above real images)."""
    from scipy import ndimage as ndi

    return float(np.mean([np.abs(ndi.laplace(np.asarray(im[0], np.float64))).mean() for im in images]))


def adherence_part(run, ds, tr, te, real_train, settings, out) -> dict:
    """One image per lesion mask of the real test split (DDIM 50): is the lesion where the mask is, and how noisy is it?"""
    from medgen.evaluation.seg_utility import mask_adherence, read_pairs
    from medgen.mask_sampling import sample_pairs

    sample_pairs(run, "dataset:test", n=None, steps=50, out=out / "test-masks", force=True, echo=lambda *a: None)
    gen_imgs, gen_masks = read_pairs(out / "test-masks", tuple(ds.size))
    adherence = mask_adherence(real_train, gen_imgs, gen_masks, 0, settings)
    adherence.pop("dice_conditioning_per_image", None)
    # the same network on the real test images with their own masks: the ceiling
    real_test_lesion = te[np.asarray(ds.masks[te]).reshape(len(te), -1).max(1) > 0]
    real_imgs = np.asarray(ds.images[real_test_lesion])
    ceiling = mask_adherence(real_train, real_imgs, np.asarray(ds.masks[real_test_lesion]), 0, settings)
    shutil.copy(out / "test-masks" / "pairs.png", out / "guide-pairs.png")
    return {"adherence": adherence, "real_ceiling": {k: v for k, v in ceiling.items() if k != "dice_conditioning_per_image"},
            "roughness": {"generated": round(roughness(gen_imgs), 4), "real_test": round(roughness(real_imgs), 4)}}


def inpaint_part(run, ds, te, out) -> dict:
    """Random glioma masks into real test images of class "none": every pixel outside the mask must be kept."""
    from PIL import Image

    from medgen.mask_sampling import sample_pairs

    none_rows = te[ds.index["label"].to_numpy()[te] == "none"][:8]
    (out / "inp-src").mkdir(exist_ok=True)
    for r in none_rows:
        Image.fromarray(np.round(np.asarray(ds.images[r])[0] * 65535).astype(np.uint16)).save(out / "inp-src" / f"{ds.index['id'][r]}.png")
    sample_pairs(run, "random:glioma,size=2-8", inpaint=str(out / "inp-src"), steps=50, resample=5, out=out / "inpainted",
                 force=True, label="glioma", echo=lambda *a: None)
    man = json.loads((out / "inpainted" / "samples.json").read_text())
    worst_outside, mean_inside = 0, []
    for f in man["files"]:
        a = np.asarray(Image.open(out / "inp-src" / f["original"])).astype(int)
        b = np.asarray(Image.open(out / "inpainted" / f["file"])).astype(int)
        m = np.asarray(Image.open(out / "inpainted" / f["mask"])) > 0
        worst_outside = max(worst_outside, int(np.abs(a - b)[~m].max()))
        mean_inside.append(float(np.abs(a - b)[m].mean()) / 65535)
    shutil.copy(out / "inpainted" / "pairs.png", out / "guide-inpaint-pairs.png")
    return {"n": len(man["files"]), "max_abs_diff_outside_16bit": worst_outside, "mean_abs_change_inside": round(float(np.mean(mean_inside)), 4)}


if __name__ == "__main__":
    main()
