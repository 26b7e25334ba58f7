"""Which real image + mask pairs a generator saw, and the K real pairs that keep the scarce rows of the
segmentation utility honest.

A K row claims "K real pairs + synthetic pairs beat K real pairs". That holds only when the synthetic
pairs carry nothing from real pairs beyond the K: the generator, and every run it was initialised
from (:func:`medgen.scarce.benchmark.generator_exposure`; training and validation splits both count
as seen), must have trained on pairs within the K, and the masks it is conditioned on must be masks
of the K pairs. So :func:`choose_k_pairs` builds the K pairs from what the generator saw (all of it,
then lesion-bearing training pairs drawn at random up to K) and refuses a generator that saw more
than K pairs or pairs outside the real training pairs. No generator may have seen a test pair, and
no synthetic pair may be conditioned on a test mask (:func:`check_not_test`): the test images would
then score what the synthetic pairs copied.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.errors import UserError

__all__ = ["choose_k_pairs", "check_not_test", "item_ids", "pairs_provenance", "seen_pairs"]

K_RUN_HOWTO = ("train a generator on K pairs only (medgen data pick DATA --where label=A|B --n K --out k.txt; "
               "medgen train PRESET --data DATA --subset id=@k.txt --out RUN_K) and pass it with --k-run RUN_K")


def item_ids(ds, rows: np.ndarray) -> list[str]:
    """The index's ``id`` of each row (row numbers where a dataset has no id column)."""
    col = ds.index["id"] if "id" in ds.index.columns else ds.index.index.astype(str)
    return [str(v) for v in np.asarray(col)[np.asarray(rows, dtype=int)]]


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def seen_pairs(run: str | Path, ds, require_same_dataset: bool = False) -> dict:
    """{"run", "ids": sorted ids of ``ds`` the run (and the runs it started from) trained or validated on,
    "by_run", "other_datasets_not_checked"}. ``require_same_dataset``: refuse a run trained on another dataset."""
    from medgen.data.dataset import PreparedDataset
    from medgen.rundir import RunDir
    from medgen.scarce.benchmark import generator_exposure

    exposure = generator_exposure(run)
    root = Path(exposure["runs"][0])
    own = RunDir(root).data().get("dataset")
    if require_same_dataset and not _same(own, ds.root):
        raise UserError(f"this generator was trained on another dataset ({own}); the segmentation utility's real pairs "
                        f"are those of {ds.root}", root)
    seen: set[str] = set()
    for info in exposure["by_run"].values():
        if _same(info["dataset"], ds.root):
            rows = np.concatenate([ds.select(s, info["subset"]) for s in info["splits"] if s] or [np.zeros(0, int)])
            seen.update(item_ids(ds, rows))
    return {"run": str(root), "ids": sorted(seen), "by_run": exposure["by_run"],
            "other_datasets_not_checked": sorted({v["dataset"] for v in exposure["by_run"].values() if not _same(v["dataset"], ds.root)})}


def check_not_test(ids: Sequence[str], test_ids: set[str], what: str, where: str | Path) -> None:
    leaked = sorted(set(map(str, ids)) & test_ids)
    if leaked:
        raise UserError(f"{what} {len(leaked)} real test pair(s) (e.g. {', '.join(leaked[:3])}): the test images would "
                        "score what the synthetic pairs copied; use a generator and masks that never touched the test split", where)


def _k_rows(k: int, train_ids: Sequence[str], lesion_rows: np.ndarray, gen: dict, seed: int) -> np.ndarray:
    """Rows (into the real training pairs) of K pairs that include everything ``gen`` saw, or a UserError."""
    pos = {i: r for r, i in enumerate(train_ids)}
    seen = gen["ids"]
    if len(seen) > k:
        raise UserError(f"the generator saw {len(seen)} real pairs, more than K={k}: its synthetic pairs carry what the "
                        f"other pairs taught it, so the K-pair rows would overstate them; {K_RUN_HOWTO}", gen["run"])
    outside = [i for i in seen if i not in pos]
    if outside:
        raise UserError(f"the generator saw {len(outside)} real pair(s) outside the real training pairs (e.g. "
                        f"{', '.join(outside[:3])}); {K_RUN_HOWTO}", gen["run"])
    fixed = np.array(sorted(pos[i] for i in seen), dtype=int)
    rest = np.setdiff1d(np.asarray(lesion_rows, dtype=int), fixed)
    fill = np.random.default_rng([seed, 7]).permutation(rest)[: k - len(fixed)]
    if len(fixed) + len(fill) < k:
        raise UserError(f"K={k}, but the real training split has only {len(fixed) + len(rest)} pairs to choose from")
    return np.sort(np.concatenate([fixed, fill]))


def choose_k_pairs(k: int, train_ids: Sequence[str], lesion_rows: np.ndarray, generators: Sequence[dict],
                   seed: int = 0) -> tuple[dict, np.ndarray]:
    """(generator, rows of the K real pairs) for one K. Of the generators that saw at most K pairs, all of
    them training pairs, the one that saw the most is used; none qualifying is refused (the error of the
    one that saw the fewest, which says why and how to make one)."""
    if k < 1:
        raise UserError(f"K must be at least 1, got {k}")
    fits = []
    for gen in generators:
        try:
            fits.append((len(gen["ids"]), gen, _k_rows(k, train_ids, lesion_rows, gen, seed)))
        except UserError as err:
            fits.append((-1, gen, err))
    ok = [f for f in fits if f[0] >= 0]
    if not ok:
        raise min(fits, key=lambda f: len(f[1]["ids"]))[2]
    _, gen, rows = max(ok, key=lambda f: f[0])
    return gen, rows


def pairs_provenance(folder: str | Path) -> dict:
    """What a ``medgen sample --masks`` folder's samples.json says about its generator and masks."""
    manifest = Path(folder) / "samples.json"
    if not manifest.exists():
        raise UserError("not a folder of image + mask pairs (no samples.json; write one with medgen sample RUN --masks ...)", folder)
    m = json.loads(manifest.read_text())
    if not m.get("run"):
        raise UserError("samples.json names no generator run: which real pairs it saw cannot be checked", manifest)
    files = m.get("files", [])
    dataset_masks = [str(f["mask_from"]) for f in files if str(f.get("mask_source", "")).startswith("dataset")]
    return {"run": m["run"], "mode": m.get("mode"), "mask_source": m.get("mask_source"), "mask_ids": sorted(set(dataset_masks)),
            "inpaint_source": m.get("inpaint_source"), "n": len(files)}
