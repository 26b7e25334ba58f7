"""Downstream utility of synthetic images: train on real / synthetic / mixed, test on real (S004).

Protocol (what :func:`utility_table` runs):

* three training sets: (a) ``real`` = the real training split; (b) ``synthetic`` = the labelled
  synthetic set only; (c) ``real+synthetic`` = the real training split plus synthetic images,
  ``mix_ratio`` synthetic images per real image (1.0: as many synthetic as real), drawn per class
  in proportion to the real class counts;
* each is split per class into training and validation (``val_fraction``, seeded) — the
  validation part is only used for early stopping, so the synthetic-only model never sees a real
  image before the test;
* the same small CNN (:class:`medgen.evaluation.classifier.SmallCNN`, trained by
  :func:`~medgen.evaluation.classifier.fit_classifier`) is trained from scratch for each set and
  each seed (default 3 seeds) and tested on the real test split;
* reported per set: accuracy, precision / recall / F1 micro- and macro-averaged (scikit-learn,
  ``zero_division=0``), as mean and sample standard deviation (ddof=1) over the seeds, the
  per-seed values, and the confusion matrix summed over the seeds (rows: true class); a PNG shows
  the three row-normalised confusion matrices. Each mean has a 95 % interval over seeds and test
  images (a bootstrap of the stored predictions, :mod:`medgen.evaluation.utility_intervals`): the
  standard deviation over 3 seeds says nothing about how many test images the score rests on.

Also reported, as ``class_consistency``: the real-trained classifiers (one per seed) label the
synthetic images, and the fraction named as the class they were generated for is given with its
confusion matrix (rows: the class asked for). This is Shmelkov et al.'s "GAN-test" (ECCV 2018): a
conditional generator whose classes do not differ scores near chance (1 / number of classes) here
even when its images look right, and the synthetic-only row above cannot say why. It is a strict
test: blurry images (a briefly trained VAE) lie outside what the classifier saw and tend to be
named as one class whatever the label changed in them.

Micro-averaged precision, recall and F1 all equal the accuracy for single-label classification;
they are listed because S004 reports them. This is a relative comparison between training sets
with a deliberately small classifier, not a state-of-the-art classifier.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.errors import UserError

__all__ = ["METRIC_COLUMNS", "SCENARIOS", "confusion_figure", "mix_indices", "utility_table"]

SCENARIOS = ("real", "synthetic", "real+synthetic")
METRIC_COLUMNS = ("accuracy", "precision_micro", "recall_micro", "f1_micro", "precision_macro", "recall_macro", "f1_macro")


def mix_indices(real_labels: np.ndarray, syn_labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Indices of synthetic images to add: round(ratio * real count) per class (at most what exists)."""
    rng = np.random.default_rng(seed)
    out = []
    for lab in np.unique(real_labels):
        want = int(round(ratio * int((real_labels == lab).sum())))
        pool = np.flatnonzero(syn_labels == lab)
        out.extend(rng.permutation(pool)[: min(want, len(pool))].tolist())
    return np.array(sorted(out), dtype=np.int64)


def _scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for avg in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), average=avg, zero_division=0)
        out.update({f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)})
    return out, confusion_matrix(y_true, y_pred, labels=list(range(k)))


