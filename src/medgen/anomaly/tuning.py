"""Choosing the per-image score on NORMAL validation images only (``medgen detect --tune synthetic``).

The criterion: the image AUROC between the run's normal validation images and copies of the same
images with one synthetic small lesion each (:mod:`medgen.anomaly.synthetic`). No test image and
no real lesion enters. Every candidate of :func:`grid` (map smoothing, score, edge margin) is
computed from the same two sets of raw maps, so tuning costs one extra detector pass over the
validation images; the candidate with the highest AUROC wins (ties: the settings given, then
the earlier candidate of :func:`grid`).

Why it helps: which pixels dominate a normal image's score depends on the detector and the data
(feature detectors peak at the brain outline; heavy smoothing dilutes a 3-pixel lesion), and a
threshold calibrated on normals cannot tell whether the score it thresholds can see a lesion at
all. The synthetic AUROC answers that from normals; it is also reported, so a user learns before
looking at a single real lesion how well small focal lesions can be found with the run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from medgen.anomaly import scoring


@dataclass(frozen=True)
class Scoring:
    smooth: float            # Gaussian sigma of the map, pixels
    score: str               # mean | max | top-percentile
    top_percent: float       # for top-percentile
    edge_margin: float       # pixels of the foreground rim left out of the image score

    def label(self) -> str:
        how = f"top {self.top_percent:g} %" if self.score == "top-percentile" else self.score
        return f"smooth {self.smooth:g}, {how}, edge margin {self.edge_margin:g} px"


MIN_NORMALS = 4  # fewer normal validation images than this cannot rank anything: tuning is skipped (a note says so)

# edge margins are fractions of the image side (0.03 = 2 px at 64 px) so the grid means the same at any size
SMOOTHS = (1.0, 2.0, 3.0)
SCORES = (("top-percentile", 5.0), ("top-percentile", 1.0), ("max", 1.0))
EDGE_MARGINS = (0.0, 0.03, 0.06, 0.09)


def grid(side: int) -> list[Scoring]:
    """The candidates for images whose smaller side is ``side`` pixels."""
    return [Scoring(sm, how, tp, round(m * side)) for m in EDGE_MARGINS for sm in SMOOTHS for how, tp in SCORES]


def scores(raw: np.ndarray, x: np.ndarray, s: Scoring, foreground: float | None) -> np.ndarray:
    maps, fg = scoring.postprocess(raw, x, s.smooth, foreground)
    return scoring.image_scores(maps, s.score, s.top_percent, scoring.scoring_region(fg, s.edge_margin))


def synthetic_auroc(normal_raw, normal_x, lesion_raw, lesion_x, s: Scoring, foreground: float | None) -> float:
    a = scores(normal_raw, normal_x, s, foreground)
    b = scores(lesion_raw, lesion_x, s, foreground)
    return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))


def choose(normal_raw, normal_x, lesion_raw, lesion_x, foreground: float | None,
           current: Scoring) -> tuple[Scoring, dict]:
    """(the best candidate, a record for metrics.json with the synthetic AUROC of each)."""
    side = int(min(np.asarray(normal_x).shape[2:]))
    candidates = [current, *[c for c in grid(side) if c != current]]
    table = [(c, synthetic_auroc(normal_raw, normal_x, lesion_raw, lesion_x, c, foreground)) for c in candidates]
    best, best_auroc = max(table, key=lambda t: t[1])  # max keeps the first of equal values
    return best, {"criterion": "image AUROC, normal validation images vs the same images with one synthetic lesion each",
                  "n_normal": int(len(normal_x)), "chosen": asdict(best), "synthetic_auroc": best_auroc,
                  "synthetic_auroc_of_given_settings": table[0][1],
                  "candidates": [{**asdict(c), "synthetic_auroc": round(a, 4)} for c, a in table]}


# --noise-level auto: the candidate levels of the diffusion detector and the sets tried
NOISE_CANDIDATES = (0.05, 0.1, 0.2)
NOISE_SETS = ((0.05,), (0.1,), (0.2,), (0.05, 0.1), (0.1, 0.2), (0.05, 0.1, 0.2))


def combine_levels(level_maps: dict[int, np.ndarray], t_starts, scales: dict[int, float] | None = None) -> np.ndarray:
    """The mean of the levels' raw maps, each divided by its scale (1 where none is given)."""
    scales = scales or {}
    return (sum(level_maps[t] / scales.get(t, 1.0) for t in t_starts) / len(t_starts)).astype(np.float32)


def level_scales(normal_levels: dict[int, np.ndarray], normal_x, foreground: float | None) -> dict[int, float]:
    """Each level's mean raw map over the foreground of the normal validation images."""
    fg = scoring.foreground_mask(normal_x, foreground)
    return {t: max(float(m[fg].mean() if fg is not None and fg.any() else m.mean()), 1e-12)
            for t, m in normal_levels.items()}


def choose_noise_levels(normal_levels: dict[int, np.ndarray], normal_x, lesion_levels: dict[int, np.ndarray], lesion_x,
                        t_of: dict[float, int], foreground: float | None, s: Scoring) -> tuple[tuple[float, ...], dict]:
    """(the noise-level set, a record): the set of :data:`NOISE_SETS` whose combined map (each level
    divided by its normal-validation mean, then averaged) best separates the normal validation
    images from their synthetic-lesion copies (image AUROC with the scoring ``s``)."""
    scales = level_scales(normal_levels, normal_x, foreground)

    def combined(levels, level_maps):
        return combine_levels(level_maps, [t_of[v] for v in levels], scales)

    table = [(levels, synthetic_auroc(combined(levels, normal_levels), normal_x, combined(levels, lesion_levels),
                                      lesion_x, s, foreground)) for levels in NOISE_SETS]
    best, auroc = max(table, key=lambda t: t[1])
    return best, {"criterion": "image AUROC, normal validation images vs the same images with one synthetic lesion each",
                  "chosen": list(best), "synthetic_auroc": auroc, "level_scales": {str(t): v for t, v in scales.items()},
                  "candidates": [{"noise_levels": list(levels), "synthetic_auroc": round(a, 4)} for levels, a in table]}
