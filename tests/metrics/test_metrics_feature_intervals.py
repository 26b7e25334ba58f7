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
    radii = stat.real.radii(np.bincount(ix, minlength=30).astype(float)[None])[0]
    assert (radii[:10] > 0).all()  # not 0, which its own copies would give
    d = np.linalg.norm(x[:10, None] - x[None, :10], axis=2)
    np.fill_diagonal(d, np.inf)
    # each other drawn point counts three times, so the 3rd neighbour is the nearest distinct one
    assert radii[:10] == pytest.approx(d.min(axis=1), rel=1e-5)


def test_all_six_intervals_from_one_bootstrap_agree_with_the_single_ones():
    from medgen.metrics.feature_intervals import feature_metric_intervals

    x, y = _sets(100, seed=6, shift=0.3)
    together = feature_metric_intervals(x, y, n_resamples=60, seed=2)
    assert list(together) == ["fid", "kid", "precision", "recall", "density", "coverage"]
    # the real and generated rows of resample r are drawn as the single functions draw them
    assert together["fid"] == fid_ci(x, y, n_resamples=60, seed=2)
    assert (together["kid"]["low"], together["kid"]["high"]) == pytest.approx(
        (kid_ci(x, y, n_resamples=60, seed=2)["low"], kid_ci(x, y, n_resamples=60, seed=2)["high"]))
    assert together["coverage"] == prdc_ci(x, y, n_resamples=60, seed=2)["coverage"]


def _dense_prdc(x, y, ix, iy, k):
    """PRDC of one resample from full distance matrices (a point's own copies are not its neighbours)."""
    from sklearn.metrics import pairwise_distances

    def radii(d, c):
        d = d.copy()
        np.fill_diagonal(d, np.inf)
        order = np.argsort(d, axis=1)
        reached = np.cumsum(c[order], axis=1) >= k
        return np.where(reached.any(1), np.take_along_axis(d, order, 1)[np.arange(len(d)), reached.argmax(1)], np.inf)

    cx, cy = np.bincount(ix, minlength=len(x)).astype(float), np.bincount(iy, minlength=len(y)).astype(float)
    dxy = pairwise_distances(x, y).astype(np.float32)
    rx = radii(pairwise_distances(x).astype(np.float32), cx)
    ry = radii(pairwise_distances(y).astype(np.float32), cy)
    real_ball = (dxy < rx[:, None]) & (cx > 0)[:, None]
    fake_ball = (dxy < ry[None, :]) & (cy > 0)[None, :]
    return [cy @ real_ball.any(0) / cy.sum(), cx @ fake_ball.any(1) / cx.sum(),
            (cx @ real_ball) @ cy / (k * cy.sum()), cx @ ((dxy < rx[:, None]) & (cy > 0)[None, :]).any(1) / cx.sum()]


@pytest.mark.parametrize("cap_factor", [1, 3])
def test_batched_prdc_matches_a_dense_recomputation_per_resample(monkeypatch, cap_factor):
    from medgen.metrics import resampled_stats

    # cap_factor 1 lists only the nearest neighbour's pairs: most balls then take the beyond-cap route
    monkeypatch.setattr(resampled_stats._Balls, "CAP_FACTOR", cap_factor)
    x, y = _sets(60, f=6, seed=7, shift=0.4)
    y = y[:45]
    rng = np.random.default_rng(0)
    ix, iy = rng.integers(0, 60, (5, 60)), rng.integers(0, 45, (5, 45))
    got = PRDCBootstrap(x, y, k=3)(ix, iy)
    for b in range(5):
        assert got[b] == pytest.approx(_dense_prdc(x, y, ix[b], iy[b], 3), abs=1e-12)


@pytest.mark.parametrize("n, f, dead", [(200, 16, 0), (150, 40, 10), (30, 48, 0)])
def test_batched_fid_matches_fid_of_the_resampled_matrices(n, f, dead):
    """Including features constant on the real set (a CNN's dead units) and fewer images than features."""
    from medgen.metrics.resampled_stats import FIDBootstrap

    x, y = _sets(n, f=f, seed=8, shift=0.2, scale=0.9)
    x[:, :dead] = 0.0
    rng = np.random.default_rng(1)
    ix, iy = rng.integers(0, n, (6, n)), rng.integers(0, n, (6, n))
    got = FIDBootstrap(x, [y, y[::-1] * 1.1])(ix, iy, iy)
    for b in range(6):
        assert got[b, 0] == pytest.approx(fid_from_features(x[ix[b]], y[iy[b]]), rel=1e-6)
        assert got[b, 1] == pytest.approx(fid_from_features(x[ix[b]], (y[::-1] * 1.1)[iy[b]]), rel=1e-6)


def test_batched_fid_without_stored_outer_products_matches(monkeypatch):
    """Many features (e.g. 2048-d Inception): covariances are one matrix product per resample instead."""
    from medgen.metrics import resampled_stats

    monkeypatch.setattr(resampled_stats, "OUTER_PRODUCTS_BYTES", 0)
    x, y = _sets(100, f=12, seed=9, shift=0.2)
    rng = np.random.default_rng(2)
    ix, iy = rng.integers(0, 100, (3, 100)), rng.integers(0, 100, (3, 100))
    got = resampled_stats.FIDBootstrap(x, [y])(ix, iy)
    assert resampled_stats.FIDBootstrap(x, [y]).real.outer is None
    for b in range(3):
        assert got[b, 0] == pytest.approx(fid_from_features(x[ix[b]], y[iy[b]]), rel=1e-9)
