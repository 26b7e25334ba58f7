"""``medgen.evaluate``: compare synthetic with real images and write the results with their settings.

Two modes:

* a RUN: the run's synthetic images (generated here with :func:`medgen.sampling.generate`, seed and
  sampler/steps from the run's ``sample`` config, cached in ``RUN/evaluation/cache/``) against the
  TEST split of the run's dataset restricted to the run's subset; the TRAIN split is the reference
  of the memorisation audit and of the utility table. Results: ``RUN/metrics.json`` (section
  ``evaluation``) and figures in ``RUN/evaluation/``.
* two image sets (``real``/``fake``): folders of image files (read with
  :func:`medgen.data.io.read_image`), prepared datasets (``DIR`` or ``DIR@split``; a real dataset
  defaults to its test split, a fake one to all its items) or, from Python, arrays (N, C, *spatial)
  in [0, 1]. Results: ``OUT/metrics.json`` (default ``./evaluation``) and figures in ``OUT``.

Metric groups (``metrics``): reconstruction, fidelity (precision/recall/density/coverage),
distribution (FID, KID), intensity (histograms, KS, Wasserstein, bimodality), memorisation
(nearest-training-image audit in pixel and feature space); ``utility`` adds the
train-on-synthetic/test-on-real table. Every section records the settings that produced it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgen.errors import InputFileError, UserError

__all__ = ["GROUPS", "ImageSet", "evaluate", "load_image_set", "parse_sweep", "summary_tables"]

GROUPS = ("reconstruction", "fidelity", "distribution", "intensity", "memorisation")
SKIP_FILES = {"grid.png", "histogram.png", "histograms.png", "preview.png", "closest_pairs.png"}
PIXEL_SPACE_MAX = 64  # memorisation in pixel space: images shrunk so that no axis exceeds this
KID_SUBSETS, KID_SUBSET_SIZE, PRDC_K = 100, 1000, 5
GMM_MAX_SAMPLES = 5000  # pixels per side for the 2-component mixture of the bimodality check
CLOSEST_PAIRS_SHOWN = 8


@dataclass
class ImageSet:
    """Images (N, C, *spatial) float32 in [0, 1], optional per-image labels (str), and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None = None
    source: dict = field(default_factory=dict)
    dataset: Any = None  # a PreparedDataset when the set came from one
    ids: np.ndarray | None = None  # the dataset's item ids (index.csv "id"), to find an image again

    def __len__(self) -> int:
        return len(self.images)


# ----------------------------------------------------------------------------------------------
# loading image sets


def _is_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "index.csv").exists() and (path / "images.npy").exists()


def _split_spec(spec: str) -> tuple[Path, str | None]:
    """'DIR@test' -> (DIR, 'test'); a literal path containing '@' wins when it exists."""
    p = Path(spec).expanduser()
    if p.exists() or "@" not in spec:
        return p, None
    base, _, split = spec.rpartition("@")
    return Path(base).expanduser(), split or None


def _labels_or_none(labels: Sequence[str]) -> np.ndarray | None:
    arr = np.asarray([str(v) for v in labels], dtype=object)
    return None if len(arr) == 0 or all(v == "" for v in arr) else arr


def _dataset_set(path: Path, split: str | None, role: str) -> ImageSet:
    from medgen.data.dataset import PreparedDataset

    ds = PreparedDataset(path)
    if split is None:
        split = "test" if role == "real" and len(ds.select("test")) >= 2 else "all"
    rows = ds.select(None if split == "all" else split)
    if len(rows) == 0:
        splits = sorted(set(ds.index["split"]))
        raise UserError(f"no items in split '{split}' (splits: {', '.join(splits)}; use DIR@SPLIT or DIR@all)", path)
    labels = _labels_or_none(ds.index["label"].to_numpy()[rows])
    return ImageSet(np.asarray(ds.images[rows], dtype=np.float32), labels,
                    {"kind": "prepared dataset", "path": str(path.resolve()), "split": split, "n_images": int(len(rows))}, ds,
                    ds.index["id"].to_numpy()[rows])


def _folder_files(root: Path) -> tuple[list[Path], list[str] | None, dict]:
    from medgen.data.io import IMAGE_SUFFIXES, suffix_of

    manifest = root / "samples.json"
    if manifest.exists():  # a `medgen sample` folder: its own file list, labels and settings
        try:
            m = json.loads(manifest.read_text())
            files = [root / f["file"] for f in m["files"]]
            labels = [f.get("label", "") for f in m["files"]]
            meta = {k: m.get(k) for k in ("sampler", "steps", "seed", "guidance", "run", "format")}
            return files, labels, meta
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"samples.json is not a medgen sample manifest ({err})", manifest) from None
    files = sorted(p for p in root.rglob("*") if p.is_file() and suffix_of(p) in IMAGE_SUFFIXES
                   and p.name not in SKIP_FILES and not any(part.startswith(".") for part in p.relative_to(root).parts))
    rel = [p.relative_to(root).parts for p in files]
    labels = [r[0] for r in rel] if files and all(len(r) == 2 for r in rel) else None  # class sub-folders
    return files, labels, {}


def _scale_rule(images: list[np.ndarray]) -> tuple[float, float, str]:
    """One rule per set (never per image, which would erase real brightness differences)."""
    lo = min(float(a.min()) for a in images)
    hi = max(float(a.max()) for a in images)
    if lo >= 0 and hi <= 1.0 + 1e-6:
        return 0.0, 1.0, "none (values already in [0, 1])"
    if lo >= 0 and hi <= 255:
        return 0.0, 255.0, "divided by 255 (8-bit range)"
    if lo >= 0 and hi <= 65535:
        return 0.0, 65535.0, "divided by 65535 (16-bit range)"
    return lo, hi - lo if hi > lo else 1.0, f"min-max over the set ({lo:g}..{hi:g})"


def _resize(img: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None]
    shrink = all(s >= t for s, t in zip(img.shape[1:], spatial))
    mode = "area" if shrink else ("bilinear" if len(spatial) == 2 else "trilinear")
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=spatial, mode=mode, **kw)[0].numpy()


