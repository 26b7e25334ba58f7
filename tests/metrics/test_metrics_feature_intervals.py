"""Bootstrap intervals of FID, KID and PRDC over both feature sets (medgen.metrics.feature_intervals)."""
from __future__ import annotations

import numpy as np
import pytest

from medgen.metrics import fid_from_features, kid, prdc
from medgen.metrics.feature_intervals import PRDCBootstrap, fid_ci, kid_ci, prdc_ci


def _sets(n, f=16, seed=0, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, f)), rng.normal(size=(n, f)) * scale + shift


def test_identical_sets_intervals_reach_zero_and_degraded_set_excludes_it():
    real, _ = _sets(150)
    _, degraded = _sets(150, shift=0.5, scale=0.7)
    fid_same = fid_ci(real, real, n_resamples=200)
    fid_bad = fid_ci(real, degraded, n_resamples=200)
    assert fid_same["value"] == pytest.approx(0.0, abs=1e-9) and fid_same["low"] == 0.0
    assert fid_bad["low"] > fid_same["high"] and fid_bad["low"] > 0
    assert fid_bad["value"] == pytest.approx(fid_from_features(real, degraded))
    kid_same = kid_ci(real, real, n_resamples=200)
    kid_bad = kid_ci(real, degraded, n_resamples=200)
    # the unbiased estimator gives -2/n (mean k(x,x) - mean k(x,y)) for identical sets: near 0
    assert max(abs(kid_same["low"]), abs(kid_same["high"])) < 0.15 * kid_bad["low"]
    assert kid_bad["low"] > 0


def test_two_samples_of_one_distribution_kid_interval_contains_zero():
    x, y = _sets(200, seed=1)
    ci = kid_ci(x, y, n_resamples=300)
    assert ci["low"] < 0 < ci["high"]
    assert ci["value"] == pytest.approx(kid(x, y, subsets=3, subset_size=200)[0])


def test_quadrupling_n_roughly_halves_the_width():
    widths = {}
    for n in (200, 800):
        x, y = _sets(n, seed=2, shift=0.3)
        fid = fid_ci(x, y, n_resamples=200)
        k = kid_ci(x, y, n_resamples=200)
        widths[n] = (fid["high"] - fid["low"], k["high"] - k["low"])
    for i in range(2):
        assert 1.5 < widths[200][i] / widths[800][i] < 2.8, widths


def test_seeded_and_reproducible():
    x, y = _sets(60, seed=3, shift=0.2)
    assert fid_ci(x, y, n_resamples=50, seed=1) == fid_ci(x, y, n_resamples=50, seed=1)
    assert fid_ci(x, y, n_resamples=50, seed=1)["low"] != fid_ci(x, y, n_resamples=50, seed=2)["low"]
    assert prdc_ci(x, y, n_resamples=30, seed=1) == prdc_ci(x, y, n_resamples=30, seed=1)


def test_prdc_bootstrap_on_original_rows_matches_prdc():
    x, y = _sets(80, seed=4, shift=0.3)
    stat = PRDCBootstrap(x, y, k=5)
    got = stat(np.arange(80), np.arange(80))
    want = prdc(x, y, k=5)
    assert got == pytest.approx([want[name] for name in PRDCBootstrap.NAMES])
    cis = prdc_ci(x, y, n_resamples=100)
    for name, ci in cis.items():
        assert ci["value"] == pytest.approx(want[name])
        assert ci["low"] <= ci["value"] <= ci["high"], name
        assert ci["n"] == [80, 80]


def test_prdc_resample_ignores_copies_of_a_point_as_its_neighbours():
    x, y = _sets(30, seed=5)
    stat = PRDCBootstrap(x, y, k=3)
    ix = np.repeat(np.arange(10), 3)  # every drawn real point is there three times
    radii = stat._radii(stat.x_nbrs, np.bincount(ix, minlength=30).astype(float))
    assert (radii[:10] > 0).all()  # not 0, which its own copies would give
    d = np.linalg.norm(x[:10, None] - x[None, :10], axis=2)
    np.fill_diagonal(d, np.inf)
    # each other drawn point counts three times, so the 3rd neighbour is the nearest distinct one
    assert radii[:10] == pytest.approx(d.min(axis=1), rel=1e-5)
