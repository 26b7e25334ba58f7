"""Fréchet distance: pinned against an independent scipy.linalg.sqrtm computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg

from medgen.metrics import feature_stats, fid_from_features, frechet_distance


def reference_fid(mu1, s1, mu2, s2):
    """Textbook formula, written independently of medgen: ||dmu||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def well_conditioned(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.5 * np.eye(d)


@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 24), seed=st.integers(0, 2**31 - 1))
def test_matches_scipy_sqrtm_on_well_conditioned_covariances(d, seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = well_conditioned(rng, d), well_conditioned(rng, d)
    expected = reference_fid(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_hand_checked_values():
    # 1-D: (0-3)^2 + 1 + 4 - 2*sqrt(1*4) = 9 + 5 - 4 = 10
    assert frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0, rel=1e-12)
    # diagonal covariances: sum (sqrt(a) - sqrt(b))^2 + ||dmu||^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 3.0])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + 4.0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(1)
    mu, sigma = feature_stats(rng.standard_normal((300, 20)))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n, d", [(5, 40), (20, 64), (64, 64)])
def test_singular_covariances_stay_finite_and_real(n, d):
    # fewer samples than features: both covariances have rank n - 1 < d
    rng = np.random.default_rng(n)
    f1, f2 = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.3
    mu1, s1 = feature_stats(f1)
    mu2, s2 = feature_stats(f2)
    assert np.linalg.matrix_rank(s1) < d
    value = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(value, float) and np.isfinite(value) and value > 0
    # identical singular statistics: ~0, not NaN
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8 * np.trace(s1))
    # the singular value is the limit of the regularised one (continuity in eps)
    eps = 1e-12
    regular = reference_fid(mu1, s1 + eps * np.eye(d), mu2, s2 + eps * np.eye(d))
    assert value == pytest.approx(regular, rel=1e-4)


def test_rank_deficient_projectors_and_zero_covariance():
    d = 6
    p = np.diag([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    q = np.diag([0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    # PQ = 0: Tr sqrtm = 0, so the distance is Tr P + Tr Q = 4
    assert frechet_distance(np.zeros(d), p, np.zeros(d), q) == pytest.approx(4.0, abs=1e-12)
    z = np.zeros((d, d))
    assert frechet_distance(np.ones(d), z, np.zeros(d), z) == pytest.approx(6.0, abs=1e-12)


def test_fid_from_features_equals_formula_on_numpy_stats_and_accepts_tensors():
    rng = np.random.default_rng(3)
    f1 = rng.standard_normal((200, 8))
    f2 = rng.standard_normal((150, 8)) * 1.5 + 0.2
    expected = reference_fid(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=1e-6)
    assert fid_from_features(torch.from_numpy(f1).float(), torch.from_numpy(f2).float()) == pytest.approx(
        expected, rel=1e-4
    )


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        feature_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="nope")
