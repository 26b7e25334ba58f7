"""memorisation: is each synthetic image closer to a training image than real test images are?

The audit runs in pixel space (images area-shrunk so that no axis exceeds 64) and in the first
extractor's feature space; the threshold is a low quantile of the test-to-train distances, so about
that fraction of synthetic images is flagged when nothing is copied (a binomial test says whether
more are).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.evaluation.groups.base import Context, MetricGroup, feature_ref, fmt_ci, interval_headline

PIXEL_SPACE_MAX = 64  # memorisation in pixel space: images shrunk so that no axis exceeds this
CLOSEST_PAIRS_SHOWN = 8


def shrink_pixels(images: np.ndarray, cap: int = PIXEL_SPACE_MAX) -> tuple[np.ndarray, tuple[int, ...]]:
    import torch

    from medgen.evaluation.classifier import to_work

    size = tuple(min(int(s), cap) for s in images.shape[2:])
    out = to_work(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), size).numpy()
    return out.reshape(len(out), -1), size


def memorisation_quantile(n_test: int) -> float:
    """0.05 for small test sets (a stable 1 % quantile needs ~1,000 test images), 0.01 from 1,000 on."""
    return float(min(0.05, max(0.01, 10.0 / max(n_test, 1))))


def audit(fake_x: np.ndarray, train_x: np.ndarray, test_x: np.ndarray, space: str, fake_images: np.ndarray,
           train_images: np.ndarray, fig_path: Path | None, train_ids: np.ndarray | None = None) -> dict:
    from medgen.metrics import closest_pairs_figure, memorisation_audit

    q = memorisation_quantile(len(test_x))
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


def _spaces(section: dict):
    return [(space, d) for space, d in section.items() if isinstance(d, dict) and "fraction_flagged" in d]


class Memorisation(MetricGroup):
    name = "memorisation"
    needs = frozenset({"features", "pixels", "training split"})
    title = "nearest-training-image audit"
    meanings = {"memorisation": "share of generated images closer to a training image than the closest 5 % of real test "
                                "images are (baseline 0.05)"}

    def compute(self, ctx: Context) -> dict:
        from medgen.evaluation.features import standardise

        if ctx.memorisation_sets is None:
            return {"skipped": "needs the training and test splits of a prepared dataset (a run, or --real DATASET)"}
        real, fake, fig_dir = ctx.real, ctx.fake, ctx.fig_dir
        train, test, test_is_real = ctx.memorisation_sets
        sizes = {"n_fake": len(fake), "n_train": len(train), "n_test": len(test)}
        mem: dict = {}
        fx, size = shrink_pixels(fake.images)
        tx, _ = shrink_pixels(train.images)
        sx, _ = shrink_pixels(test.images)
        space = f"pixels ({'x'.join(map(str, size))}, area-shrunk)" if size != tuple(fake.images.shape[2:]) else "pixels"
        mem["pixels"] = audit(fx, tx, sx, space, fake.images, train.images, fig_dir / "closest_pairs.png" if fig_dir else None,
                              train.ids)
        mem["pixels"]["settings"] = {**ctx.settings, **sizes, "space": space}
        name = ctx.features.names()[0]
        ext = ctx.features.get(name)
        f_fake = ctx.fake_features(name)
        f_train = ctx.features.of(name, "train", train.images)
        f_test = ctx.features.of(name, "real", real.images) if test_is_real else ctx.features.of(name, "test", test.images)
        if ext.standardise:
            f_ref = ctx.features.of(name, "real", real.images)
            (_, f_fake, f_train, f_test), _ = standardise(f_ref, f_fake, f_train, f_test)
        mem["features"] = audit(f_fake, f_train, f_test, f"features ({name})", fake.images, train.images,
                                fig_dir / f"closest_pairs_{name}.png" if fig_dir else None, train.ids)
        mem["features"]["settings"] = {**ctx.settings, **sizes, "features": feature_ref(ext)}
        return mem

    def headline(self, section: dict) -> dict[str, dict]:
        return {f"memorisation/{space}/fraction_flagged": interval_headline(d["fraction_flagged"], d.get("fraction_flagged_ci"))
                for space, d in _spaces(section)}

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        rows = [("", "skipped", section["skipped"])] if "skipped" in section else []
        for space, d in _spaces(section):
            rows.append((f"flagged [{space}]", f"{d['n_flagged']}/{d['n_synthetic']} = {fmt_ci(d['fraction_flagged'], d.get('fraction_flagged_ci'))}",
                         f"expected {d['expected_fraction']:.3f}, threshold {d['threshold']:.4g} (q {d['quantile']:g}), "
                         f"p {d['binomial_pvalue']:.3g}"))
        return rows

    def runs_columns(self, section: dict) -> dict:
        spaces = _spaces(section)
        return {"fraction_flagged": spaces[0][1]["fraction_flagged"]} if spaces else {}

    def figures(self, section: dict) -> list[str]:
        return [d["figure"] for d in section.values() if isinstance(d, dict) and d.get("figure")]
