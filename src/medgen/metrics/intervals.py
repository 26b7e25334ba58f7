"""Uncertainty of a reported number: bootstrap and exact binomial intervals, verdicts between runs.

Every interval is a dict of one shape, so that metrics.json, the terminal, the report and
``medgen compare`` read them the same way::

    {"value", "low", "high", "level", "method", "n", "n_resamples"}   (+ "se", "p_value", ...)

* :func:`bootstrap_ci` resamples each sample along axis 0 (independently per sample unless
  ``paired``; within strata when given) and evaluates ``statistic`` on every resample. Each resample
  draws its indices from its own generator seeded with ``(seed, resample number)``, so a result
  depends only on the seed, never on how the resamples are batched. ``scipy.stats.bootstrap`` is not
  used because it cannot resample within strata, and the statistics here are often cheapest on
  *indices* into precomputed matrices (kernels, distances), which its axis-based vectorisation
  cannot express. Interval methods: ``"percentile"``; ``"basic"`` (reverse percentile,
  ``[2v - q_hi, 2v - q_lo]``); ``"shifted"``: the percentile interval moved by the bootstrap's bias
  (median of the resamples - value), so that it is centred where the value is. "shifted" is for
  statistics that resampling with replacement biases: a resample holds only ~63 % distinct images,
  which inflates the Fréchet distance and shrinks nearest-neighbour coverage; the percentile
  interval would then lie beside the value, and "basic" over-corrects when the bias depends
  non-linearly on n (FID with n not much larger than the feature size). The shifted interval
  measures how much the number varies at this n; it does not remove the estimator's own
  finite-n bias (FID between two real splits is > 0), which is why reports show a real-vs-real
  baseline beside it.
* :func:`binomial_ci`: exact Clopper-Pearson interval (scipy's ``binomtest``).
* :func:`verdict` / :func:`verdicts`: "A better" / "B better" / "no difference detectable at this n"
  from the interval of a difference A - B, with the smallest difference the n could detect
  (two-sided test at the level, 80 % power, normal approximation with the bootstrap standard
  error); :func:`verdicts` corrects several comparisons with Holm's step-down method.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medgen.metrics._arrays import as_numpy

__all__ = [
    "A_BETTER",
    "B_BETTER",
    "NO_DIFFERENCE",
    "binomial_ci",
    "bootstrap_ci",
    "bootstrap_distribution",
    "bootstrap_p_value",
    "holm",
    "interval_from_resamples",
    "resample_indices",
    "verdict",
    "verdicts",
]

A_BETTER = "A better"
B_BETTER = "B better"
NO_DIFFERENCE = "no difference detectable at this n"
METHODS = ("percentile", "basic", "shifted")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _strata_groups(strata: Any, n: int) -> list[np.ndarray]:
    """Row indices of each stratum (one group of all rows when ``strata`` is None)."""
    if strata is None:
        return [np.arange(n)]
    labels = as_numpy(strata)
    if labels.shape[0] != n:
        raise ValueError(f"strata has {labels.shape[0]} entries for a sample of {n}")
    _, inverse = np.unique(labels, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


def resample_indices(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw: within each group, as many indices as it has, with replacement."""
    if len(groups) == 1:
        g = groups[0]
        return g[rng.integers(0, g.size, g.size)]
    return np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])


def _per_sample_strata(strata: Any, k: int) -> list[Any]:
    """``strata`` as one entry per sample: one array applies to all; a list/tuple of k arrays
    (or None) gives one per sample."""
    if (k > 1 and isinstance(strata, (list, tuple)) and len(strata) == k
            and all(s is None or np.ndim(s) == 1 for s in strata)):
        return list(strata)
    return [strata] * k


def bootstrap_p_value(resampled: np.ndarray, null: float = 0.0) -> float:
    """Two-sided percentile-bootstrap p-value of ``statistic == null``: twice the smaller tail."""
    r = resampled[np.isfinite(resampled)]
    if r.size == 0:
        return float("nan")
    tail = min(np.count_nonzero(r <= null), np.count_nonzero(r >= null))
    return float(min(1.0, 2.0 * (tail + 1) / (r.size + 1)))