def _conform(images: list[np.ndarray], files: list[Path], target: tuple[int, ...] | None, resize: bool, role: str) -> tuple[np.ndarray, dict]:
    """Stack images of one shape: ``target`` (C, *spatial) or the most common shape of the set."""
    shapes = [a.shape for a in images]
    target = tuple(target) if target is not None else Counter(shapes).most_common(1)[0][0]
    odd = [(f, s) for f, s in zip(files, shapes) if s != target]
    info = {"shape": list(target), "n_resized": 0}
    if odd:
        bad = [(f, s) for f, s in odd if len(s) != len(target) or s[0] != target[0]]
        if bad or not resize:
            shown = "; ".join(f"{f} {tuple(s)}" for f, s in (bad or odd)[:5])
            more = f" and {len(bad or odd) - 5} more" if len(bad or odd) > 5 else ""
            why = "different channel count or dimensionality" if bad else "different size (resizing is off)"
            raise UserError(f"{role} images do not match the expected shape (C, *spatial) = {target}: {why}: {shown}{more}")
        images = [(_resize(a, target[1:]) if a.shape != target else a) for a in images]
        info.update(n_resized=len(odd), resized_examples=[str(f) for f, _ in odd[:5]],
                    resize_method="area when shrinking, else bilinear/trilinear")
    return np.stack(images).astype(np.float32), info


def load_image_set(spec: Any, role: str = "fake", target: tuple[int, ...] | None = None, resize: bool = True) -> ImageSet:
    """A folder of images, a prepared dataset (``DIR`` / ``DIR@split``), an array, or an ImageSet.

    Folders: every readable image file below it (a ``medgen sample`` folder's samples.json is
    followed, its labels and settings kept; class sub-folders give labels). One intensity rule per
    set maps it to [0, 1] (see :func:`_scale_rule`). Images whose size differs from ``target``
    (else from the set's most common shape) are resized when ``resize``, otherwise refused with a
    message naming the files.
    """
    if isinstance(spec, ImageSet):
        return spec
    if isinstance(spec, np.ndarray) or hasattr(spec, "detach"):
        arr = np.asarray(spec.detach().cpu().numpy() if hasattr(spec, "detach") else spec, dtype=np.float32)
        if arr.ndim not in (4, 5):
            raise UserError(f"{role} images must be (N, C, H, W) or (N, C, D, H, W), got shape {arr.shape}")
        if target is not None and arr.shape[1:] != tuple(target):
            if not resize or arr.shape[1] != target[0] or arr.ndim - 1 != len(target):
                raise UserError(f"{role} images have shape {arr.shape[1:]}, expected {tuple(target)}")
            arr = np.stack([_resize(a, tuple(target[1:])) for a in arr])
        return ImageSet(arr, None, {"kind": "array", "n_images": int(len(arr))})
    path, split = _split_spec(str(spec))
    if not path.exists():
        raise UserError(f"{role} images not found", path)
    if _is_dataset(path):
        s = _dataset_set(path, split, role)
        if target is not None and s.images.shape[1:] != tuple(target):
            s.images, info = _conform(list(s.images), [path] * len(s), target, resize, role)
            s.source.update(info)
        return s
    if split is not None:
        raise UserError(f"'@{split}' selects a split of a prepared dataset; this is not one", path)
    if path.is_file():
        raise UserError(f"{role}: give a folder of images or a prepared dataset, not a single file", path)
    files, labels, meta = _folder_files(path)
    if not files:
        raise UserError(f"no image files in this {role} folder", path)
    from medgen.data.io import read_image

    images, errors = [], []
    for f in files:
        try:
            images.append(read_image(f))
        except InputFileError as err:
            errors.append(str(err))
    if errors:
        raise UserError(f"{len(errors)} {role} image file(s) could not be read: " + "; ".join(errors[:5])
                        + (" ..." if len(errors) > 5 else ""))
    if meta.get("format") in ("png", "dcm") and all(a.shape[0] == 1 for a in images):
        # medgen's own export: grey PNG and DICOM are 16-bit whatever the brightest pixel is
        offset, scale, rule = 0.0, 65535.0, "divided by 65535 (medgen sample export, 16-bit)"
    elif meta.get("format") in ("npy", "nii"):
        offset, scale, rule = 0.0, 1.0, "none (medgen sample export, values in [0, 1])"
    else:
        offset, scale, rule = _scale_rule(images)
    images = [(a - offset) / scale for a in images]
    stacked, info = _conform(images, files, target, resize, role)
    source = {"kind": "folder", "path": str(path.resolve()), "n_images": len(files), "intensity_scaling": rule, **info}
    source.update({k: v for k, v in meta.items() if v is not None})
    return ImageSet(stacked, _labels_or_none(labels) if labels is not None else None, source)


# ----------------------------------------------------------------------------------------------
# small helpers


def parse_sweep(spec: str | Sequence[Any] | None) -> list[dict]:
    """'ddpm:1000,ddim:50' or [{sampler, steps}, ...] -> [{"sampler", "steps"}, ...]."""
    if spec is None:
        return []
    items: list[Any]
    if isinstance(spec, str):
        if spec.strip().lower() in ("", "none", "off"):
            return []
        items = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        items = list(spec)
    out = []
    for item in items:
        if isinstance(item, dict):
            sampler, steps = item.get("sampler"), item.get("steps")
        else:
            sampler, _, steps = str(item).partition(":")
        sampler = str(sampler or "").strip().lower()
        if sampler not in ("ddpm", "ddim"):
            raise UserError(f"bad sweep setting '{item}': expected SAMPLER:STEPS with SAMPLER ddpm or ddim, e.g. ddpm:1000,ddim:50")
        try:
            steps = int(steps) if steps not in (None, "") else None
        except (TypeError, ValueError):
            raise UserError(f"bad sweep setting '{item}': STEPS must be an integer") from None
        if steps is not None and steps < 1:
            raise UserError(f"bad sweep setting '{item}': STEPS must be >= 1")
        out.append({"sampler": sampler, "steps": steps})
    return out


