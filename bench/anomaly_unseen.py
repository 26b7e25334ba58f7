"""Anomaly detection on brain slices that are NOT in this repository, made the way a user's data
would arrive: 16-bit PNGs of three orientations, non-square and padded, 64x64 once prepared.

The images: a T1-like contrast synthesised from the grey- and white-matter probability maps that
nilearn bundles (``mni_icbm152_gm/wm_tal_nlin_sym_09a``; CSF 0.30, grey 0.62, white 0.88 of the
full scale; the built-ins use the T1 template itself), with a smooth bias field
and noise; axial, coronal and sagittal slices from the central part of the brain. Lesions: one
per lesion image, 3-9 px across at 64x64, an irregular ellipse BRIGHTER or DARKER than the
tissue around it by 0.15-0.35 of the full scale, drawn at 64x64 so the mask is exact.

Layout written to OUT/: ``train/normal`` (72 normals + 24 for validation, prepared as one
folder), ``test/normal`` (40), ``test/lesion`` (40) and ``test_masks`` (a mask per lesion image).
Then: prepare, train ``--preset`` on the normals, ``medgen detect --input test --masks test_masks
--normal normal`` with each detector; results to OUT/results.json.

    PYTHONPATH=src python bench/anomaly_unseen.py --out /tmp/unseen [--preset brain-patchcore-anomaly]
        [--detectors patchcore,padim] [--detect-option tune=none] [--data-seed 1]
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

SIZE = 64
N_TRAIN, N_TEST = 96, 40


def volume() -> np.ndarray:
    import importlib.util

    import nibabel as nib

    data = Path(list(importlib.util.find_spec("nilearn").submodule_search_locations)[0]) / "datasets" / "data"
    # nilearn stores these probability maps as uint8 (0-255): scale them to [0, 1] before mixing,
    # or the mixture saturates and the slices are binary brain silhouettes
    gm = np.asarray(nib.load(data / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255.0
    wm = np.asarray(nib.load(data / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255.0
    brain = ndi.binary_fill_holes(ndi.binary_closing(gm + wm > 0.3, iterations=3))
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0, 1)
    t1 = 0.30 * csf + 0.62 * gm + 0.88 * wm
    return t1


def central_positions(vol: np.ndarray, axis: int, fraction: float = 0.6) -> np.ndarray:
    """Slice indices along ``axis`` whose brain area is at least ``fraction`` of the largest one."""
    area = (vol > 0.1).sum(axis=tuple(a for a in range(3) if a != axis))
    return np.flatnonzero(area >= fraction * area.max())


def slice_image(vol: np.ndarray, axis: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Slice ``k`` along ``axis`` as a user's PNG would hold it: padded square (not cropped to the
    brain), 64x64, with a smooth bias field and noise on the tissue."""
    img = np.rot90(np.take(vol, k, axis=axis))
    h, w = img.shape
    side = max(h, w)
    img = np.pad(img, (((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2)))
    img = ndi.zoom(img, SIZE / side, order=1)[:SIZE, :SIZE]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    bias = 1 + 0.08 * np.sin(2 * np.pi * (rng.uniform() + yy * rng.uniform(0.5, 1))) * np.cos(2 * np.pi * xx * rng.uniform(0.3, 1))
    return np.clip(img * bias + rng.normal(0, 0.01, img.shape) * (img > 0.05), 0, 1).astype(np.float32)


def slices(vol: np.ndarray, rng: np.random.Generator, n: int, exclude: set) -> list[np.ndarray]:
    out, central = [], [central_positions(vol, axis) for axis in range(3)]
    while len(out) < n:
        axis = len(out) % 3
        k = int(rng.choice(central[axis]))
        if (axis, k) in exclude:
            continue
        exclude.add((axis, k))
        out.append(slice_image(vol, axis, k, rng))
    return out


def add_lesion(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    diameter = rng.uniform(3, 9)
    r = diameter / 2
    tissue = ndi.binary_erosion(img > 0.45, iterations=int(np.ceil(r)))
    cand = np.argwhere(tissue) if tissue.any() else np.argwhere(img > 0.45)
    cy, cx = cand[rng.integers(len(cand))] + rng.uniform(-0.5, 0.5, 2)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    a, th = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    u = (yy - cy) * np.cos(th) + (xx - cx) * np.sin(th)
    v = (-(yy - cy) * np.sin(th) + (xx - cx) * np.cos(th)) / a
    d = np.sqrt(u * u + v * v) / r
    weight = np.clip((1 - d) * r / 0.6 + 0.5, 0, 1)
    local = float(ndi.gaussian_filter(img, max(1.0, r))[int(cy), int(cx)])
    delta = rng.uniform(0.15, 0.35)
    bright = rng.random() < 0.5 if local + delta <= 1.0 else False
    value = local + delta if bright else max(0.05, local - delta)
    return (img * (1 - weight) + value * weight).astype(np.float32), (weight > 0.5).astype(np.uint8)


def write_png(path: Path, img: np.ndarray, bits16: bool = True) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if bits16:
        Image.fromarray((np.clip(img, 0, 1) * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray((img > 0).astype(np.uint8) * 255).save(path)


def build(out: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vol = volume()
    used: set = set()
    for i, img in enumerate(slices(vol, rng, N_TRAIN, used)):
        write_png(out / "train" / "normal" / f"n{i:03d}.png", img)
    test = slices(vol, rng, 2 * N_TEST, used)
    for i, img in enumerate(test[:N_TEST]):
        write_png(out / "test" / "normal" / f"t{i:03d}.png", img)
    for i, img in enumerate(test[N_TEST:]):
        les, mask = add_lesion(img, rng)
        write_png(out / "test" / "lesion" / f"l{i:03d}.png", les)
        write_png(out / "test_masks" / f"l{i:03d}.png", mask, bits16=False)


def main() -> None:
    from anomaly_tiers import detect_options, parser, record, summary

    from medgen.anomaly import detect
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.training import train

    ap = parser()
    ap.add_argument("--data-seed", type=int, default=0,
                    help="another seed draws other slices, bias fields, noise and lesions (an independent set)")
    a = ap.parse_args()
    if not (a.out / "test_masks").exists():
        build(a.out, a.data_seed)
    data = a.out / "prepared"
    if not (data / "index.csv").exists():
        prepare(f"folder:{a.out / 'train'}", data, PrepareOptions(size=(SIZE, SIZE), workers=1, split=(0.75, 0.25, 0.0)))
    run = a.out / f"run-{a.preset}"
    if not (run / "checkpoints").exists():
        t0 = time.time()
        train(a.preset, data, run, profile=a.profile, subset=["label=normal"], overrides=a.set, echo=lambda *_: None)
        print(f"trained {a.preset} ({a.profile}) in {time.time() - t0:.0f} s")
    results = []
    for det in a.detectors.split(","):
        r = detect(run, input=a.out / "test", masks=a.out / "test_masks", normal="normal", detector=det, force=True,
                   out=a.out / "detect" / det, echo=lambda *_: None, **detect_options(a.detect_option))
        results.append(record("unseen", r["settings"]["detector"], r))
        print(summary(results[-1]), flush=True)
    (a.out / "results.json").write_text(json.dumps({"preset": a.preset, "profile": a.profile, "set": a.set, "data_seed": a.data_seed,
                                                     "results": results}, indent=2))


if __name__ == "__main__":
    main()
