"""DDIM-50 against DDPM-1000 in quality, on a small-profile model trained here (target: DDIM-50's FID
within 15 % of DDPM-1000's, i.e. FID(DDIM-50) / FID(DDPM-1000) <= 1.15).

It also gives the two samplers' speeds on that trained model (target: DDIM-50 >= 15x faster), from
the same sampling runs: seconds per image of each sampler over its 64 images, in one batch of 64,
as ``medgen evaluate`` times them (the family rows of bench_families.py time them again per family,
at 32x32 and 4 images).

This bench calls the functions behind the public commands: ``medgen data prepare`` (the built-in
brain-lesions at 16x16), ``medgen train brain-ddpm-anomaly --profile small`` (the pixel-space DDPM
of the S003 protocol, small networks, here on all labels, not only the normal slices, so that the
training split is the real side too; a fixed number of steps), then ``medgen evaluate --metrics
distribution --features domain --sweep ddim:50,ddpm:1000 --real DATA@train``: both samplers draw the
same number of images with the same seed, and each set's FID is taken in the domain classifier's
feature space (the offline "classifier features") against the same real images. ``BENCH_QUICK=1``: a
few training steps, DDPM-100, no target.

The sizes keep the bench at about 3.5 minutes on 2 CPU cores on a slow day: 16x16 images, where
the small profile's U-Net costs about a quarter of what it costs at 32x32 (at 32x32 this bench
took 8.6-10 min on such days, most of it DDPM-1000 at 4.5-5.5 s per image), 800 training steps at
batch 16, 64 images per sampler. An FID from 64 images is itself noisy (biased upwards, and by a similar amount
for both sets, which are the same size), and the DDPM sampler draws fresh noise at every step: the
JSON keeps both FIDs, the KIDs and the seconds per image of each sampler. ``--train_steps=N``,
``--n=N``, ``--size=S`` (images SxS) and ``--batch=B`` (sampling batch) change the sizes.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import arg, figure, gpu_options, pick


def main() -> None:
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.evaluation.evaluate import evaluate
    from medgen.progress import set_quiet
    from medgen.training import train

    set_quiet(True)
    steps = arg("train_steps", pick(800, 20))
    n_images = arg("n", pick(64, 16))
    side = arg("size", 16)
    batch = arg("batch", 64)
    ddpm_steps = pick(1000, 100)
    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp) / "data", Path(tmp) / "run"
        t0 = time.perf_counter()
        prepare("builtin:brain-lesions", data, PrepareOptions(size=(side, side), source=SourceOptions(n=pick(1200, 200))))
        t1 = time.perf_counter()
        train("brain-ddpm-anomaly", data, run, profile="small",
              overrides=[f"train.max_steps={steps}", "train.epochs=1000", "train.val_every=1000", "data.subset={}",
                         f"sample.batch_size={batch}"], echo=lambda *_: None)
        t2 = time.perf_counter()
        res = evaluate(run=run, real=f"{data}@train", metrics="distribution", features="domain", n=n_images,
                       sweep=f"ddim:50,ddpm:{ddpm_steps}", echo=lambda *_: None)  # a JSON-ready dict
        t3 = time.perf_counter()
    assert not any(r["reused_from_cache"] for r in res["sweep"])  # a fresh run directory: both sets timed here
    per_image = {r["sampler"]: r["seconds_per_image"] for r in res["sweep"]}
    figure("sampler_quality", f"DDIM-50 vs DDPM-{ddpm_steps} speed (brain-ddpm-anomaly small, {side}x{side}, trained {steps} steps; "
           f"{n_images} images each, batches of {min(batch, n_images)})", "images/s", 1 / per_image["ddim"], 1 / per_image["ddpm"],
           f"DDPM-{ddpm_steps}, same model and seed", per_image["ddpm"] / per_image["ddim"],
           ">= 15" if ddpm_steps == 1000 else None, seconds_per_image=per_image, gpu_options=gpu_options())
    fid = {r["sampler"]: r["fid/domain"] for r in res["sweep"]}
    ratio = fid["ddim"] / fid["ddpm"]
    figure("sampler_quality", f"DDIM-50 vs DDPM-{ddpm_steps} FID, domain features (brain-ddpm-anomaly small, {side}x{side}, trained "
           f"{steps} steps; {n_images} images each vs the real training slices)", "FID", fid["ddim"], fid["ddpm"],
           f"DDPM-{ddpm_steps}, same model and seed", ratio, "<= 1.15" if ddpm_steps == 1000 else None,
           sweep=res["sweep"], features=res["features"],
           seconds={"prepare": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2}, gpu_options=gpu_options())


if __name__ == "__main__":
    main()
