"""Evaluation feature extraction, images/s, for the offline extractors (no weights to download):
``domain`` (medgen's small CNN trained on the real images; batches of 64) and ``radiomics``
(pyradiomics; worker processes from 64 images up), each against a plain per-image loop doing the
same computation in one process (median of 3 interleaved runs). The issue sets no target for
these: ``target_met`` is null.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from common import figure, gpu_options, paired_median, pick

REPEATS = pick(3, 1)


def bench_domain() -> None:
    from medgen.evaluation.domain import DomainSettings, build_domain_extractor

    rng = np.random.default_rng(0)
    n, size = pick(512, 64), 128
    images = rng.random((n, 1, size, size), dtype=np.float32)
    # the extractor's training is not what is measured: a few steps give a network of the real shape
    with tempfile.TemporaryDirectory() as cache:
        ext = build_domain_extractor(images[:64], np.arange(64) % 4, cache,
                                     settings=DomainSettings(epochs=1, max_steps=2), echo=lambda *_: None)
    net, work = ext.net, ext.size

    def per_image():
        with torch.no_grad():
            return [net.features(F.interpolate(torch.from_numpy(im[None]).to(ext.device), size=work, mode="area"))
                    for im in images]

    t = paired_median({"batched": lambda: ext(images), "plain": per_image}, repeats=REPEATS)
    batched, plain = t["batched"], t["plain"]
    figure("features", f"domain features, {n} images {size}x{size} (batches of 64 vs one image at a time)", "images/s",
           n / batched, n / plain, "plain per-image loop, same network", plain / batched, None,
           feature_dim=ext.dim, work_size=list(work), repeats=REPEATS, gpu_options=gpu_options())


def _plain_radiomics(images: np.ndarray) -> list[dict]:
    """pyradiomics as its documentation shows it, one image after another, with the settings medgen
    uses (fixed bin width 1/64, force2D, whole-image mask inside a one-pixel border)."""
    import logging

    import SimpleITK as sitk
    import radiomics
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    ext = featureextractor.RadiomicsFeatureExtractor(binWidth=1 / 64, force2D=True, force2Ddimension=0, label=1,
                                                     additionalInfo=False, preCrop=True)
    ext.disableAllFeatures()
    for c in ("firstorder", "glcm", "glrlm", "glszm"):
        ext.enableFeatureClassByName(c)
    out = []
    for im in images[:, 0]:
        vol = np.pad(im.astype(np.float64)[None], ((0, 0), (1, 1), (1, 1)), mode="edge")
        mask = np.zeros(vol.shape, dtype=np.uint8)
        mask[:, 1:-1, 1:-1] = 1
        out.append(ext.execute(sitk.GetImageFromArray(vol), sitk.GetImageFromArray(mask)))
    return out


def bench_radiomics() -> None:
    from medgen.evaluation.features import get_extractor

    n, size = pick(256, 64), 64  # >= 64 images: medgen's extractor uses worker processes
    # smooth random images: pure noise would give degenerate texture matrices
    images = F.avg_pool2d(torch.rand(n, 1, size + 7, size + 7, generator=torch.Generator().manual_seed(0)), 8, stride=1).numpy()
    ext = get_extractor("radiomics")
    t = paired_median({"medgen": lambda: ext(images), "plain": lambda: _plain_radiomics(images)}, repeats=REPEATS)
    ours, plain = t["medgen"], t["plain"]
    figure("features", f"radiomics features, {n} images {size}x{size} (worker processes vs one process)", "images/s",
           n / ours, n / plain, "plain per-image pyradiomics loop, one process", plain / ours, None,
           feature_dim=ext.dim, workers=max(1, min(4, os.cpu_count() or 1)), repeats=REPEATS)


def main() -> None:
    bench_domain()
    bench_radiomics()


if __name__ == "__main__":
    main()
