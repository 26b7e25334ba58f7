"""Scarce-class benchmark: do synthetic images of a scarce class help more than classical augmentation?

Protocol (:func:`scarce_class_table`):

* the real training set keeps only K images of CLASS (the other classes unchanged); the CLASS
  images left out are *held back*: no classifier here sees them, and :func:`generator_exposure`
  refuses a generator that saw any of them;
* four training sets, each topped up with the same number ``n_add`` of CLASS images: (a) ``cut``:
  the cut real set alone; (b) ``cut+classical``: + classical augmentations of the K images
  (:mod:`medgen.scarce.augment`); (c) ``cut+synthetic``: + the run's synthetic CLASS images;
  (d) ``cut+both``: + n_add / 2 of each (rounded), so (d) adds no more images than (b) or (c);
* the shared small CNN is trained from scratch on each set for each seed (early stopping on a
  stratified validation split of that set) and tested on the full real test split;
* reported per set: CLASS recall, CLASS F1 and balanced accuracy, each as the mean over seeds with
  a 95 % bootstrap interval over seeds and test images (each resample draws the seeds and, within
  each class, the test images); then the verdicts of (c) and (d) against (b) from the paired
  bootstrap of the difference (same resampled seeds and test images), Holm-corrected over the two
  comparisons per metric.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.errors import UserError

__all__ = ["SCENARIOS", "choose_kept", "generator_exposure", "scarce_class_table"]

SCENARIOS = ("cut", "cut+classical", "cut+synthetic", "cut+both")
METRICS = ("class_recall", "class_f1", "balanced_accuracy")


def generator_exposure(run: str | Path) -> dict:
    """Which prepared images a generator run (and every run it was initialised from) trained on.

    Returns {"runs": [...], "datasets": [...], "ids": sorted ids (the index's ``id`` column, or
    row numbers), "by_run": {run: {"dataset", "splits", "subset", "n"}}}. The training and the
    validation split both count as seen (validation picks checkpoints).
    """
    from medgen.data.dataset import PreparedDataset
    from medgen.rundir import init_chain

    seen: set[str] = set()
    by_run: dict = {}
    for run_dir in init_chain(run, "the generator was initialised from weights that are not a medgen run: "
                                   "which images they saw cannot be checked"):
        root, info = run_dir.root, run_dir.data()
        if not info.get("dataset"):
            raise UserError("data.json names no dataset: cannot tell which images the generator saw", root / "data.json")
        ds = PreparedDataset(info["dataset"])
        where = info.get("subset") or {}
        rows = np.concatenate([ds.select(s, where) for s in {info.get("train_split", "train"), info.get("val_split", "val")} if s])
        ids = _ids(ds, rows)
        seen.update(ids)
        by_run[str(root)] = {"dataset": str(ds.root), "splits": [info.get("train_split"), info.get("val_split")],
                             "subset": where, "n": len(ids)}
    return {"runs": list(by_run), "datasets": sorted({v["dataset"] for v in by_run.values()}), "ids": sorted(seen),
            "by_run": by_run}


def _ids(ds, rows: np.ndarray) -> list[str]:
    col = ds.index["id"] if "id" in ds.index.columns else ds.index.index.astype(str)
    return [str(v) for v in np.asarray(col)[rows]]


def choose_kept(class_ids: Sequence[str], k: int, seen: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """(kept, held back) ids of CLASS's real training images.

    Every CLASS image the generator saw must be kept (else it would be tested against images it
    learned from, through the synthetic ones); the rest of the K are drawn at random (seeded). A
    generator that saw more than K CLASS images, or CLASS images outside the training split, is
    refused.
    """
    class_ids = [str(i) for i in class_ids]
    pool = set(class_ids)
    seen_class = sorted(set(map(str, seen)) & pool)
    if k < 1 or k >= len(class_ids):
        raise UserError(f"K must be between 1 and {len(class_ids) - 1} (the class has {len(class_ids)} training images), got {k}")
    if len(seen_class) > k:
        raise UserError(f"the generator saw {len(seen_class)} training images of the class, more than K={k}: "
                        "train it on K images only (e.g. --subset id=...) or raise K")
    rest = sorted(pool - set(seen_class))
    rng = np.random.default_rng(seed)
    extra = [rest[i] for i in rng.permutation(len(rest))[: k - len(seen_class)]]
    kept = sorted(seen_class + extra)
    held = sorted(pool - set(kept))
    return kept, held


def _class_scores(y_true: np.ndarray, y_pred: np.ndarray, class_id: int, k: int) -> np.ndarray:
    """(class recall, class F1, balanced accuracy) for label arrays of any leading shape (..., n)."""
    pos_t, pos_p = y_true == class_id, y_pred == class_id
    tp = (pos_t & pos_p).sum(-1)
    recall = tp / np.maximum(pos_t.sum(-1), 1)
    f1 = 2 * tp / np.maximum(pos_t.sum(-1) + pos_p.sum(-1), 1)
    per_class = [((y_true == c) & (y_pred == c)).sum(-1) / np.maximum((y_true == c).sum(-1), 1)
                 for c in range(k) if (y_true == c).any()]
    return np.stack([recall, f1, np.mean(per_class, axis=0)], axis=-1)


def _topped_up(scenario: str, n_add: int, kept_x: np.ndarray, synthetic: np.ndarray, seed: int) -> np.ndarray:
    from medgen.scarce.augment import classical_augment

    n_classical = {"cut": 0, "cut+classical": n_add, "cut+synthetic": 0, "cut+both": n_add // 2}[scenario]
    n_syn = {"cut": 0, "cut+classical": 0, "cut+synthetic": n_add, "cut+both": n_add - n_add // 2}[scenario]
    if n_syn > len(synthetic):
        raise UserError(f"{n_syn} synthetic images of the class are needed, the run gave {len(synthetic)}")
    parts = [np.zeros((0, *kept_x.shape[1:]), np.float32)]
    if n_classical:
        parts.append(classical_augment(kept_x, n_classical, seed=seed))
    if n_syn:
        parts.append(synthetic[np.random.default_rng(seed).permutation(len(synthetic))[:n_syn]].astype(np.float32))
    return np.concatenate(parts)


def scarce_class_table(train: tuple[np.ndarray, np.ndarray, Sequence[str]], test: tuple[np.ndarray, np.ndarray],
                       synthetic: np.ndarray, class_id: int, class_names: Sequence[str], k: int, *,
                       seen_ids: Sequence[str] = (), test_ids: Sequence[str] = (), generator: dict | None = None,
                       n_add: int | None = None,
                       seeds: Sequence[int] = (0, 1, 2, 3, 4), n_resamples: int = 1000, level: float = 0.95,
                       settings=None, cut_seed: int = 0, echo=print) -> dict:
    """Run the benchmark (see the module docstring) -> JSON-ready dict.

    ``train``: real training images (N, C, *spatial) in [0, 1], label ids, image ids; ``test``: real
    test images and label ids; ``synthetic``: generated images of ``class_id``; ``seen_ids``: the ids
    the generator saw (:func:`generator_exposure`), ``generator`` its description for the JSON;
    ``test_ids``: the test images' ids (a generator that saw one of them is refused).
    ``n_add``: CLASS images added in (b)-(d), default: back to the class's original training count.
    """
    from medgen.evaluation.classifier import DomainSettings, fit_classifier, predict, stratified_split, to_work
    from medgen.metrics.intervals import bootstrap_distribution, interval_from_resamples, verdicts

    import torch

    if len(seeds) < 2:
        raise UserError("the scarce-class benchmark needs at least 2 seeds (5 or more for a verdict)")
    x, y, ids = np.asarray(train[0], np.float32), np.asarray(train[1], np.int64), [str(i) for i in train[2]]
    x_t, y_t = np.asarray(test[0], np.float32), np.asarray(test[1], np.int64)
    n_classes = len(class_names)
    if not (y_t == class_id).any():
        raise UserError(f"the real test split has no image of class '{class_names[class_id]}'")
    class_rows = np.flatnonzero(y == class_id)
    kept, held = choose_kept([ids[i] for i in class_rows], k, seen_ids, cut_seed)
    kept_set = set(kept)
    keep = np.array([y[i] != class_id or ids[i] in kept_set for i in range(len(y))])
    leaked = sorted(set(map(str, seen_ids)) & (set(held) | set(map(str, test_ids))))
    if leaked:  # choose_kept keeps every seen training image; test images must not have been seen at all
        raise UserError(f"the generator saw {len(leaked)} held-back or test images (e.g. {', '.join(leaked[:3])}): "
                        "its synthetic images could carry them into the benchmark")
    x_cut, y_cut = x[keep], y[keep]
    kept_x = x[[i for i in class_rows if ids[i] in kept_set]]
    n_add = len(class_rows) - k if n_add is None else int(n_add)
    settings = settings or replace(DomainSettings(), epochs=40, patience=8)
    x_test = torch.from_numpy(x_t)

    preds = {s: np.empty((len(seeds), len(y_t)), np.int64) for s in SCENARIOS}
    sizes = {}
    for scenario in SCENARIOS:
        for j, seed in enumerate(seeds):
            extra = _topped_up(scenario, n_add, kept_x, np.asarray(synthetic), seed)
            xs = np.concatenate([x_cut, extra])
            ys = np.concatenate([y_cut, np.full(len(extra), class_id, np.int64)])
            tr, va = stratified_split(ys, settings.val_fraction, seed)
            model, _, size = fit_classifier(xs[tr], ys[tr], xs[va], ys[va], n_classes, settings, seed=seed)
            preds[scenario][j] = predict(model, to_work(x_test, size)).argmax(1).numpy()
        sizes[scenario] = {"n_train": int(len(xs)), "n_class_real": int(k), "n_class_added": int(len(extra))}
        mean = _class_scores(y_t, preds[scenario], class_id, n_classes).mean(0)
        echo(f"scarce-class: {scenario:14s} " + ", ".join(f"{m} {v:.3f}" for m, v in zip(METRICS, mean)))

    def stat(test_idx: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:  # (scenario, metric), mean over seeds
        yt = y_t[test_idx]
        return np.stack([_class_scores(yt, preds[s][seed_idx][:, test_idx], class_id, n_classes).mean(0) for s in SCENARIOS])

    value, res, ns = bootstrap_distribution(stat, np.arange(len(y_t)), np.arange(len(seeds)), n_resamples=n_resamples,
                                            strata=[y_t, None])
    label = "percentile bootstrap over seeds and test images (stratified by class)"
    rows = {s: {**sizes[s], **{m: interval_from_resamples(value[i, j], res[:, i, j], level=level, n=ns, label=label)
                               for j, m in enumerate(METRICS)},
                "per_seed": _class_scores(y_t, preds[s], class_id, n_classes).tolist()}
            for i, s in enumerate(SCENARIOS)}
    base = SCENARIOS.index("cut+classical")
    judged = {}
    for j, m in enumerate(METRICS):
        diffs = [interval_from_resamples(value[i, j] - value[base, j], res[:, i, j] - res[:, base, j], level=level, n=ns,
                                         null=0.0, label=label + ", paired")
                 for i in (SCENARIOS.index("cut+synthetic"), SCENARIOS.index("cut+both"))]
        judged[m] = {f"{s} vs cut+classical": {**v, "verdict": v["verdict"].replace("A better", f"{s} better")
                                               .replace("B better", "cut+classical better")}
                     for s, v in zip(("cut+synthetic", "cut+both"), verdicts(diffs, [True, True]))}
    return {
        "protocol": "keep K real training images of the class; train the small CNN on the cut set, + classical "
                    "augmentation, + synthetic images of the class, + both; test on the full real test split",
        "class": class_names[class_id], "k": int(k), "n_add": int(n_add), "seeds": [int(s) for s in seeds],
        "n_test": int(len(y_t)), "n_test_class": int((y_t == class_id).sum()), "metrics": list(METRICS),
        "rows": rows, "verdicts": judged, "correction": "Holm over the two comparisons against cut+classical, per metric",
        "n_resamples": int(n_resamples), "level": level,
        "generator_saw": {"ids_of_class": sorted(set(map(str, seen_ids)) & set(kept)), "n_ids_total": len(set(map(str, seen_ids))),
                          **(generator or {})},
        "kept_ids": kept, "held_back_ids": held, "leak_check": "passed: the generator saw no held-back image of the class"
                      + (" and no test image" if len(test_ids) else " (test ids not given: not checked)"),
    }
