"""PRDC pinned against a brute-force transcription of the reference ``prdc`` package formulas."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from medgen.metrics import knn_radii, prdc


def reference_prdc(real, fake, k):
    """Naeem et al. 2020 with full distance matrices (as in the prdc package, scipy distances)."""
    r_real = np.sort(cdist(real, real), axis=1)[:, k]  # k-th neighbour, index 0 is the point itself
    r_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
    d = cdist(real, fake)
    return {
        "precision": (d < r_real[:, None]).any(axis=0).mean(),
        "recall": (d < r_fake[None, :]).any(axis=1).mean(),
        "density": (d < r_real[:, None]).sum(axis=0).mean() / k,
        "coverage": (d.min(axis=1) < r_real).mean(),
    }


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), shift=st.floats(0.0, 2.0))
def test_matches_bruteforce_reference(seed, k, shift):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((60, 5))
    fake = rng.standard_normal((45, 5)) * 1.2 + shift
    got = prdc(real, fake, k=k, chunk_size=7)  # small chunks exercise the accumulation
    want = reference_prdc(real, fake, k)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_identical_sets_score_one():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8))
    out = prdc(x, x.copy(), k=5)
    assert out["precision"] == pytest.approx(1.0)
    assert out["recall"] == pytest.approx(1.0)
    assert out["coverage"] == pytest.approx(1.0)
    # each real ball holds itself and k-1 neighbours (open ball): total count N*k -> density 1
    assert out["density"] == pytest.approx(1.0, abs=0.02)


def test_disjoint_far_sets_score_zero():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((100, 4))
    fake = rng.standard_normal((80, 4)) + 100.0
    assert prdc(real, fake, k=3) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_knn_radii_hand_checked_and_k_validated():
    pts = np.array([[0.0], [1.0], [3.0], [7.0]])
    # neighbour distances: 0 -> (1, 3, 7), 1 -> (1, 2, 6), 3 -> (2, 3, 4), 7 -> (4, 6, 7)
    np.testing.assert_allclose(knn_radii(pts, 1), [1.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(knn_radii(pts, 2), [3.0, 2.0, 3.0, 6.0])
    with pytest.raises(ValueError):
        knn_radii(pts, 4)
