"""``medgen compare``: is run A better than run B, once noise is accounted for?

The runs must rest on the same evidence: features from the same extractor, of the same real images
(the ids' digest), with the same number of real and of generated images; anything else is refused
(exit code 2) naming the difference, since a difference in FID between different n or different
real sets says nothing about the generators. Nothing is extracted again: the features each
``medgen evaluate`` stored in ``RUN/evaluation/features/`` are read.

One bootstrap serves every run and metric: each resample draws the real rows once (shared by all
runs, so the comparison is paired over the real images) and each run's generated rows
independently, and computes FID, KID and precision/recall/density/coverage of every run. The
difference of a metric between two runs is taken resample by resample; its percentile interval and
two-sided bootstrap p-value give the verdict (:func:`medgen.metrics.intervals.verdicts`): "A better",
"B better" or "no difference detectable at this n", with the smallest difference this n could
detect. With more than two runs every pair is compared and, per metric, the pairs are corrected
with Holm's method. Density is judged by its distance from 1 (the value of a generator that
matches the real density), the others in their natural direction.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import numpy as np

from medgen.errors import UserError
from medgen.feature_store import StoredFeatures, load_features

__all__ = ["METRICS", "compare", "format_table"]

# name -> (higher is better, what the verdict compares)
METRICS = {
    "fid": (False, "Fréchet distance"),
    "kid": (False, "unbiased MMD^2, polynomial kernel"),
    "precision": (True, "precision (Naeem et al. 2020, k=5)"),
    "recall": (True, "recall (k=5)"),
    "density": (False, "|density - 1|"),
    "coverage": (True, "coverage (k=5)"),
}


def _check_same_evidence(stored: list[StoredFeatures]) -> None:
    first = stored[0]
    checks = (
        ("extractor", lambda s: s.meta.get("extractor_info")),
        ("real images (ids digest)", lambda s: s.meta["real"].get("ids_sha256")),
        ("number of real images", lambda s: s.real.shape[0]),
        ("number of generated images", lambda s: s.generated.shape[0]),
        ("feature size", lambda s: s.real.shape[1]),
    )
    for what, get in checks:
        for other in stored[1:]:
            if get(other) != get(first):
                raise UserError(f"cannot compare with {first.run}: different {what} "
                                f"({_short(get(first))} vs {_short(get(other))}); evaluate both runs on the same "
                                "real images with the same --features and --n", other.run)


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compare(runs: Sequence[str | Path], features: str = "domain", n_resamples: int = 1000, level: float = 0.95,
            seed: int = 0, power: float = 0.8, k: int = 5, write: bool = True) -> dict:
    """Compare two or more evaluated runs metric by metric (see the module docstring).

    Returns {"runs", "extractor", "n_real", "n_generated", "n_resamples", "level", "seed",
    "correction", "metrics": {name: {"higher_is_better", "what", "per_run": {run: interval},
    "comparisons": [{"a", "b", "verdict", "difference", "low", "high", ...}]}}}. With ``write``,
    each run's metrics.json gets the result under "compare".
    """
    from medgen.metrics.feature_intervals import METRIC_NAMES, SHIFTED, AllFeatureMetrics
    from medgen.metrics.intervals import interval_from_resamples, verdicts

    if len(runs) < 2:
        raise UserError("compare needs at least two runs")
    names = [str(r) for r in runs]
    stored = [load_features(r, features) for r in runs]
    _check_same_evidence(stored)
    real = stored[0].real
    value, res, ns = AllFeatureMetrics(real, [s.generated for s in stored], k).bootstrap(n_resamples, seed)
    pairs = list(itertools.combinations(range(len(runs)), 2))
    out_metrics = {}
    for metric, (higher, what) in METRICS.items():
        m = METRIC_NAMES.index(metric)
        method = "shifted" if metric in SHIFTED else "percentile"
        judged_value, judged_res = value[m], res[:, m]
        if metric == "density":  # judged by the distance from 1; shown as itself
            judged_value, judged_res = np.abs(value[m] - 1.0), np.abs(res[:, m] - 1.0)
        per_run = {names[j]: interval_from_resamples(value[m, j], res[:, m, j], level=level, method=method, n=ns[0:1] + ns[j + 1:j + 2])
                   for j in range(len(runs))}
        diffs = [interval_from_resamples(judged_value[a] - judged_value[b], judged_res[:, a] - judged_res[:, b], level=level,
                                         n=[ns[0], ns[a + 1], ns[b + 1]], null=0.0,
                                         label="percentile bootstrap of the difference, paired over the real images")
                 for a, b in pairs]
        judged = verdicts(diffs, [higher] * len(diffs), power=power)
        out_metrics[metric] = {"higher_is_better": higher, "what": what, "per_run": per_run,
                               "comparisons": [{"a": names[a], "b": names[b], **v, "method": d["method"]}
                                               for (a, b), v, d in zip(pairs, judged, diffs)]}
    result = {
        "runs": names, "extractor": features, "extractor_info": stored[0].meta.get("extractor_info"),
        "real": stored[0].meta.get("real"), "n_real": int(real.shape[0]), "n_generated": int(stored[0].generated.shape[0]),
        "n_resamples": int(n_resamples), "level": level, "seed": seed, "power": power,
        "correction": "none (one comparison per metric)" if len(pairs) == 1
        else f"Holm over the {len(pairs)} pairs of runs, per metric",
        "metrics": out_metrics,
    }
    if write:
        from medgen.rundir import RunDir

        for name in names:
            run = RunDir(name)
            section = run.metrics().get("compare", {})
            section[" vs ".join(names)] = result
            run.update_metrics("compare", section)
    return result


def format_table(result: dict) -> str:
    """The verdict table as text (one line per metric and pair of runs)."""
    lines = [f"compare: {result['extractor']} features, {result['n_real']} real / {result['n_generated']} generated images "
             f"per run, {result['n_resamples']} resamples, {round(result['level'] * 100)} % intervals; correction: {result['correction']}",
             f"{'metric':10s} {'A':>18s} {'B':>18s} {'A - B':>10s} {'interval':>22s} {'detectable':>10s}  verdict"]
    for metric, d in result["metrics"].items():
        for c in d["comparisons"]:
            lines.append(f"{metric:10s} {Path(c['a']).name[-18:]:>18s} {Path(c['b']).name[-18:]:>18s} {c['difference']:10.4g} "
                         f"{'[' + format(c['low'], '.4g') + ', ' + format(c['high'], '.4g') + ']':>22s} "
                         f"{c['smallest_detectable_difference']:10.3g}  {c['verdict']}")
    return "\n".join(lines)
