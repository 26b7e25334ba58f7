"""Intensity-distribution comparisons: identity, known shifts, bimodality, masks and classes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.metrics import bimodality, bimodality_coefficient, compare_intensities, compare_intensities_by_class


def test_identical_samples():
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 32, 32))
    out = compare_intensities(x, torch.from_numpy(x.copy()))
    assert out["ks_statistic"] == 0.0 and out["ks_pvalue"] == pytest.approx(1.0)
    assert out["wasserstein"] == 0.0
    h = out["histogram"]
    assert len(h["bin_edges"]) == 65 and len(h["real_density"]) == 64
    np.testing.assert_array_equal(h["real_density"], h["fake_density"])
    # densities integrate to 1 over the bins
    assert np.sum(h["real_density"] * np.diff(h["bin_edges"])) == pytest.approx(1.0)
    assert out["n_real"] == out["n_fake"] == 6 * 32 * 32


def test_shift_gives_known_wasserstein_and_large_ks():
    rng = np.random.default_rng(1)
    x = rng.random((4, 1, 64, 64)) * 0.8
    out = compare_intensities(x, x + 0.1, bins=32)
    assert out["wasserstein"] == pytest.approx(0.1, abs=1e-9)  # W1 of a pure translation is the shift
    assert out["ks_statistic"] == pytest.approx(0.125, abs=0.01)  # sup |F - F(. - 0.1)| = 0.1/0.8 for U(0, .8)
    assert out["ks_pvalue"] < 1e-6


def test_subsampling_is_bounded_and_deterministic():
    rng = np.random.default_rng(2)
    x, y = rng.random((10, 1, 100, 100)), rng.random((10, 1, 100, 100)) ** 1.1
    a = compare_intensities(x, y, max_samples=5000, seed=3)
    b = compare_intensities(x, y, max_samples=5000, seed=3)
    assert a["n_subsample_real"] == a["n_subsample_fake"] == 5000
    assert a["n_real"] == 100_000
    assert a["ks_statistic"] == b["ks_statistic"] and a["wasserstein"] == b["wasserstein"]


def test_sarle_coefficient_matches_hand_formula_and_thresholds():
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, size=50)
    # independent computation of bias-corrected skewness G1 and excess kurtosis G2
    n = x.size
    d = x - x.mean()
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    g1, g2 = m3 / m2**1.5, m4 / m2**2 - 3
    big_g1 = np.sqrt(n * (n - 1)) / (n - 2) * g1
    big_g2 = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * g2 + 6)
    expected = (big_g1**2 + 1) / (big_g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    assert bimodality_coefficient(x) == pytest.approx(expected, rel=1e-10)
    assert np.isnan(bimodality_coefficient(np.ones(10)))


def test_bimodal_mixture_versus_gaussian():
    rng = np.random.default_rng(4)
    mixture = np.concatenate([rng.normal(0.25, 0.05, 20000), rng.normal(0.75, 0.05, 20000)])
    gaussian = rng.normal(0.5, 0.1, 40000)
    bm, gs = bimodality(mixture), bimodality(gaussian)
    assert bm["bimodality_coefficient"] > 5 / 9 and bm["bc_bimodal"]
    assert gs["bimodality_coefficient"] < 5 / 9 and not gs["bc_bimodal"]
    assert gs["bimodality_coefficient"] == pytest.approx(1 / 3, abs=0.02)  # Gaussian value
    assert bm["gmm_bimodal"] and bm["gmm_delta_bic"] > 10 and bm["ashman_d"] > 2
    np.testing.assert_allclose(bm["gmm_means"], [0.25, 0.75], atol=0.01)
    assert not gs["gmm_bimodal"]
    # a skewed unimodal sample: BIC prefers 2 components, but the modes are not separated
    skewed = bimodality(rng.exponential(0.1, 40000))
    assert skewed["gmm_delta_bic"] > 10 and not skewed["gmm_bimodal"]


def test_compare_reports_bimodality_for_both_sides():
    rng = np.random.default_rng(5)
    real = np.where(rng.random((8, 1, 32, 32)) < 0.5, rng.normal(0.2, 0.04, (8, 1, 32, 32)), rng.normal(0.8, 0.04, (8, 1, 32, 32)))
    fake = rng.normal(0.5, 0.1, (8, 1, 32, 32))  # mode collapse to the middle
    out = compare_intensities(real, fake)
    assert out["bimodality"]["real"]["bc_bimodal"] and out["bimodality"]["real"]["gmm_bimodal"]
    assert not out["bimodality"]["fake"]["bc_bimodal"] and not out["bimodality"]["fake"]["gmm_bimodal"]


def test_mask_restricts_pixels():
    rng = np.random.default_rng(6)
    real, fake = rng.random((3, 1, 16, 16)), rng.random((5, 1, 16, 16))
    mask = np.zeros((1, 16, 16), dtype=bool)
    mask[:, 4:12, 4:12] = True  # one shared mask, broadcast over both batches
    out = compare_intensities(real, fake, mask=mask)
    assert out["n_real"] == 3 * 64 and out["n_fake"] == 5 * 64
    # only masked pixels count: making the outside of fake wildly different changes nothing
    fake2 = fake.copy()
    fake2[:, :, :4] = 10.0
    assert compare_intensities(real, fake2, mask=mask)["ks_statistic"] == out["ks_statistic"]
    pair = compare_intensities(real, fake, mask=(real > 0.5, fake > 0.5))
    assert pair["n_real"] == int((real > 0.5).sum())


def test_by_class():
    rng = np.random.default_rng(7)
    a = rng.random((4, 1, 16, 16)) * 0.5
    b = rng.random((4, 1, 16, 16)) * 0.5 + 0.5
    real = np.concatenate([a, b])
    real_labels = np.array([0] * 4 + [1] * 4)
    fake = np.concatenate([a, a, rng.random((2, 1, 16, 16))])  # class 1 rendered like class 0; class 2 only fake
    fake_labels = np.array([0] * 4 + [1] * 4 + [2] * 2)
    out = compare_intensities_by_class(real, real_labels, fake, fake_labels, bins=16)
    assert set(out) == {0, 1, 2}
    assert out[0]["ks_statistic"] == 0.0 and out[0]["n_real_images"] == 4
    assert out[1]["ks_statistic"] == 1.0 and out[1]["wasserstein"] == pytest.approx(0.5, abs=0.01)
    assert "skipped" in out[2] and out[2]["n_real_images"] == 0 and out[2]["n_fake_images"] == 2
    # per-sample masks are split with the images
    masks = (np.ones_like(real, dtype=bool), np.ones_like(fake, dtype=bool))
    masked = compare_intensities_by_class(real, real_labels, fake, fake_labels, mask=masks, bins=16)
    assert masked[1]["n_real"] == 4 * 256
