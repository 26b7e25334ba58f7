"""Seeded, stratified, grouped train/val/test split.

Written here rather than with scikit-learn's ``train_test_split(stratify=...)`` because that
fails on classes with a single member and cannot keep groups (a patient, the slices of one
volume, the ROIs of one image) together in one split, which would leak test data into training.
Per class, groups are shuffled with the seed and allotted by the largest-remainder rule, so
every class is split in the asked proportions as closely as its group count allows.
When all items share fewer groups than splits, items are split individually instead.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from medgen.errors import UserError

SPLITS = ("train", "val", "test")


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 for p in parts) or not abs(sum(parts) - 1) < 1e-6 or parts[0] == 0:
        raise UserError(f"bad --split '{text}': expected three fractions TRAIN,VAL,TEST summing to 1 (e.g. 0.8,0.1,0.1)")
    return parts  # type: ignore[return-value]


def _allot(n: int, fractions) -> list[int]:
    exact = [n * f for f in fractions]
    counts = [int(e) for e in exact]
    for i in sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    return counts


def assign_splits(labels, groups, fixed, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> list[str]:
    """Split name per item. ``fixed`` holds manifest-given splits (None where free)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if len(set(groups)) < 3:
        groups = [str(i) for i in range(n)]
    group_label: dict[str, str] = {}
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    for g, idx in members.items():
        group_label[g] = Counter(labels[i] for i in idx).most_common(1)[0][0]
    out: list[str | None] = [f for f in fixed]
    free_groups = sorted(g for g, idx in members.items() if all(fixed[i] is None for i in idx))
    by_label: dict[str, list[str]] = defaultdict(list)
    for g in free_groups:
        by_label[group_label[g]].append(g)
    for lab in sorted(by_label):
        gs = by_label[lab]
        rng.shuffle(gs)
        counts = _allot(len(gs), fractions)
        bounds = np.cumsum([0, *counts])
        for k, split in enumerate(SPLITS):
            for g in gs[bounds[k]: bounds[k + 1]]:
                for i in members[g]:
                    out[i] = split
    # items of a group partly fixed by the manifest keep their own split; the rest follow the group's first fixed one
    for g, idx in members.items():
        given = [fixed[i] for i in idx if fixed[i] is not None]
        for i in idx:
            if out[i] is None:
                out[i] = given[0] if given else "train"
    return out  # type: ignore[return-value]