def utility_table(real_train: tuple[np.ndarray, np.ndarray], real_test: tuple[np.ndarray, np.ndarray],
                  synthetic: tuple[np.ndarray, np.ndarray], class_names: Sequence[str], seeds: Sequence[int] = (0, 1, 2),
                  mix_ratio: float = 1.0, val_fraction: float = 0.15, settings=None, figure: str | Path | None = None,
                  echo=print, n_resamples: int = 1000) -> dict:
    """Train-on-real / synthetic / mixed, test-on-real table (see the module docstring).

    Each argument pair is (images (N, C, *spatial) in [0, 1], integer label ids). Returns
    {"protocol", "classes", "seeds", "mix_ratio", "n_test", "rows": {scenario: {n_train_real,
    n_train_synthetic, mean {metric}, std {metric}, per_seed [...], confusion, intervals {metric}}}, "figure"}.
    ``intervals`` (and ``class_consistency["intervals"]``): 95 % intervals over seeds and test
    images (:mod:`medgen.evaluation.utility_intervals`), ``n_resamples`` bootstrap draws; 0: none.
    """
    import torch

    from sklearn.metrics import confusion_matrix

    from medgen.evaluation.classifier import DomainSettings, fit_classifier, predict, stratified_split, to_work
    from medgen.evaluation.utility_intervals import score_intervals

    settings = settings or replace(DomainSettings(), epochs=40, patience=8)
    x_r, y_r = np.asarray(real_train[0], dtype=np.float32), np.asarray(real_train[1], dtype=np.int64)
    x_t, y_t = np.asarray(real_test[0], dtype=np.float32), np.asarray(real_test[1], dtype=np.int64)
    x_s, y_s = np.asarray(synthetic[0], dtype=np.float32), np.asarray(synthetic[1], dtype=np.int64)
    k = len(class_names)
    if len(np.unique(y_r)) < 2:
        raise UserError("the utility table needs real training images of at least 2 classes")
    if len(x_t) == 0 or len(x_s) == 0:
        raise UserError("the utility table needs real test images and synthetic images")
    if not seeds:
        raise UserError("the utility table needs at least one seed")
    if mix_ratio < 0:
        raise UserError(f"mix ratio must be >= 0, got {mix_ratio}")
    x_t_torch = torch.from_numpy(x_t)
    x_s_torch = torch.from_numpy(x_s)
    rows: dict = {}
    consistency, cons_conf, cons_preds = [], np.zeros((k, k), dtype=np.int64), []
    for scenario in SCENARIOS:
        per_seed, conf, preds = [], np.zeros((k, k), dtype=np.int64), []
        n_real = n_syn = 0
        for seed in seeds:
            if scenario == "real":
                x, y = x_r, y_r
            elif scenario == "synthetic":
                x, y = x_s, y_s
            else:
                add = mix_indices(y_r, y_s, mix_ratio, seed)
                x, y = np.concatenate([x_r, x_s[add]]), np.concatenate([y_r, y_s[add]])
            n_real = len(x_r) if scenario != "synthetic" else 0
            n_syn = len(x) - n_real
            tr, va = stratified_split(y, val_fraction, seed)
            if len(va) == 0:
                va = tr
            model, report, size = fit_classifier(x[tr], y[tr], x[va], y[va], k, settings, seed=seed)
            pred = predict(model, to_work(x_t_torch, size)).argmax(1).numpy()  # (predict runs without gradients)
            scores, cm = _scores(y_t, pred, k)
            preds.append(pred)
            conf += cm
            if scenario == "real":  # the real-trained classifier names the synthetic images' classes
                pred_s = predict(model, to_work(x_s_torch, size)).argmax(1).numpy()
                consistency.append(float((pred_s == y_s).mean()))
                cons_preds.append(pred_s)
                cons_conf += confusion_matrix(y_s, pred_s, labels=list(range(k)))
            per_seed.append({"seed": int(seed), **scores, "val_accuracy": report["accuracy"], "epochs_run": report["epochs_run"]})
        values = {m: np.array([r[m] for r in per_seed]) for m in METRIC_COLUMNS}
        rows[scenario] = {
            "n_train_real": int(n_real), "n_train_synthetic": int(n_syn),
            "mean": {m: float(v.mean()) for m, v in values.items()},
            "std": {m: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()},
            "per_seed": per_seed, "confusion": conf.tolist(),
        }
        if n_resamples:
            rows[scenario]["intervals"] = score_intervals(y_t, np.stack(preds), k, METRIC_COLUMNS, n_resamples=n_resamples)
        echo(f"utility: {scenario:15s} accuracy {rows[scenario]['mean']['accuracy']:.3f} ± {rows[scenario]['std']['accuracy']:.3f}")
    cons = np.array(consistency)
    class_consistency = {
        "what": "fraction of synthetic images that the real-trained classifier names as the class they were generated for",
        "mean": float(cons.mean()), "std": float(cons.std(ddof=1)) if len(cons) > 1 else 0.0,
        "per_seed": [float(v) for v in cons], "chance": 1.0 / k, "n_synthetic": int(len(x_s)), "confusion": cons_conf.tolist(),
    }
    if n_resamples:  # over seeds and the synthetic images the real-trained classifiers named
        class_consistency["intervals"] = {"mean": score_intervals(y_s, np.stack(cons_preds), k, ("accuracy",),
                                                                  n_resamples=n_resamples)["accuracy"]}
    echo(f"utility: class consistency {cons.mean():.3f} (a real-trained classifier names the generated class; chance {1 / k:.3f})")
    out = {
        "protocol": "train a small CNN on each set (early stopping on a per-class validation split of that set), test on the real test split",
        "classifier": {"network": "SmallCNN (4 conv stages 16-128, GroupNorm, global average pool, linear)",
                       "epochs_max": settings.epochs, "patience": settings.patience, "lr": settings.lr,
                       "batch_size": settings.batch_size, "val_fraction": val_fraction},
        "classes": list(class_names), "seeds": [int(s) for s in seeds], "mix_ratio": float(mix_ratio),
        "n_test": int(len(x_t)), "metrics": list(METRIC_COLUMNS), "std": "sample standard deviation over seeds (ddof=1)",
        "rows": rows, "class_consistency": class_consistency, "figure": None,
    }
    if figure is not None:
        out["figure"] = str(confusion_figure({s: np.array(r["confusion"]) for s, r in rows.items()}, class_names, figure))
    return out


def confusion_figure(matrices: dict[str, np.ndarray], class_names: Sequence[str], path: str | Path) -> Path:
    """One row-normalised confusion matrix per training set, counts written in the cells."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(matrices)
    k = len(class_names)
    fig = Figure(figsize=(3.2 * n + 0.6, 3.0 + 0.12 * k))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, cm) in zip(axes, matrices.items()):
        cm = np.asarray(cm, dtype=np.float64)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), [str(c)[:10] for c in class_names], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), [str(c)[:10] for c in class_names], fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"trained on {name}", fontsize=9)
    fig.suptitle("test on real: confusion matrices (summed over seeds)", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out