def bootstrap_distribution(
    statistic: Callable[..., Any],
    *samples: Any,
    n_resamples: int = 1000,
    seed: int = 0,
    strata: Any = None,
    paired: bool = False,
    vectorized: bool = False,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(value, resamples, sizes)``: the statistic on the samples, on each resample, and the sample sizes.

    The statistic may return one number or a vector of q numbers (several metrics on the same
    resamples); ``resamples`` then has shape (n_resamples, q). Arguments as in :func:`bootstrap_ci`.
    """
    if not samples:
        raise ValueError("a bootstrap needs at least one sample")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    arrays = [as_numpy(s) for s in samples]
    ns = [int(a.shape[0]) for a in arrays]
    if min(ns) < 1:
        raise ValueError(f"every sample needs at least one row, got sizes {ns}")
    if paired and len(set(ns)) > 1:
        raise ValueError(f"paired samples must have the same length, got {ns}")

    def evaluate(batch: list[list[np.ndarray]]) -> np.ndarray:
        if vectorized:
            stacked = [np.stack([idx[i] for idx in batch]) for i in range(len(arrays))]
            return np.asarray(statistic(*[a[ix] for a, ix in zip(arrays, stacked)]), dtype=np.float64)
        return np.stack([np.asarray(statistic(*[a[ix] for a, ix in zip(arrays, idx)]), dtype=np.float64)
                         for idx in batch])

    value = evaluate([[np.arange(n) for n in ns]])[0]
    if paired:
        groups = [_strata_groups(strata, ns[0])]
    else:
        groups = [_strata_groups(s, n) for s, n in zip(_per_sample_strata(strata, len(arrays)), ns)]
    stats = np.empty((n_resamples,) + value.shape)
    step = batch_size if vectorized else n_resamples
    for start in range(0, n_resamples, step):
        batch = []
        for r in range(start, min(start + step, n_resamples)):
            rng = np.random.default_rng([seed, r])
            if paired:
                batch.append([resample_indices(groups[0], rng)] * len(arrays))
            else:
                batch.append([resample_indices(g, rng) for g in groups])
        stats[start:start + len(batch)] = evaluate(batch)
    return value, stats, ns


def interval_from_resamples(
    value: float,
    resamples: np.ndarray,
    *,
    level: float = 0.95,
    method: str = "percentile",
    n: Any = None,
    null: float | None = None,
    bounds: tuple[float | None, float | None] = (None, None),
    label: str | None = None,
) -> dict:
    """The interval dict from a statistic's value and its bootstrap resamples (non-finite ones dropped)."""
    _check_level(level)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    value = float(value)
    stats = np.asarray(resamples, dtype=np.float64)
    ok = np.isfinite(stats)
    alpha = 1.0 - level
    if ok.any():
        q_lo, q_hi = np.quantile(stats[ok], [alpha / 2, 1 - alpha / 2])
        if method == "percentile":
            low, high = q_lo, q_hi
        elif method == "basic":
            low, high = 2 * value - q_hi, 2 * value - q_lo
        else:  # shifted: the percentile interval moved by the bootstrap's bias (median - value)
            shift = float(np.median(stats[ok])) - value
            low, high = q_lo - shift, q_hi - shift
        se = float(stats[ok].std(ddof=1)) if ok.sum() > 1 else 0.0
    else:
        low = high = se = float("nan")
    lo_bound, hi_bound = bounds
    if lo_bound is not None:
        low, high = max(low, lo_bound), max(high, lo_bound)
    if hi_bound is not None:
        low, high = min(low, hi_bound), min(high, hi_bound)
    out = {"value": value, "low": float(low), "high": float(high), "level": level,
           "method": label or f"{method} bootstrap", "n": n, "n_resamples": int(stats.size), "se": se}
    if int((~ok).sum()):
        out["n_failed"] = int((~ok).sum())
    if null is not None:
        out["p_value"] = bootstrap_p_value(stats, null)
    return out


def bootstrap_ci(
    statistic: Callable[..., Any],
    *samples: Any,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    strata: Any = None,
    paired: bool = False,
    method: str = "percentile",
    vectorized: bool = False,
    batch_size: int = 64,
    null: float | None = None,
    bounds: tuple[float | None, float | None] = (None, None),
) -> dict:
    """Bootstrap interval of ``statistic(*samples)`` -> {"value", "low", "high", "level", "method", "n", "n_resamples", "se", "seed"}.

    ``samples``: arrays (or tensors) resampled along axis 0. Pass ``np.arange(n)`` to let a statistic
    index precomputed matrices itself. ``strata``: labels per row, one array for all samples (or,
    unpaired, a list with one array or None per sample); each resample keeps every stratum's count.
    ``paired``: one set of row indices for all samples (they must have the same length).
    ``vectorized``: ``statistic`` takes each sample with an extra leading resample axis
    (``(b, n, ...)``, b <= ``batch_size``) and returns b values; without it, one call per resample.
    ``method``: "percentile" or "basic". ``null``: also report the two-sided bootstrap p-value of
    ``statistic == null``. ``bounds``: clip the interval to the statistic's range (e.g. ``(0, None)``).
    ``n`` is the sample size, or the list of sizes for several samples.

    Resamples where the statistic is not finite (e.g. an AUROC with one class drawn) are dropped
    and counted in ``"n_failed"``.
    """
    _check_level(level)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    value, stats, ns = bootstrap_distribution(statistic, *samples, n_resamples=n_resamples, seed=seed,
                                              strata=strata, paired=paired, vectorized=vectorized,
                                              batch_size=batch_size)
    if value.ndim:
        raise ValueError(f"statistic must return one number, got shape {value.shape}; "
                         "use bootstrap_distribution for several")
    label = f"{method} bootstrap" + (" (paired)" if paired else "") + (" (stratified)" if strata is not None else "")
    out = interval_from_resamples(value, stats, level=level, method=method, n=ns[0] if len(ns) == 1 else ns,
                                  null=null, bounds=bounds, label=label)
    out["seed"] = seed
    return out


def binomial_ci(k: int, n: int, level: float = 0.95) -> dict:
    """Exact (Clopper-Pearson) interval of the proportion k / n."""
    from scipy.stats import binomtest

    _check_level(level)
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return {"value": k / n, "low": float(ci.low), "high": float(ci.high), "level": level,
            "method": "exact binomial (Clopper-Pearson)", "n": n, "n_resamples": None, "k": k}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (reject hypothesis i at alpha iff adjusted p_i <= alpha)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def _smallest_detectable(se: float, alpha: float, power: float) -> float:
    from scipy.stats import norm

    if not np.isfinite(se):
        return float("nan")
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def _se_from_interval(diff_ci: dict) -> float:
    """The bootstrap standard error, or the one a normal interval of that width would have."""
    from scipy.stats import norm

    if diff_ci.get("se") is not None:
        return float(diff_ci["se"])
    return float((diff_ci["high"] - diff_ci["low"]) / (2 * norm.ppf(0.5 + diff_ci["level"] / 2)))


def _direction(value: float, higher_is_better: bool) -> str:
    return A_BETTER if (value > 0) == higher_is_better else B_BETTER


def verdict(diff_ci: dict, higher_is_better: bool, power: float = 0.8) -> dict:
    """Verdict on one difference A - B from its interval: which run is better, if the n can tell.

    "A better" when the whole interval is on A's good side of 0, "B better" when on B's, else
    "no difference detectable at this n". ``smallest_detectable_difference``: the |A - B| a
    two-sided test at this level would detect with probability ``power`` at this n.
    """
    low, high = diff_ci["low"], diff_ci["high"]
    if low > 0 or high < 0:
        text = _direction(diff_ci["value"] if np.isfinite(diff_ci["value"]) else low, higher_is_better)
    else:
        text = NO_DIFFERENCE
    alpha = 1.0 - diff_ci["level"]
    return {"verdict": text, "difference": diff_ci["value"], "low": low, "high": high, "level": diff_ci["level"],
            "smallest_detectable_difference": _smallest_detectable(_se_from_interval(diff_ci), alpha, power),
            "power": power, "correction": None}


def verdicts(diff_cis: Sequence[dict], higher_is_better: Sequence[bool], power: float = 0.8,
             correction: str = "holm") -> list[dict]:
    """Verdicts for several differences, corrected for multiple comparisons.

    With one comparison this is :func:`verdict`. With several, each interval must carry its
    bootstrap ``p_value`` (``bootstrap_ci(..., null=0)``); a difference is declared when its
    Holm-adjusted p-value is <= 1 - level. The smallest detectable difference uses the
    Bonferroni level alpha / m (Holm's first, strictest step), so it is conservative.
    """
    if len(diff_cis) != len(higher_is_better):
        raise ValueError("one higher_is_better per difference is needed")
    if len(diff_cis) <= 1 or correction == "none":
        return [verdict(d, h, power) for d, h in zip(diff_cis, higher_is_better)]
    if correction != "holm":
        raise ValueError(f"correction must be 'holm' or 'none', got {correction!r}")
    missing = [i for i, d in enumerate(diff_cis) if d.get("p_value") is None]
    if missing:
        raise ValueError(f"differences {missing} have no p_value: bootstrap them with null=0")
    adjusted = holm([d["p_value"] for d in diff_cis])
    m = len(diff_cis)
    out = []
    for d, h, p_adj in zip(diff_cis, higher_is_better, adjusted):
        alpha = 1.0 - d["level"]
        text = _direction(d["value"], h) if p_adj <= alpha and d["value"] != 0 else NO_DIFFERENCE
        out.append({"verdict": text, "difference": d["value"], "low": d["low"], "high": d["high"],
                    "level": d["level"], "p_value": d["p_value"], "p_adjusted": p_adj,
                    "smallest_detectable_difference": _smallest_detectable(_se_from_interval(d), alpha / m, power),
                    "power": power, "correction": f"Holm over {m} comparisons"})
    return out
