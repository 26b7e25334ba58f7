"""What moves the radiomics FRD: known damage done to REAL images, measured against real ones.

The FRD target of the sample-quality work ("within 5x the real-vs-real FRD") only means something
if one knows which image differences the number sees. This bench takes the val split of a
prepared dataset (default: built-in ``mni152`` at 64x64, the demo's data), applies one known
perturbation at a time (Gaussian noise everywhere or only on tissue, Gaussian blur, lowered tissue
contrast), and prints the FRD of each perturbed set against the test split, for the whole-image
mask (what ``medgen evaluate --features radiomics`` uses) and the foreground mask
(``radiomics:foreground``), beside the unperturbed val-vs-test FRD. One JSON object.

    python bench/bench_radiomics_sensitivity.py [--data=DIR] [--source=builtin:mni152] [--size=64]
        [--run=RUN [--checkpoint=best-autoencoder]]

``--run``: one more row, the val split passed through that run's ``reconstruct`` (for a latent
diffusion run, its autoencoder: the FRD its decoder alone costs, a floor for the samples' FRD);
``--checkpoint`` picks the checkpoint folder (default: the run's final or latest one).

Features: :class:`medgen.evaluation.features.RadiomicsExtractor`, z-scored with the test split's
statistics (:func:`~medgen.evaluation.features.standardise`), Fréchet distance from
:func:`medgen.metrics.fid_from_features`, as ``medgen evaluate`` does.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import arg, machine


def perturbations(val: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    tissue = val > 0.05
    out = {"none (real val split)": val}
    for std in (0.005, 0.01, 0.02):
        out[f"noise std {std}, everywhere"] = np.clip(val + rng.normal(0, std, val.shape), 0, 1)
    out["noise std 0.02, tissue only"] = np.where(tissue, np.clip(val + rng.normal(0, 0.02, val.shape), 0, 1), val)
    for sigma in (0.5, 1.0):
        out[f"blur sigma {sigma} px"] = np.stack([gaussian_filter(v, (0, sigma, sigma)) for v in val])
    lowered = val.copy()
    mean = float(val[tissue].mean())
    lowered[tissue] = mean + (val[tissue] - mean) * 0.6
    out["tissue contrast x0.6"] = lowered
    return {k: v.astype(np.float32) for k, v in out.items()}


def main() -> None:
    from medgen.data.dataset import PreparedDataset
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.evaluation.features import RadiomicsExtractor, standardise
    from medgen.metrics import fid_from_features

    data = arg("data", "")
    if not data:
        data = str(Path(tempfile.mkdtemp(prefix="medgen-frd-")) / "data")
        side = arg("size", 64)
        prepare(arg("source", "builtin:mni152"), data, PrepareOptions(size=(side, side)), force=True)
    ds = PreparedDataset(data)
    test = np.asarray(ds.images[ds.select("test")], dtype=np.float32)
    val = np.asarray(ds.images[ds.select("val")], dtype=np.float32)
    t0 = time.time()
    variants = perturbations(val)
    run = arg("run", "")
    if run:
        import torch

        from medgen.sampling import load_run_model

        _, model, _ = load_run_model(run, checkpoint=arg("checkpoint", "") or None)
        with torch.no_grad():
            variants[f"reconstructed by {run}"] = model.reconstruct(torch.from_numpy(val)).clamp(0, 1).float().numpy()
    rows: dict = {}
    for mask in ("whole", "foreground"):
        ext = RadiomicsExtractor(mask=mask)
        f_test = ext(test)
        for name, images in variants.items():
            (a, b), _ = standardise(f_test, ext(images))
            rows.setdefault(name, {})[f"frd/{mask}"] = float(fid_from_features(a, b))
    for name, row in rows.items():
        for mask in ("whole", "foreground"):
            row[f"ratio_to_real/{mask}"] = row[f"frd/{mask}"] / rows["none (real val split)"][f"frd/{mask}"]
    print(json.dumps({"bench": "radiomics_sensitivity", "dataset": str(ds.root), "n_test": len(test), "n_val": len(val),
                      "frd": rows, "seconds": time.time() - t0, "machine": machine()}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
