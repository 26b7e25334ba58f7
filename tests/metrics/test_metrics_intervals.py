"""Bootstrap / binomial intervals and verdicts (medgen.metrics.intervals)."""
from __future__ import annotations

import numpy as np
import pytest

from medgen.metrics.intervals import (
    A_BETTER,
    B_BETTER,
    NO_DIFFERENCE,
    binomial_ci,
    bootstrap_ci,
    bootstrap_distribution,
    holm,
    verdict,
    verdicts,
)

KEYS = {"value", "low", "high", "level", "method", "n", "n_resamples"}


def test_mean_interval_matches_the_normal_theory_width():
    x = np.random.default_rng(1).normal(size=400)
    ci = bootstrap_ci(np.mean, x, n_resamples=2000)
    assert KEYS <= ci.keys()
    assert ci["value"] == pytest.approx(x.mean())
    assert ci["low"] < ci["value"] < ci["high"]
    normal_width = 2 * 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert (ci["high"] - ci["low"]) == pytest.approx(normal_width, rel=0.1)
    assert ci["n"] == 400 and ci["n_resamples"] == 2000 and ci["level"] == 0.95


def test_seeded_reproducible_and_independent_of_batching():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=50), rng.normal(size=60)

    def diff(a, b):
        return a.mean() - b.mean()

    def diff_batched(a, b):
        return a.mean(axis=1) - b.mean(axis=1)

    a = bootstrap_ci(diff, x, y, n_resamples=200, seed=3)
    b = bootstrap_ci(diff, x, y, n_resamples=200, seed=3)
    c = bootstrap_ci(diff_batched, x, y, n_resamples=200, seed=3, vectorized=True, batch_size=7)
    d = bootstrap_ci(diff, x, y, n_resamples=200, seed=4)
    assert a == b
    assert (c["low"], c["high"]) == pytest.approx((a["low"], a["high"]))
    assert (d["low"], d["high"]) != (a["low"], a["high"])
    assert a["n"] == [50, 60]


def test_strata_keep_their_counts_in_every_resample():
    labels = np.array([0] * 5 + [1] * 95)
    seen = []

    def frac_positive(lab):
        seen.append(lab.sum())
        return lab.mean()

    ci = bootstrap_ci(frac_positive, labels, strata=labels, n_resamples=50)
    assert set(seen) == {95}  # the stratum of 95 ones keeps 95 draws each time
    assert ci["low"] == ci["high"] == 0.95 and "stratified" in ci["method"]
    free = bootstrap_ci(np.mean, labels, n_resamples=200)
    assert free["high"] > free["low"]


def test_paired_resampling_uses_the_same_rows():
    x = np.random.default_rng(5).normal(size=80)
    ci = bootstrap_ci(lambda a, b: float(np.abs(a - b).max()), x, x.copy(), paired=True, n_resamples=100)
    assert ci["low"] == ci["high"] == 0.0
    unpaired = bootstrap_ci(lambda a, b: float(np.abs(a - b).max()), x, x.copy(), n_resamples=100)
    assert unpaired["low"] > 0
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ci(np.mean, x, x[:10], paired=True)


def test_non_finite_resamples_are_dropped_and_counted():
    x = np.array([0.0] * 3 + [1.0] * 3)
    ci = bootstrap_ci(lambda a: 1.0 / a.sum() if a.sum() else np.inf, x, n_resamples=300)
    assert ci["n_failed"] >= 1 and np.isfinite(ci["low"])


def test_vector_statistic_through_bootstrap_distribution():
    x = np.random.default_rng(6).normal(size=(100, 2))
    value, res, ns = bootstrap_distribution(lambda a: a.mean(axis=0), x, n_resamples=30)
    assert value.shape == (2,) and res.shape == (30, 2) and ns == [100]
    with pytest.raises(ValueError, match="one number"):
        bootstrap_ci(lambda a: a.mean(axis=0), x, n_resamples=5)


def test_shifted_and_basic_intervals_and_bounds():
    x = np.random.default_rng(7).normal(size=200)

    def biased(a):  # resampling adds duplicates: the number of distinct values falls
        return float(np.unique(a).size)

    pct = bootstrap_ci(biased, x, n_resamples=200)
    shifted = bootstrap_ci(biased, x, n_resamples=200, method="shifted")
    assert pct["high"] < 200  # the percentile interval lies beside the value...
    assert shifted["low"] <= 200 <= shifted["high"]  # ...the shifted one around it
    basic = bootstrap_ci(np.mean, x, n_resamples=200, method="basic", bounds=(0.0, None))
    assert basic["low"] >= 0.0
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci(np.mean, x, method="bca")


def test_binomial_ci_is_clopper_pearson():
    ci = binomial_ci(0, 10)
    assert KEYS <= ci.keys()
    assert ci["low"] == 0.0 and ci["high"] == pytest.approx(1 - 0.025 ** (1 / 10))  # exact bound for k = 0
    ci = binomial_ci(5, 10)
    assert ci["low"] == pytest.approx(0.187086, abs=1e-5) and ci["high"] == pytest.approx(0.812914, abs=1e-5)
    assert "Clopper-Pearson" in ci["method"] and ci["n_resamples"] is None
    with pytest.raises(ValueError):
        binomial_ci(11, 10)


def test_verdict_directions_and_detectable_difference():
    d = {"value": 2.0, "low": 1.0, "high": 3.0, "level": 0.95, "se": 0.5}
    assert verdict(d, higher_is_better=True)["verdict"] == A_BETTER
    assert verdict(d, higher_is_better=False)["verdict"] == B_BETTER
    v = verdict({**d, "low": -0.5}, higher_is_better=True)
    assert v["verdict"] == NO_DIFFERENCE
    assert v["smallest_detectable_difference"] == pytest.approx((1.959964 + 0.841621) * 0.5, rel=1e-5)


def test_holm_adjustment_and_corrected_verdicts():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    cis = [{"value": 1.0, "low": 0.1, "high": 2.0, "level": 0.95, "se": 0.4, "p_value": p} for p in (0.001, 0.03, 0.04)]
    out = verdicts(cis, [True, False, True])
    # each interval alone excludes 0, but after Holm only the first survives (0.03 * 2 > 0.05)
    assert [o["verdict"] for o in out] == [A_BETTER, NO_DIFFERENCE, NO_DIFFERENCE]
    assert [o["p_adjusted"] for o in out] == pytest.approx([0.003, 0.06, 0.06])
    assert "Holm over 3" in out[0]["correction"]
    assert out[0]["smallest_detectable_difference"] > verdict(cis[0], True)["smallest_detectable_difference"]
    with pytest.raises(ValueError, match="p_value"):
        verdicts([{**cis[0], "p_value": None}] * 2, [True, True])


def test_bootstrap_p_value_through_null():
    rng = np.random.default_rng(8)
    shifted = bootstrap_ci(np.mean, rng.normal(1.0, 1.0, size=100), null=0.0, n_resamples=500)
    centred = bootstrap_ci(np.mean, rng.normal(0.0, 1.0, size=100), null=0.0, n_resamples=500)
    assert shifted["p_value"] < 0.01 < 0.1 < centred["p_value"]
