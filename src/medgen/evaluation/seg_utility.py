"""Segmentation utility of synthetic image + mask pairs, and whether the lesion is where the mask is.

:func:`seg_utility` trains the same small MONAI ``UNet`` (DiceCE loss, fixed number of steps) from
scratch on several training sets and tests each on the real test split's lesion-bearing images:

* ``real``: the real training pairs; ``real+synthetic``: those plus the synthetic pairs;
  ``synthetic``: the synthetic pairs only;
* the scarce rows ``K real`` and ``K real+synthetic``: K real pairs without and with synthetic
  pairs from a generator that saw no real pair outside those K, conditioned on the K pairs' masks
  (:mod:`medgen.evaluation.seg_provenance` builds the K pairs from what the generator saw and
  refuses a generator that saw more).

Scores: Dice and the 95th-percentile Hausdorff distance in pixels (MONAI ``compute_dice`` and
``compute_hausdorff_distance``), averaged over the test images, per seed; each row gives the mean
over seeds with a 95 % Student-t interval over the seeds (the seeds vary initialisation and batch
order; the K pairs are fixed by the generator that saw them). An empty prediction has no surface: its HD95 is taken as the image diagonal
(the largest possible distance), so a network that misses lesions is not rewarded.

:func:`mask_adherence` answers "is the lesion where the mask is?": a network trained on real pairs
segments the generated images, and its Dice against the conditioning masks is compared with its Dice
against the same masks shuffled between images (what Dice lesion-shaped blobs get by chance).

Synthetic pairs come from a sample folder written by ``medgen sample RUN --masks ...`` (its
``samples.json``, which names the generator run, so what it saw can be checked), or are generated
from the run on the masks of its training pairs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medgen.errors import UserError


@dataclass
class SegSettings:
    # measured on the built-in 32x32 lesions (480 training pairs): lr 3e-3 sat at an empty prediction
    # for 400 steps; 1e-2 reached Dice 0.75 at 300 steps, 0.83 at 400, 0.86 at 600
    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-2
    channels: tuple[int, ...] = (8, 16, 32)


def build_segmenter(spatial_dims: int, in_channels: int, s: SegSettings) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, channels=s.channels,
                strides=(2,) * (len(s.channels) - 1), num_res_units=1)


def train_segmenter(images: np.ndarray, masks: np.ndarray, s: SegSettings, seed: int) -> torch.nn.Module:
    """A fresh network fitted to (N, C, *size) images in [0, 1] and their (N, 1, *size) masks (> 0 = lesion)."""
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_segmenter(images.ndim - 2, images.shape[1], s)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    loss_fn = DiceCELoss(sigmoid=True)
    x_all, y_all = torch.from_numpy(np.asarray(images, np.float32)), torch.from_numpy((np.asarray(masks) > 0).astype(np.float32))
    net.train()
    for _ in range(s.steps):
        idx = rng.choice(len(x_all), size=min(s.batch_size, len(x_all)), replace=len(x_all) < s.batch_size)
        loss = loss_fn(net(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def predict(net: torch.nn.Module, images: np.ndarray, batch: int = 64) -> np.ndarray:
    out = [(net(torch.from_numpy(np.asarray(images[i:i + batch], np.float32))) > 0).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.uint8)


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image Dice and HD95 (pixels) of binary (N, 1, *size) maps; truth must be non-empty."""
    from monai.metrics import compute_dice, compute_hausdorff_distance

    p, t = torch.from_numpy(pred > 0).float(), torch.from_numpy(truth > 0).float()
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)[:, 0].numpy()
    diagonal = float(np.sqrt(sum(d * d for d in pred.shape[2:])))
    hd = np.full(len(pred), diagonal)
    has = p.flatten(1).amax(1) > 0
    if has.any():
        hd[has.numpy()] = compute_hausdorff_distance(p[has], t[has], include_background=True, percentile=95)[:, 0].numpy()
    return {"dice": np.nan_to_num(dice, nan=0.0), "hd95": np.minimum(np.nan_to_num(hd, nan=diagonal), diagonal)}


