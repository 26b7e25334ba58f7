"""A last denoising step after a diffusion run's sampler: does it clear a background grain, and what
does it cost the tissue? Prints one JSON object.

    python bench/bench_last_denoise.py RUN [--t=0,10,20,40]

RUN: a finished pixel-space diffusion run (``ddpm`` family; e.g. ``brain-tumor-ddpm``'s small profile,
as ``bench_sample_quality.py --out`` keeps it). The run's sampler, steps, guidance and seed draw as many
images per class as its dataset's test split holds (as ``bench_sample_quality.py`` does); then, for
each t, x_0 = Tweedie's estimate from the (guided) noise prediction at timestep t (Song et al. 2021's
last step; t = 0 leaves the samples as drawn), clipped to the data range. Scored against the real
test split: class consistency (the cached real-trained domain classifier) and radiomics FRD and
precision / recall / coverage over the whole image and over the foreground, with the real val split
as the floor.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bench_sample_quality import _classifier_logits, _consistency, _domain_classifier
from common import machine


def main() -> None:
    import torch

    from medgen.data.dataset import PreparedDataset
    from medgen.evaluation.features import RadiomicsExtractor, standardise
    from medgen.metrics import fid_from_features, prdc
    from medgen.progress import set_quiet
    from medgen.samplers.base import abar, predict_x0
    from medgen.sampling import generate, load_run_model

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__.split("\n\n")[1])
    ts = [int(v) for v in next((a[4:] for a in sys.argv[1:] if a.startswith("--t=")), "0,10,20,40").split(",")]
    set_quiet(True)
    run = Path(args[0])
    cfg, model, _ = load_run_model(run)
    den = getattr(model, "denoiser", None)
    if den is None or cfg.model.family != "ddpm":
        sys.exit(f"{run}: not a pixel-space diffusion (ddpm family) run")
    ds = PreparedDataset(json.loads((run / "data.json").read_text())["dataset"])
    test, val = ds.select("test"), ds.select("val")
    real, real2 = np.asarray(ds.images[test], np.float32), np.asarray(ds.images[val], np.float32)
    names = list(model.info.labels)
    asked = np.sort(ds.index["label"].to_numpy()[test].astype(object)) if model.conditional else None
    ids = torch.tensor([names.index(c) for c in asked]) if asked is not None else None
    sc = cfg.sample
    drawn, _ = generate(model, len(real), ids, sc.sampler, sc.steps, sc.guidance, sc.seed, sc.batch_size)
    domain = _domain_classifier(ds, "train", "val", ds.root / "cache")

    logits_of = _classifier_logits(domain)
    extractors = {m: RadiomicsExtractor(mask=m) for m in ("whole", "foreground")}
    reals = {m: (e(real), e(real2)) for m, e in extractors.items()}
    rows = {}
    for t in ts:
        x = torch.from_numpy(drawn) * 2 - 1  # the denoiser's [-1, 1]
        if t > 0:
            with torch.no_grad():
                x = torch.cat([predict_x0(x[s:s + 32], den.guided_eps(x[s:s + 32], t, None if ids is None else ids[s:s + 32],
                                                                      sc.guidance).float(), abar(den, t), (-1.0, 1.0))
                               for s in range(0, len(x), 32)])
        img = np.round(((x + 1) / 2).clamp(0, 1).numpy() * 65535) / 65535  # as an exported 16-bit PNG
        row = {"background_grain": float(((img >= 1 / 64) & (img < 2 / 64)).mean())}
        if asked is not None:
            row["class_consistency"] = _consistency(logits_of, img, asked, names)["value"]
        for m, e in extractors.items():
            (a, b, c), _ = standardise(reals[m][0], e(img), reals[m][1])
            p = prdc(a, b, k=5)
            row[f"radiomics:{m}"] = {"frd": float(fid_from_features(a, b)), "frd_real_vs_real": float(fid_from_features(a, c)),
                                     "precision": p["precision"], "recall": p["recall"], "coverage": p["coverage"]}
        rows[str(t)] = row
    print(json.dumps({"bench": "last_denoise", "run": str(run), "sampling": {"sampler": sc.sampler, "steps": sc.steps,
                      "guidance": sc.guidance, "seed": sc.seed, "n": len(real)},
                      "real_background_grain": float(((real >= 1 / 64) & (real < 2 / 64)).mean()),
                      "last_step_t": rows, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