def _parse_groups(metrics: str | Sequence[str] | None, default: Sequence[str]) -> tuple[list[str], bool]:
    items = default if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
    names = [p.strip().lower() for item in items for p in str(item).split(",") if p.strip()]
    want_utility = "utility" in names
    names = [n for n in names if n != "utility"]
    if "all" in names:
        names = list(GROUPS)
    bad = [n for n in names if n not in GROUPS]
    if bad:
        raise UserError(f"unknown metric group(s) {', '.join(bad)}; choose from {', '.join(GROUPS)}, utility, all")
    return [g for g in GROUPS if g in names], want_utility


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None  # JSON has no NaN/inf
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _shrink_pixels(images: np.ndarray, cap: int = PIXEL_SPACE_MAX) -> tuple[np.ndarray, tuple[int, ...]]:
    import torch

    from medgen.evaluation.domain import to_work

    size = tuple(min(int(s), cap) for s in images.shape[2:])
    out = to_work(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), size).numpy()
    return out.reshape(len(out), -1), size


def _memorisation_quantile(n_test: int) -> float:
    """0.05 for small test sets (a stable 1 % quantile needs ~1,000 test images), 0.01 from 1,000 on."""
    return float(min(0.05, max(0.01, 10.0 / max(n_test, 1))))


def _ckpt_fingerprint(run) -> str:
    from medgen.training import latest_checkpoint

    ckpt = latest_checkpoint(run)
    parts = []
    if ckpt is not None:
        for f in sorted(ckpt.iterdir()):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _generate_cached(model, fingerprint: str, n: int, label_ids: np.ndarray | None, sampler: str, steps: int | None,
                     seed: int, guidance: float, batch_size: int, cache_dir: Path, echo) -> tuple[np.ndarray, np.ndarray | None, float, bool]:
    """Generated images, quantised to 16 bits like an exported PNG (so a cached and a fresh set are
    identical), label ids, seconds per image (measured when generated), and whether it was cached."""
    import torch

    from medgen.sampling import generate

    key_src = {"ckpt": fingerprint, "n": n, "sampler": sampler, "steps": steps, "seed": seed, "guidance": guidance,
               "labels": hashlib.sha256(np.asarray(label_ids if label_ids is not None else [], dtype=np.int64).tobytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir / f"samples-{sampler}-{steps}-seed{seed}-n{n}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                labels = z["labels"] if z["labels"].size else None
                return z["images"].astype(np.float32) / 65535.0, labels, float(z["seconds_per_image"]), True
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache file: generate again
    echo(f"generating {n} images ({sampler}, {steps} steps, seed {seed})")
    y = torch.as_tensor(label_ids, dtype=torch.long) if label_ids is not None else None
    t0 = time.perf_counter()
    images, labels = generate(model, n, y, sampler, steps, guidance, seed, batch_size, describe=f"evaluate {sampler}-{steps}")
    seconds = (time.perf_counter() - t0) / max(n, 1)
    q = np.round(np.clip(images, 0, 1) * 65535).astype(np.uint16)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".samples.", suffix=".npz", dir=cache_dir)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=q, labels=labels if labels is not None else np.zeros(0, np.int64), seconds_per_image=seconds)
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: the next evaluation generates again
    return q.astype(np.float32) / 65535.0, labels, seconds, False


def _proportional(ids: np.ndarray, n: int) -> np.ndarray:
    """n label ids in the proportions of ``ids`` (evenly spaced picks from the sorted ids)."""
    s = np.sort(ids)
    return s[np.linspace(0, len(s) - 1, n).round().astype(int)] if n > 0 else s[:0]


# ----------------------------------------------------------------------------------------------
# metric groups


def _distribution(f_real: np.ndarray, f_fake: np.ndarray) -> dict:
    from medgen.metrics import fid_from_features, kid

    if len(f_real) < 2 or len(f_fake) < 2:
        return {"skipped": "FID and KID need at least 2 images on each side"}
    size = int(min(KID_SUBSET_SIZE, len(f_real), len(f_fake)))
    # Sets of equal size <= the subset size: every subset is both whole sets, so one is enough.
    subsets = 1 if len(f_real) == len(f_fake) == size else KID_SUBSETS
    k_mean, k_std = kid(f_real, f_fake, subsets=subsets, subset_size=KID_SUBSET_SIZE)
    return {"fid": fid_from_features(f_real, f_fake), "kid_mean": k_mean, "kid_std": k_std,
            "kid_subsets": subsets, "kid_subset_size": size,
            "feature_dim": int(f_real.shape[1])}


def _fidelity(f_real: np.ndarray, f_fake: np.ndarray) -> dict:
    from medgen.metrics import prdc

    k = min(PRDC_K, len(f_real) - 1, len(f_fake) - 1)
    if k < 1:
        return {"skipped": "precision/recall/density/coverage need at least 2 images on each side"}
    return {**prdc(f_real, f_fake, k=k), "k": int(k)}


def _intensity(real: ImageSet, fake: ImageSet, fig_path: Path | None) -> dict:
    from medgen.metrics import compare_intensities, compare_intensities_by_class, mse_all_pairs

    kw = {"value_range": (0.0, 1.0), "gmm_max_samples": GMM_MAX_SAMPLES}
    overall = compare_intensities(real.images, fake.images, **kw)
    out = {"all": {**overall, "mse_all_pairs": mse_all_pairs(real.images, fake.images)}, "by_class": None}
    if real.labels is not None and fake.labels is not None:
        out["by_class"] = compare_intensities_by_class(real.images, real.labels, fake.images, fake.labels, **kw)
    if fig_path is not None:
        out["figure"] = str(_histogram_figure(out, fig_path))
    return out