def interval_over_seeds(values: list[float], level: float = 0.95, bounds: tuple[float, float] = (0.0, np.inf)) -> dict:
    """Mean over seeds with a Student-t interval (in the shape medgen's other intervals use), clipped to
    the metric's range ``bounds`` (a t interval from 3 seeds can otherwise reach below 0)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2 or v.std(ddof=1) == 0:
        return {"value": mean, "low": mean, "high": mean, "level": level, "method": "t over seeds", "n": len(v)}
    lo, hi = stats.t.interval(level, len(v) - 1, loc=mean, scale=stats.sem(v))
    lo, hi = max(float(lo), bounds[0]), min(float(hi), bounds[1])
    return {"value": mean, "low": lo, "high": hi, "level": level, "method": "t over seeds", "n": len(v)}


def _lesion_rows(masks: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.asarray(masks).reshape(len(masks), -1).max(axis=1) > 0)


@dataclass
class KPairs:
    """The scarce rows of one K: which real training pairs (rows of ``real_train``) and the synthetic
    pairs of a generator that saw no real pair outside them (``provenance`` says which and how)."""

    k: int
    rows: np.ndarray
    synthetic: tuple[np.ndarray, np.ndarray]
    provenance: dict


def seg_utility(real_train: tuple[np.ndarray, np.ndarray], real_test: tuple[np.ndarray, np.ndarray],
                synthetic: tuple[np.ndarray, np.ndarray], seeds: int = 3, k_pairs: Sequence[KPairs] = (),
                settings: SegSettings | None = None, echo=print) -> dict:
    """The table: one row per training set, Dice and HD95 on the real test images with a lesion.

    The K rows use the fixed pairs of each :class:`KPairs` (the pairs its generator was allowed to
    see), so their seeds vary initialisation and batch order only; :func:`run_seg_utility` makes them."""
    s = settings or SegSettings()
    test_rows = _lesion_rows(real_test[1])
    if not len(test_rows):
        raise UserError("the real test split has no image with a lesion mask: nothing to score a segmentation on")
    tx, ty = real_test[0][test_rows], real_test[1][test_rows]
    rx, ry = real_train
    sx, sy = synthetic

    def sets():
        yield "real", rx, ry
        yield "real+synthetic", np.concatenate([rx, sx]), np.concatenate([ry, sy])
        yield "synthetic", sx, sy
        for kp in k_pairs:
            kx, ky = rx[kp.rows], ry[kp.rows]
            yield f"{kp.k} real", kx, ky
            yield f"{kp.k} real+synthetic", np.concatenate([kx, kp.synthetic[0]]), np.concatenate([ky, kp.synthetic[1]])

    per: dict[str, dict[str, list[float]]] = {}
    for seed in range(seeds):
        for name, x, y in sets():
            sc = scores(predict(train_segmenter(x, y, s, seed), tx), ty)
            row = per.setdefault(name, {"dice": [], "hd95": [], "n_train": len(x)})
            row["dice"].append(float(sc["dice"].mean()))
            row["hd95"].append(float(sc["hd95"].mean()))
            echo(f"seg utility seed {seed}: {name:<20} Dice {row['dice'][-1]:.3f}  HD95 {row['hd95'][-1]:.2f} px")
    rows = [{"train": name, "n_train": r["n_train"], "dice": interval_over_seeds(r["dice"], bounds=(0.0, 1.0)), "hd95": interval_over_seeds(r["hd95"]),
             "dice_per_seed": r["dice"], "hd95_per_seed": r["hd95"]} for name, r in per.items()]
    return {"rows": rows, "n_test": int(len(test_rows)), "seeds": seeds, "n_synthetic": int(len(sx)),
            "k_pairs": [{"k": kp.k, "n_synthetic": int(len(kp.synthetic[0])), **kp.provenance} for kp in k_pairs],
            "settings": {"steps": s.steps, "batch_size": s.batch_size, "lr": s.lr, "channels": list(s.channels),
                         "network": "monai UNet", "loss": "DiceCE"}}


def mask_adherence(real_train: tuple[np.ndarray, np.ndarray], generated: np.ndarray, masks: np.ndarray, seed: int = 0,
                   settings: SegSettings | None = None, n_resamples: int = 1000) -> dict:
    """Dice of a real-trained network's segmentation of generated images against their conditioning
    masks, and against the same masks shuffled between images (a derangement: no image keeps its own)."""
    net = train_segmenter(*real_train, settings or SegSettings(), seed)
    pred = predict(net, generated)
    own = scores(pred, masks)["dice"]
    n = len(masks)
    shift = np.roll(np.arange(n), 1 + np.random.default_rng(seed).integers(max(1, n - 1)))
    shuffled = scores(pred, masks[shift])["dice"]
    out = {"dice_conditioning": float(own.mean()), "dice_shuffled": float(shuffled.mean()), "n": n,
           "dice_conditioning_per_image": own.round(4).tolist()}
    if n_resamples and n >= 2:  # the mean Dice over generated images, resampling them (both means on the same draws)
        from medgen.metrics.intervals import bootstrap_distribution, interval_from_resamples

        per = np.stack([own, shuffled], axis=1).astype(np.float64)
        value, res, ns = bootstrap_distribution(lambda v: v.mean(axis=1), per, n_resamples=n_resamples, seed=seed, vectorized=True)
        out["intervals"] = {k: interval_from_resamples(value[i], res[:, i], n=ns[0], bounds=(0.0, 1.0))
                            for i, k in enumerate(("dice_conditioning", "dice_shuffled"))}
    return out


def read_pairs(folder: str | Path, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks of a pairs folder written by ``medgen sample --masks`` (its samples.json; PNG, NIfTI or NPY)."""
    from medgen.data.io import read_image
    from medgen.inpaint import to_unit_range
    from medgen.masks import check_mask

    folder = Path(folder)
    manifest = folder / "samples.json"
    if not manifest.exists():
        raise UserError("not a folder of image + mask pairs (no samples.json; write one with medgen sample RUN --masks ...)", folder)
    files = [f for f in json.loads(manifest.read_text()).get("files", []) if f.get("mask")]
    if not files:
        raise UserError("samples.json lists no image + mask pairs", manifest)
    imgs, masks = [], []
    for f in files:
        img = np.load(folder / f["file"]) if f["file"].endswith(".npy") else read_image(folder / f["file"])
        imgs.append(to_unit_range(np.asarray(img, np.float32))[0])
        mp = folder / f["mask"]
        m = np.load(mp) if mp.suffix == ".npy" else read_image(mp)
        masks.append(check_mask(m, size, 255, str(mp)))
    return np.stack(imgs), np.stack(masks)



