"""Decision thresholds, chosen on NORMAL validation data only (no anomaly is ever looked at).

Rules (``--threshold``):
- ``fpr:A``: the (1 - A) quantile of the normal-validation scores (``fpr:0.05`` = their 95th
  percentile, linear interpolation), so about a fraction A of new normals is flagged. The same
  rule on the normal-validation *pixels* gives the pixel threshold for segmentation.
- ``value:X``: a fixed threshold X (image and pixel alike).
An item is predicted anomalous when its score is strictly above the threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medgen.errors import UserError


@dataclass(frozen=True)
class ThresholdRule:
    kind: str  # "fpr" or "value"
    value: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"


def parse_rule(spec: str) -> ThresholdRule:
    kind, sep, arg = str(spec).strip().partition(":")
    kind = kind.strip().lower()
    try:
        value = float(arg)
    except ValueError:
        value = None
    if not sep or kind not in ("fpr", "value") or value is None or not np.isfinite(value):
        raise UserError(f"bad --threshold '{spec}': use fpr:RATE (e.g. fpr:0.05) or value:X")
    if kind == "fpr" and not 0 < value < 1:
        raise UserError(f"bad --threshold '{spec}': the false-positive rate must be between 0 and 1 (exclusive)")
    return ThresholdRule(kind, value)


def threshold_at_fpr(normal_scores, fpr: float) -> float:
    """The (1 - fpr) quantile of scores of normal items (linear interpolation)."""
    s = np.asarray(normal_scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise UserError("no normal validation scores to choose a threshold from")
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    return float(np.quantile(s, 1.0 - fpr))


def subsample(values: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """At most ``limit`` values, the same ones every time (a seeded choice without replacement)."""
    values = np.asarray(values).ravel()
    if len(values) <= limit:
        return values
    idx = np.random.default_rng(seed).choice(len(values), size=limit, replace=False)
    return values[np.sort(idx)]


def choose(rule: ThresholdRule | str, normal_scores=None) -> float:
    rule = parse_rule(rule) if isinstance(rule, str) else rule
    if rule.kind == "value":
        return float(rule.value)
    if normal_scores is None:
        raise UserError(f"--threshold {rule} needs normal validation images (the run's dataset, split val); "
                        "give --threshold value:X instead")
    return threshold_at_fpr(normal_scores, rule.value)


def false_positive_rate(normal_scores, threshold: float) -> float:
    s = np.asarray(normal_scores, dtype=np.float64).ravel()
    return float((s > threshold).mean()) if len(s) else float("nan")