def _histogram_figure(result: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("all images", result["all"])]
    for label, r in (result.get("by_class") or {}).items():
        if "histogram" in r:
            panels.append((f"class {label}", r))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.0 * ncols, 2.9 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (title, r) in zip(axes.ravel(), panels):
        edges = np.asarray(r["histogram"]["bin_edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        ax.fill_between(centres, r["histogram"]["real_density"], step="mid", alpha=0.45, label="real")
        ax.fill_between(centres, r["histogram"]["fake_density"], step="mid", alpha=0.45, label="synthetic")
        ax.set_yscale("symlog", linthresh=0.1)
        bm = r["bimodality"]
        ax.set_title(f"{title}: KS {r['ks_statistic']:.3f}, W1 {r['wasserstein']:.3g}\n"
                     f"BC real {bm['real']['bimodality_coefficient']:.2f} / synthetic {bm['fake']['bimodality_coefficient']:.2f}",
                     fontsize=8)
        ax.set_xlabel("intensity", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _audit(fake_x: np.ndarray, train_x: np.ndarray, test_x: np.ndarray, space: str, fake_images: np.ndarray,
           train_images: np.ndarray, fig_path: Path | None, train_ids: np.ndarray | None = None) -> dict:
    from medgen.metrics import closest_pairs_figure, memorisation_audit

    q = _memorisation_quantile(len(test_x))
    audit = memorisation_audit(fake_x, train_x, test_x, space_name=space, quantile=q)
    for key in ("nn_distance", "nn_index", "nn_ratio", "flagged", "test_nn_distance"):
        audit.pop(key, None)
    if train_ids is not None:  # "train" is an index into the training split; name the dataset item too
        for pair in audit["closest_pairs"]:
            pair["train_id"] = str(train_ids[pair["train"]])
    if fig_path is not None and audit["closest_pairs"]:
        title = f"closest synthetic/training pairs ({space}); {audit['n_flagged']} of {audit['n_synthetic']} flagged"
        audit["figure"] = str(closest_pairs_figure(fake_images, train_images, audit["closest_pairs"], fig_path,
                                                   max_pairs=CLOSEST_PAIRS_SHOWN, title=title))
    return audit


# ----------------------------------------------------------------------------------------------
# the orchestration


class _Features:
    """Extractors built on first use; real/train/test features computed once per extractor."""

    def __init__(self, specs, domain_factory, device, echo):
        self.specs = specs
        self.domain_factory = domain_factory
        self.device = device
        self.echo = echo
        self._ext: dict = {}
        self._cache: dict = {}

    def names(self) -> list[str]:
        return [n for n, _ in self.specs]

    def get(self, name: str):
        from medgen.evaluation.features import get_extractor

        if name not in self._ext:
            arg = dict(self.specs)[name]
            self._ext[name] = get_extractor(name, arg, domain_factory=self.domain_factory, device=self.device)
        return self._ext[name]

    def of(self, name: str, key: str, images: np.ndarray) -> np.ndarray:
        if (name, key) not in self._cache:
            self.echo(f"features: {name} of {len(images)} {key} images")
            self._cache[(name, key)] = self.get(name)(images)
        return self._cache[(name, key)]

    def describe(self) -> list[dict]:
        return [self._ext[n].describe() for n in self.names() if n in self._ext]


def _ref(ext) -> dict:
    d = {"name": ext.name, "weights": str(ext.weights) if ext.weights else None}
    if getattr(ext, "meta", None):
        d["training"] = {k: v for k, v in ext.describe()["training"].items()
                         if k in ("kind", "val_accuracy", "chance_accuracy", "val_reconstruction_mse", "mean_image_mse")}
    return d


def _evaluate_setting(groups: list[str], real: ImageSet, fake: ImageSet, feats: _Features, mem_sets, settings: dict,
                      fig_dir: Path | None, echo) -> dict:
    from medgen.evaluation.features import standardise

    out: dict = {}
    counts = {"n_real": len(real), "n_fake": len(fake)}
    fake_features: dict = {}

    def of_fake(name: str) -> np.ndarray:
        if name not in fake_features:
            echo(f"features: {name} of {len(fake)} synthetic images")
            fake_features[name] = feats.get(name)(fake.images)
        return fake_features[name]

    want_features = any(g in groups for g in ("fidelity", "distribution"))
    if want_features:
        if "distribution" in groups:
            out["distribution"] = {}
        if "fidelity" in groups:
            out["fidelity"] = {}
        for name in feats.names():
            ext = feats.get(name)
            f_real = feats.of(name, "real", real.images)
            f_fake = of_fake(name)
            norm_info = None
            if ext.standardise:
                (f_real, f_fake), norm_info = standardise(f_real, f_fake)
            ctx = {"settings": {**settings, **counts, "features": _ref(ext), **({"standardisation": norm_info} if norm_info else {})}}
            if "distribution" in groups:
                d = _distribution(f_real, f_fake)
                if name == "radiomics" and "fid" in d:
                    d["frd"] = d["fid"]  # the Fréchet distance of radiomics features is the FRD
                out["distribution"][name] = {**d, **ctx}
            if "fidelity" in groups:
                out["fidelity"][name] = {**_fidelity(f_real, f_fake), **ctx}
    if "intensity" in groups:
        res = _intensity(real, fake, fig_dir / "histograms.png" if fig_dir else None)
        out["intensity"] = {**res, "settings": {**settings, **counts, "value_range": [0.0, 1.0]}}
    if "memorisation" in groups:
        if mem_sets is None:
            out["memorisation"] = {"skipped": "needs the training and test splits of a prepared dataset "
                                              "(a run, or --real DATASET)"}
        else:
            train, test, test_is_real = mem_sets
            mem: dict = {}
            fx, size = _shrink_pixels(fake.images)
            tx, _ = _shrink_pixels(train.images)
            sx, _ = _shrink_pixels(test.images)
            space = f"pixels ({'x'.join(map(str, size))}, area-shrunk)" if size != tuple(fake.images.shape[2:]) else "pixels"
            mem["pixels"] = _audit(fx, tx, sx, space, fake.images, train.images, fig_dir / "closest_pairs.png" if fig_dir else None,
                                   train.ids)
            mem["pixels"]["settings"] = {**settings, "n_fake": len(fake), "n_train": len(train), "n_test": len(test),
                                         "space": space}
            name = feats.names()[0]
            ext = feats.get(name)
            f_fake = of_fake(name)
            f_train = feats.of(name, "train", train.images)
            f_test = feats.of(name, "real", real.images) if test_is_real else feats.of(name, "test", test.images)
            if ext.standardise:
                f_ref = feats.of(name, "real", real.images)
                (_, f_fake, f_train, f_test), _ = standardise(f_ref, f_fake, f_train, f_test)
            mem["features"] = _audit(f_fake, f_train, f_test, f"features ({name})", fake.images, train.images,
                                     fig_dir / f"closest_pairs_{name}.png" if fig_dir else None, train.ids)
            mem["features"]["settings"] = {**settings, "n_fake": len(fake), "n_train": len(train), "n_test": len(test),
                                           "features": _ref(ext)}
            out["memorisation"] = mem
    return out


def _reconstruction(model, real: ImageSet, batch_size: int) -> dict:
    import torch

    from medgen.metrics import paired_metrics

    recon = []
    with torch.no_grad():
        for start in range(0, len(real), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(real.images[start:start + batch_size])).to(model.device)
            recon.append(model.reconstruct(x).float().clamp(0, 1).cpu().numpy())
    recon = np.concatenate(recon)
    scores = paired_metrics(real.images, recon)
    return {name: {"mean": s.mean, "std": float(np.std(s.per_image)), "settings": s.settings} for name, s in scores.items()}


def _summary(result: dict) -> dict:
    """Flat {"fid/domain": value, ...} of the headline numbers (for tables and `medgen runs`)."""
    s: dict = {}
    for name, d in (result.get("distribution") or {}).items():
        for k in ("fid", "kid_mean", "kid_std"):
            if k in d:
                s[f"{'frd' if (k == 'fid' and name == 'radiomics') else k}/{name}"] = d[k]
    for name, d in (result.get("fidelity") or {}).items():
        for k in ("precision", "recall", "density", "coverage"):
            if k in d:
                s[f"{k}/{name}"] = d[k]
    inten = (result.get("intensity") or {}).get("all")
    if inten:
        s["intensity/ks"] = inten["ks_statistic"]
        s["intensity/wasserstein"] = inten["wasserstein"]
        if "mse_all_pairs" in inten:
            s["intensity/mse"] = inten["mse_all_pairs"]["mse"]
    for space, d in (result.get("memorisation") or {}).items():
        if isinstance(d, dict) and "fraction_flagged" in d:
            s[f"memorisation/{space}/fraction_flagged"] = d["fraction_flagged"]
    for k, d in (result.get("reconstruction") or {}).items():
        if isinstance(d, dict) and "mean" in d:
            s[f"reconstruction/{k}"] = d["mean"]
    return s


def _fake_settings(fake: ImageSet) -> dict:
    src = fake.source
    return {"sampler": src.get("sampler"), "steps": src.get("steps"), "seed": src.get("seed"), "guidance": src.get("guidance")}


def evaluate(run: str | Path | None = None, real: Any = None, fake: Any = None, metrics: str | Sequence[str] | None = None,
             features: str | Sequence[str] | None = None, utility: bool = False, n: int | None = None,
             sweep: str | Sequence[Any] | None = None, out: str | Path | None = None, echo=print, *,
             utility_ratio: float = 1.0, utility_mix: float = 1.0, utility_seeds: int | Sequence[int] = 3,
             utility_settings: Any = None, resize: bool = True, device: str | None = None) -> dict:
    """Evaluate a run's synthetic images (or any two image sets); see the module docstring.

    run: a trained run directory. real / fake: folders, prepared datasets (DIR or DIR@split) or
    arrays; with a run they replace the run's test split / generated images. metrics: groups (list
    or comma string; default the run's ``evaluate.metrics``, else fidelity, distribution,
    intensity, memorisation). features: ``NAME[:PATH]`` (comma-separated for several; default the
    run's ``evaluate.features``, else ``domain``). utility: add the train-on-synthetic table
    (``utility_ratio`` synthetic images per real training image and class, ``utility_mix``
    synthetic per real image in the mixed set, ``utility_seeds`` seeds or a list of them,
    ``utility_settings`` a :class:`~medgen.evaluation.domain.DomainSettings` for the classifier). n:
    number of synthetic images. sweep: 'ddpm:1000,ddim:50' or [{sampler, steps}], one row per
    setting ('none' turns the config's sweep off). out: output folder without a run
    (default ./evaluation). Returns the JSON-able result that is written to metrics.json.
    """
    from medgen.evaluation.features import parse_feature_specs

    if run is None and (real is None or fake is None):
        raise UserError("give a RUN, or both --real and --fake (image folders or prepared datasets)")
    notes: list[str] = []
    cfg = model = run_dir = ds = None
    data: dict = {}
    if run is not None:
        from medgen.sampling import load_run_model

        cfg, model, run_dir = load_run_model(run, device=device)
        ev = cfg.evaluate
        groups, want_utility = _parse_groups(metrics, ev.metrics)
        feature_specs = parse_feature_specs(features if features is not None else ev.features)
        utility = bool(utility or want_utility or ev.utility)
        # the config's sweep applies to generated images only; an explicit --sweep with --fake is an error below
        sweep_list = parse_sweep(sweep if sweep is not None else (None if fake is not None else ev.sweep))
        fig_dir = run_dir.root / "evaluation"
    else:
        groups, want_utility = _parse_groups(metrics, ["fidelity", "distribution", "intensity", "memorisation"])
        feature_specs = parse_feature_specs(features)
        utility = bool(utility or want_utility)
        sweep_list = parse_sweep(sweep)
        if sweep_list:
            raise UserError("--sweep generates images: it needs a RUN")
        fig_dir = Path(out) if out is not None else Path("evaluation")
    if n is not None and n < 2:
        raise UserError(f"--n must be at least 2 (FID needs 2 images per side), got {n}")

    # ---- the real side, the training reference, the domain-extractor data ----------------------
    mem_sets = None
    train_set = test_set = None
    if run is not None:
        from medgen.data.dataset import PreparedDataset

        data = run_dir.data()
        if not data.get("dataset"):
            raise UserError("run has no data.json naming its dataset", run_dir.root)
        ds = PreparedDataset(data["dataset"])
        subset = data.get("subset") or {}
        train_rows = ds.select(data.get("train_split", "train"), subset)
        test_rows = ds.select("test", subset)
        real_split = "test"
        if len(test_rows) < 2:
            test_rows = ds.select(data.get("val_split", "val"), subset)
            real_split = data.get("val_split", "val")
            notes.append(f"the test split has fewer than 2 images (subset {subset}); the {real_split} split is the real side")
        if len(test_rows) < 2:
            raise UserError(f"the dataset has fewer than 2 test (or val) images for subset {subset or '{}'}; "
                            "prepare it with a test fraction (--split 0.8,0.1,0.1)", ds.root)
        labels_of = ds.index["label"].to_numpy()
        test_set = ImageSet(np.asarray(ds.images[test_rows], dtype=np.float32), _labels_or_none(labels_of[test_rows]),
                            {"kind": "run dataset", "path": str(ds.root), "split": real_split, "subset": subset,
                             "n_images": int(len(test_rows))}, ds, ds.index["id"].to_numpy()[test_rows])
        train_set = ImageSet(np.asarray(ds.images[train_rows], dtype=np.float32), _labels_or_none(labels_of[train_rows]),
                             {"kind": "run dataset", "path": str(ds.root), "split": data.get("train_split", "train"),
                              "subset": subset, "n_images": int(len(train_rows))}, ds, ds.index["id"].to_numpy()[train_rows])
        target = tuple(ds.images.shape[1:])
        real_set = load_image_set(real, "real", target, resize) if real is not None else test_set
        if len(train_set) >= 1:
            mem_sets = (train_set, test_set, real_set is test_set)
        test_ids = ds.label_ids(test_rows)
        if real_set is not test_set and real_set.labels is not None:
            lookup = {lab: i for i, lab in enumerate(model.info.labels)}
            test_ids = np.array([lookup[v] for v in real_set.labels if v in lookup], dtype=np.int64)
    else:
        real_set = load_image_set(real, "real", None, resize)
        target = tuple(real_set.images.shape[1:])
        ds = real_set.dataset
        if ds is not None:
            tr = ds.select("train")
            te = ds.select("test")
            labels_of = ds.index["label"].to_numpy()
            if len(tr) and len(te):
                train_set = ImageSet(np.asarray(ds.images[tr], dtype=np.float32), _labels_or_none(labels_of[tr]),
                                     {"kind": "prepared dataset", "path": str(ds.root), "split": "train", "n_images": int(len(tr))}, ds,
                                     ds.index["id"].to_numpy()[tr])
                test_set = ImageSet(np.asarray(ds.images[te], dtype=np.float32), _labels_or_none(labels_of[te]),
                                    {"kind": "prepared dataset", "path": str(ds.root), "split": "test", "n_images": int(len(te))}, ds)
                mem_sets = (train_set, test_set, real_set.source.get("split") == "test")
    if len(real_set) < 2:
        raise UserError(f"the real set has {len(real_set)} image(s); at least 2 are needed")

    device_name = device
    out_root = run_dir.root if run_dir is not None else fig_dir
    cache_dir = _writable_cache(ds.root if ds is not None else None, out_root)

    def domain_factory(_arg):
        from medgen.evaluation.domain import DomainSettings, build_domain_extractor

        settings = DomainSettings()
        if ds is not None:
            rows = ds.select(data.get("train_split", "train") if data else "train")
            if len(rows) > settings.max_train:
                rows = np.sort(np.random.default_rng(settings.seed).choice(rows, settings.max_train, replace=False))
            val_rows = ds.select(data.get("val_split", "val") if data else "val")
            x, xv = np.asarray(ds.images[rows], dtype=np.float32), np.asarray(ds.images[val_rows], dtype=np.float32)
            y, yv = ds.label_ids(rows), ds.label_ids(val_rows)
            if x.shape[1:] != target:
                x = np.stack([_resize(a, target[1:]) for a in x])
                xv = np.stack([_resize(a, target[1:]) for a in xv]) if len(xv) else xv
            return build_domain_extractor(x, y, cache_dir, xv, yv, ds.labels, settings,
                                          trained_on=f"{ds.root} (splits train/val, all labels)", device=device_name, echo=echo)
        names = sorted(set(real_set.labels)) if real_set.labels is not None else []
        y = np.array([names.index(v) for v in real_set.labels]) if names else None
        notes.append("the domain extractor was trained on the --real images themselves (no prepared dataset given): "
                     "real features are in-sample, which favours the real side slightly")
        return build_domain_extractor(real_set.images, y, cache_dir, None, None, names or None, settings,
                                      trained_on=f"the --real images ({real_set.source.get('path', 'array')})",
                                      device=device_name, echo=echo)

    feats = _Features(feature_specs, domain_factory, device_name, echo)
    if any(g in groups for g in ("fidelity", "distribution", "memorisation")):
        for name in feats.names():  # fail early on missing weights, before any generation
            feats.get(name)

    # ---- the synthetic side -------------------------------------------------------------------
    result: dict = {
        "medgen_version": _version(), "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "mode": "run" if run is not None else "sets", "run": str(run_dir.root) if run_dir is not None else None,
        "metrics": groups, "real": real_set.source,
    }
    settings_rows: list[dict] = []
    if run is not None and fake is None:
        sc = cfg.sample
        T = getattr(getattr(model, "denoiser", None), "T", None)
        n_fake = n or min(len(real_set), cfg.evaluate.n_samples or 200)
        gen_labels = _proportional(test_ids, n_fake) if getattr(model, "conditional", False) and len(test_ids) else None
        fingerprint = _ckpt_fingerprint(run_dir)
        for s in (sweep_list or [{"sampler": sc.sampler, "steps": sc.steps}]):
            steps = s["steps"] or sc.steps or T
            if T is not None and steps is not None and steps > T:
                raise UserError(f"sweep/steps {steps} exceeds the {T} timesteps this model was trained with")
            settings_rows.append({"sampler": s["sampler"], "steps": steps, "seed": sc.seed, "guidance": sc.guidance,
                                  "n": n_fake, "labels": gen_labels})
    elif run is not None:
        if sweep_list:
            raise UserError("--sweep generates images; it cannot be combined with --fake")
        settings_rows.append({"fake": load_image_set(fake, "fake", target, resize)})
    else:
        settings_rows.append({"fake": load_image_set(fake, "fake", target, resize)})

    sweep_rows = []
    primary_fake = None
    for i, s in enumerate(settings_rows):
        if not groups and "fake" not in s:
            break  # nothing to compare (e.g. --metrics utility): generate nothing here
        if "fake" in s:
            fake_set = s["fake"]
            if n is not None and n < len(fake_set):
                fake_set = ImageSet(fake_set.images[:n], None if fake_set.labels is None else fake_set.labels[:n],
                                    {**fake_set.source, "n_images": n, "note": f"first {n} images"})
            seconds, cached = None, None
        else:
            imgs, lab_ids, seconds, cached = _generate_cached(
                model, fingerprint, s["n"], s["labels"], s["sampler"], s["steps"], s["seed"], s["guidance"],
                cfg.sample.batch_size, run_dir.root / "evaluation" / "cache", echo)
            labels = np.asarray([model.info.labels[int(k)] for k in lab_ids], dtype=object) if lab_ids is not None else None
            fake_set = ImageSet(imgs, labels, {"kind": "generated", "sampler": s["sampler"], "steps": s["steps"],
                                               "seed": s["seed"], "guidance": s["guidance"], "n_images": len(imgs),
                                               "seconds_per_image": seconds, "reused_from_cache": cached,
                                               "checkpoint": fingerprint, "quantised": "16-bit, like an exported PNG"})
        if len(fake_set) < 2:
            raise UserError(f"the synthetic set has {len(fake_set)} image(s); at least 2 are needed")
        primary = i == 0
        tag = f"{fake_set.source.get('sampler')}-{fake_set.source.get('steps')}"
        fdir = fig_dir if primary else fig_dir / tag
        settings = _fake_settings(fake_set)
        res = _evaluate_setting(groups, real_set, fake_set, feats, mem_sets, settings, fdir, echo)
        if primary:
            result["fake"] = fake_set.source
            result.update(res)
            primary_fake = fake_set
        if sweep_list:
            sweep_rows.append({**settings, "n_fake": len(fake_set), "seconds_per_image": seconds,
                               "reused_from_cache": cached, **_summary(res)})

    result["features"] = feats.describe()
    if sweep_rows:
        result["sweep"] = sweep_rows
    if "reconstruction" in groups:
        if model is None:
            result["reconstruction"] = {"skipped": "needs a RUN of an autoencoding model"}
        elif not getattr(model, "can_reconstruct", False):
            result["reconstruction"] = {"skipped": f"model family '{cfg.model.family}' does not reconstruct images"}
        else:
            echo(f"reconstruction of {len(real_set)} real images")
            rec = _reconstruction(model, real_set, cfg.sample.batch_size)
            rec["settings"] = {"n_images": len(real_set), "split": real_set.source.get("split")}
            result["reconstruction"] = rec

    if utility:
        result["utility"] = _utility(model, cfg, run_dir, fingerprint if run is not None and fake is None else None,
                                     train_set, test_set, primary_fake if (run is None or fake is not None) else None,
                                     utility_ratio, utility_mix, utility_seeds, utility_settings, fig_dir, echo)
    result["summary"] = _summary(result)
    if notes:
        result["notes"] = notes
    result = _jsonable(result)
    if run_dir is not None:
        run_dir.update_metrics("evaluation", result)
        result["output"] = str(run_dir.metrics_path)
    else:
        from medgen.fsio import atomic_write_json

        path = fig_dir / "metrics.json"
        atomic_write_json(path, {"evaluation": result})
        result["output"] = str(path)
    return result


def _utility(model, cfg, run_dir, fingerprint, train_set: ImageSet | None, test_set: ImageSet | None, fake: ImageSet | None,
             ratio: float, mix: float, seeds: int | Sequence[int], settings: Any, fig_dir: Path, echo) -> dict:
    from medgen.evaluation.utility import utility_table

    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if train_set is None or test_set is None or train_set.labels is None or test_set.labels is None:
        return {"skipped": "needs labelled real training and test splits (a run, or --real PREPARED_DATASET)"}
    classes = sorted(set(train_set.labels))
    if len(classes) < 2:
        return {"skipped": f"needs at least 2 classes in the real training split, found {classes}"}
    if fake is None:  # generate a labelled synthetic set from the run
        if not getattr(model, "conditional", False):
            return {"skipped": "needs a class-conditional run (train with --set model.conditional=true)"}
        classes = list(model.info.labels)
        lookup = {c: i for i, c in enumerate(classes)}
        y_train = np.array([lookup[v] for v in train_set.labels], dtype=np.int64)
        counts = np.bincount(y_train, minlength=len(classes))
        want = np.round(counts * ratio).astype(int)
        gen_ids = np.repeat(np.arange(len(classes)), want)
        if len(gen_ids) < 2:
            return {"skipped": f"utility ratio {ratio} gives fewer than 2 synthetic images"}
        sc = cfg.sample
        steps = sc.steps or getattr(getattr(model, "denoiser", None), "T", None)
        imgs, ids, seconds, cached = _generate_cached(model, fingerprint, len(gen_ids), gen_ids, sc.sampler, steps, sc.seed,
                                                      sc.guidance, sc.batch_size, run_dir.root / "evaluation" / "cache", echo)
        syn = (imgs, ids)
        syn_source = {"kind": "generated", "sampler": sc.sampler, "steps": steps, "seed": sc.seed, "guidance": sc.guidance,
                      "n_images": int(len(imgs)), "per_class": dict(zip(classes, want.tolist())), "ratio": ratio,
                      "reused_from_cache": cached}
    else:
        if fake.labels is None:
            return {"skipped": "needs labelled synthetic images (class sub-folders or a medgen samples.json)"}
        lookup = {c: i for i, c in enumerate(classes)}
        keep = np.array([v in lookup for v in fake.labels])
        if keep.sum() < 2:
            return {"skipped": f"the synthetic labels {sorted(set(fake.labels))} do not match the real classes {classes}"}
        syn = (fake.images[keep], np.array([lookup[v] for v in fake.labels[keep]], dtype=np.int64))
        y_train = np.array([lookup[v] for v in train_set.labels], dtype=np.int64)
        syn_source = {**fake.source, "n_images": int(keep.sum())}
    lookup = {c: i for i, c in enumerate(classes)}
    te_keep = np.array([v in lookup for v in test_set.labels])
    y_test = np.array([lookup[v] for v in test_set.labels[te_keep]], dtype=np.int64)
    echo(f"utility: {len(seed_list)} seed(s) x 3 training sets")
    table = utility_table((train_set.images, y_train), (test_set.images[te_keep], y_test), syn, classes, seeds=seed_list,
                          mix_ratio=mix, settings=settings, figure=fig_dir / "utility_confusion.png", echo=echo)
    table["synthetic"] = syn_source
    table["settings"] = {"ratio": ratio, "mix_ratio": mix, "seeds": seed_list, "n_real_train": int(len(train_set)),
                         "n_real_test": int(te_keep.sum()), "real_test_split": test_set.source.get("split")}
    return table


def _writable_cache(dataset_root: Path | None, out_root: Path) -> Path:
    """The dataset's cache/ (shared by every run on it) when writable, else the run's / output's."""
    if dataset_root is not None:
        c = Path(dataset_root) / "cache"
        try:
            c.mkdir(exist_ok=True)
            if os.access(c, os.W_OK):
                return c
        except OSError:
            pass
    return Path(out_root) / "cache"


def _version() -> str:
    try:
        from medgen import __version__

        return __version__
    except ImportError:
        return "unknown"


# ----------------------------------------------------------------------------------------------
# terminal output


def _add(table, *cells: Any) -> None:
    """Add a row of plain text (labels like "[domain]" are not Rich markup)."""
    from rich.markup import escape

    table.add_row(*(escape(str(c)) for c in cells))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary_tables(result: dict) -> list:
    """Rich tables of a result: headline metrics with their settings, the sweep, the utility table."""
    from rich.table import Table

    tables = []
    fake = result.get("fake") or {}
    title = f"medgen evaluate: {result.get('run') or 'image sets'}"
    t = Table("group", "metric", "value", "settings", title=title, title_justify="left")
    real = result.get("real") or {}
    _add(t, "data", "real", f"{real.get('n_images')} images", f"{real.get('path', real.get('kind'))} [{real.get('split', '')}]")
    if fake:
        fk = ", ".join(f"{k} {fake[k]}" for k in ("sampler", "steps", "seed") if fake.get(k) is not None)
        _add(t, "", "synthetic", f"{fake.get('n_images')} images", fk or str(fake.get("path", fake.get("kind"))))
    for f in result.get("features", []):
        tr = f.get("training") or {}
        quality = ""
        if "val_accuracy" in tr:
            quality = f"val accuracy {tr['val_accuracy']:.3f} (chance {tr['chance_accuracy']:.3f})"
        elif "val_reconstruction_mse" in tr:
            quality = f"val MSE {tr['val_reconstruction_mse']:.4g} (mean image {tr['mean_image_mse']:.4g})"
        _add(t, "features", f["name"], f"{f.get('dim')}-d", " ".join(x for x in (f.get("weights") or "", quality) if x))
    for group, keys in (("distribution", ("fid", "kid_mean", "kid_std")), ("fidelity", ("precision", "recall", "density", "coverage"))):
        for name, d in (result.get(group) or {}).items():
            if "skipped" in d:
                _add(t, group, name, "skipped", d["skipped"])
                continue
            for k in keys:
                label = "FRD" if (k == "fid" and name == "radiomics") else k.upper() if k == "fid" else k
                _add(t, group, f"{label} [{name}]", _fmt(d.get(k)), f"n {d['settings']['n_real']}/{d['settings']['n_fake']}")
    inten = result.get("intensity")
    if inten:
        a = inten["all"]
        _add(t, "intensity", "KS (all)", _fmt(a["ks_statistic"]), f"p {_fmt(a['ks_pvalue'])}")
        _add(t, "intensity", "Wasserstein (all)", _fmt(a["wasserstein"]), "")
        if "mse_all_pairs" in a:  # absent from metrics.json files written before it existed
            m = a["mse_all_pairs"]
            _add(t, "intensity", "MSE (all pairs)", _fmt(m["mse"]), f"real-real {_fmt(m['real_baseline'])}")
        _add(t, "intensity", "bimodality coef. real/synth", f"{_fmt(a['bimodality']['real']['bimodality_coefficient'])} / "
                  f"{_fmt(a['bimodality']['fake']['bimodality_coefficient'])}", "BC > 0.555 suggests two modes")
        for label, r in (inten.get("by_class") or {}).items():
            if "ks_statistic" in r:
                _add(t, "intensity", f"KS [{label}]", _fmt(r["ks_statistic"]), f"W1 {_fmt(r['wasserstein'])}")
    mem = result.get("memorisation")
    if mem:
        if "skipped" in mem:
            _add(t, "memorisation", "", "skipped", mem["skipped"])
        for space, d in mem.items():
            if isinstance(d, dict) and "fraction_flagged" in d:
                _add(t, "memorisation", f"flagged [{space}]", f"{d['n_flagged']}/{d['n_synthetic']}",
                          f"expected {d['expected_fraction']:.3f}, threshold {d['threshold']:.4g} (q {d['quantile']:g}), "
                          f"p {d['binomial_pvalue']:.3g}")
    rec = result.get("reconstruction")
    if rec:
        if "skipped" in rec:
            _add(t, "reconstruction", "", "skipped", rec["skipped"])
        for k, d in rec.items():
            if isinstance(d, dict) and "mean" in d:
                _add(t, "reconstruction", k.upper() if k != "ms_ssim" else "MS-SSIM", _fmt(d["mean"]), f"± {_fmt(d['std'])}")
    tables.append(t)
    if result.get("sweep"):
        rows = result["sweep"]
        keys = [k for k in rows[0] if "/" in k]
        st = Table("metric", *(f"{r['sampler']} {r['steps']}" for r in rows), title="sweep (one column per setting)",
                   title_justify="left")
        _add(st, "seconds / image", *(_fmt(r.get("seconds_per_image")) for r in rows))
        for k in keys:
            _add(st, k, *(_fmt(r.get(k)) for r in rows))
        tables.append(st)
    util = result.get("utility")
    if util:
        if "skipped" in util:
            ut = Table("utility", title="utility (train on X, test on real)", title_justify="left")
            _add(ut, "skipped: " + util["skipped"])
        else:
            from medgen.evaluation.utility import METRIC_COLUMNS

            names = list(util["rows"])
            ut = Table("metric", *(f"trained on {n}" for n in names),
                       title=f"utility: test on real ({util['n_test']} images), mean ± std over {len(util['seeds'])} seed(s)",
                       title_justify="left")
            _add(ut, "n real / synthetic", *(f"{util['rows'][n]['n_train_real']} / {util['rows'][n]['n_train_synthetic']}" for n in names))
            for m in METRIC_COLUMNS:
                _add(ut, m, *(f"{util['rows'][n]['mean'][m]:.3f} ± {util['rows'][n]['std'][m]:.3f}" for n in names))
            cc = util.get("class_consistency")
            if cc:  # tables from before it was measured have none
                _add(ut, f"class consistency (chance {cc['chance']:.2f})",
                     *(f"{cc['mean']:.3f} ± {cc['std']:.3f}" if n == "real" else "" for n in names))
        tables.append(ut)
    return tables