def _generate_pairs(run: str | Path, split: str, mask_ids: list[str], n: int, out: Path, steps: int | None, echo) -> Path:
    from medgen.mask_sampling import sample_pairs

    sample_pairs(run, "dataset:" + split, n=n, out=out, force=True, fmt="png", steps=steps, mask_ids=mask_ids, echo=echo)
    return out


def run_seg_utility(run_dir: str | Path, pairs: str | Path | None = None, seeds: int = 3, k_real: Sequence[int] = (),
                    settings: SegSettings | None = None, n_synthetic: int | None = None, k_runs: Sequence[str | Path] = (),
                    steps: int | None = None, echo=print, n_resamples: int = 1000) -> dict:
    """``medgen evaluate RUN --seg-utility``: the table and the mask-adherence check -> RUN/evaluation/seg_utility.json.

    Real pairs: the run's training pairs (its split and subset) and the dataset's test split. Synthetic
    pairs: ``pairs`` (a ``medgen sample --masks`` folder) or generated by the run on the masks of its
    training pairs. K rows: one per ``k_real`` and per ``k_runs`` generator (K = the pairs it saw); see
    :mod:`medgen.evaluation.seg_provenance` for which generator and pairs each K gets, and what is refused.
    Every check runs before anything is generated."""
    from medgen.data.dataset import PreparedDataset
    from medgen.evaluation.seg_provenance import check_not_test, choose_k_pairs, item_ids, pairs_provenance, seen_pairs
    from medgen.fsio import atomic_write_json
    from medgen.rundir import RunDir

    run = RunDir.open(run_dir)
    d = run.data()
    ds = PreparedDataset(d["dataset"])
    if ds.masks is None:
        raise UserError("the run's dataset has no masks (masks.npy): a segmentation utility needs image + mask pairs", ds.root)
    split = d.get("train_split", "train")
    train_rows = np.sort(ds.select(split, d.get("subset") or {}))
    test_rows = np.sort(ds.select("test"))
    train_ids, test_ids = item_ids(ds, train_rows), set(item_ids(ds, test_rows))
    real_train = (np.asarray(ds.images[train_rows]), np.asarray(ds.masks[train_rows]))
    real_test = (np.asarray(ds.images[test_rows]), np.asarray(ds.masks[test_rows]))
    lesion = _lesion_rows(real_train[1])

    # which real pairs every generator saw: refused before anything is generated
    main = seen_pairs(run.root, ds)
    check_not_test(main["ids"], test_ids, "the generator saw", run.root)
    generators = [main] + [seen_pairs(r, ds, require_same_dataset=True) for r in k_runs]
    for g in generators[1:]:
        check_not_test(g["ids"], test_ids, "the generator saw", g["run"])
    ks = sorted(set(int(k) for k in k_real) | {len(g["ids"]) for g in generators[1:]})
    chosen = [(k, *choose_k_pairs(k, train_ids, lesion, generators)) for k in ks]
    if pairs is not None:
        prov = pairs_provenance(pairs)
        check_not_test(prov["mask_ids"], test_ids, "the synthetic pairs are conditioned on the masks of", Path(pairs) / "samples.json")
        source = seen_pairs(prov["run"], ds)
        check_not_test(source["ids"], test_ids, "the generator of the synthetic pairs saw", prov["run"])
        synthetic_source = {"pairs": str(pairs), "generator": source["run"], "generator_saw": source["ids"],
                            "mask_source": prov["mask_source"], "mask_ids": prov["mask_ids"], "mode": prov["mode"]}

    out_dir = run.root / "evaluation"
    out_dir.mkdir(exist_ok=True)
    made: dict[tuple, Path] = {}  # (generator, masks) -> pairs folder, so the same pairs are not generated twice
    if pairs is None:
        mask_ids = [train_ids[r] for r in lesion]
        pairs = _generate_pairs(run.root, split, mask_ids, n_synthetic or len(lesion), out_dir / "seg-pairs", steps, echo)
        made[(main["run"], tuple(mask_ids))] = pairs
        synthetic_source = {"pairs": str(pairs), "generator": main["run"], "generator_saw": main["ids"],
                            "mask_source": f"dataset:{split}", "mask_ids": mask_ids, "mode": "mask-conditioned"}
    synthetic = read_pairs(pairs, tuple(ds.size))
    k_sets = []
    for k, gen, rows in chosen:
        mask_ids = [train_ids[r] for r in rows if real_train[1][r].max() > 0]
        key = (gen["run"], tuple(mask_ids))
        if key not in made:
            echo(f"seg utility: {len(synthetic[0])} synthetic pairs for K={k} from {gen['run']} on the masks of the K pairs")
            made[key] = _generate_pairs(gen["run"], split, mask_ids, len(synthetic[0]), out_dir / f"seg-pairs-k{k}", steps, echo)
        k_sets.append(KPairs(k, rows, read_pairs(made[key], tuple(ds.size)), {
            "generator": gen["run"], "generator_saw": gen["ids"], "pair_ids": [train_ids[r] for r in rows],
            "mask_ids": mask_ids, "pairs": str(made[key]),
            "generator_runs": gen["by_run"], "other_datasets_not_checked": gen["other_datasets_not_checked"]}))
    settings = settings or SegSettings()
    result = seg_utility(real_train, real_test, synthetic, seeds, k_sets, settings, echo)
    result["adherence"] = mask_adherence(real_train, synthetic[0], synthetic[1], 0, settings, n_resamples)
    result["pairs"] = str(pairs)
    result["synthetic"] = synthetic_source
    result["real"] = {"dataset": str(ds.root), "train_split": split, "subset": d.get("subset") or {}, "n_train": len(train_rows),
                      "n_test": len(test_rows)}
    atomic_write_json(out_dir / "seg_utility.json", result)
    result["output"] = str(out_dir / "seg_utility.json")
    return result


def table_lines(result: dict) -> list[str]:
    """The table as Markdown lines (for the terminal and the results page)."""
    def iv(x, digits):
        return f"{x['value']:.{digits}f} ({x['low']:.{digits}f}-{x['high']:.{digits}f})"

    lines = ["| trained on | n train | Dice (95 % CI over seeds) | HD95 px (95 % CI) |", "|---|---|---|---|"]
    lines += [f"| {r['train']} | {r['n_train']} | {iv(r['dice'], 3)} | {iv(r['hd95'], 2)} |" for r in result["rows"]]
    for kp in result.get("k_pairs", []):
        lines.append(f"\nK={kp['k']}: synthetic pairs from {kp['generator']}, which saw {len(kp['generator_saw'])} real pair(s), "
                     f"all among the K; conditioned on the {len(kp['mask_ids'])} lesion mask(s) of the K pairs")
    a = result.get("adherence")
    if a:
        lines.append(f"\nlesion where the mask is: Dice {a['dice_conditioning']:.3f} against the conditioning masks, "
                     f"{a['dice_shuffled']:.3f} against shuffled masks (n = {a['n']}, network trained on real pairs)")
    return lines
