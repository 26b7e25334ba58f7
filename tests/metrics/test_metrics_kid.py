"""KID: unbiased polynomial-kernel MMD^2 pinned on hand-computed cases and a loop reference."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from medgen.metrics import kid, mmd2_unbiased, polynomial_kernel


def loop_mmd2(x, y, degree=3, gamma=None, coef0=1.0):
    """Unbiased MMD^2 by explicit double loops (Gretton et al. 2012, eq. 3)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k = lambda a, b: (gamma * float(np.dot(a, b)) + coef0) ** degree  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2.0 * xy


def test_tiny_hand_computed_case():
    # k(x, y) = x*y + 1 (degree 1, gamma 1, coef0 1); X = {0, 1}, Y = {2, 3}
    # XX off-diagonal: k(0,1)=1 twice -> 2/2 = 1;  YY: k(2,3)=7 twice -> 14/2 = 7
    # XY: k(0,2)+k(0,3)+k(1,2)+k(1,3) = 1+1+3+4 = 9 -> 2*9/4 = 4.5;  MMD^2 = 1 + 7 - 4.5 = 3.5
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    mean, std = kid(x, y, subsets=5, subset_size=2, degree=1, gamma=1.0, coef0=1.0)
    assert mean == pytest.approx(3.5, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_matches_loop_reference_with_default_kernel():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 0.4
    # subset_size = set size: every subset is the whole set, and MMD^2 ignores the order
    mean, std = kid(x, y, subsets=3, subset_size=6)
    assert mean == pytest.approx(loop_mmd2(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10)
    kxx, kxy, kyy = (polynomial_kernel(a, b) for a, b in ((x, x), (x, y), (y, y)))
    assert mmd2_unbiased(kxx, kxy, kyy) == pytest.approx(loop_mmd2(x, y), rel=1e-10)


def test_identical_sets_near_zero_and_shift_increases_kid():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16))
    y = rng.standard_normal((300, 16))
    same, _ = kid(x, x, subsets=30, subset_size=100)
    fresh, _ = kid(x, y, subsets=30, subset_size=100)
    small, _ = kid(x, y + 0.5, subsets=30, subset_size=100)
    large, _ = kid(x, y + 1.0, subsets=30, subset_size=100)
    assert abs(same) < 0.1 and abs(fresh) < 0.1
    assert small > 10 * max(abs(same), abs(fresh))
    assert large > small > 0


def test_identical_full_sets_have_the_closed_form_value():
    # X = Y, full subsets: (2 (S - T)) / (m(m-1)) - 2 S / m^2 = -2 (T - S/m) / (m(m-1)),
    # S the sum and T the trace of K_XX: slightly negative, O(1/m).
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 5))
    kxx = polynomial_kernel(x, x)
    m = len(x)
    expected = -2.0 * (np.trace(kxx) - kxx.sum() / m) / (m * (m - 1))
    assert kid(x, x, subsets=2, subset_size=1000)[0] == pytest.approx(expected, rel=1e-10)


def test_subset_size_clipped_and_seed_deterministic():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((30, 4))
    a = kid(x, y, subsets=10, subset_size=1000, seed=7)
    b = kid(x, y, subsets=10, subset_size=1000, seed=7)
    c = kid(x, y, subsets=10, subset_size=20, seed=8)
    assert a == b
    assert np.isfinite(a).all() and a[1] > 0  # subsets of 30 drawn from 50 differ
    assert c != a
    with pytest.raises(ValueError):
        kid(x[:1], y)
    with pytest.raises(ValueError):
        kid(x, rng.standard_normal((30, 5)))


def test_subsets_read_from_whole_set_kernels_equal_subset_kernels(monkeypatch):
    """The kernel-reuse route (whole-set kernels computed once) gives the per-subset route's numbers."""
    import importlib

    kid_module = importlib.import_module("medgen.metrics.kid")  # the package's `kid` attribute is the function
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((120, 7)), rng.standard_normal((90, 7)) + 0.2
    reused = kid(x, y, subsets=25, subset_size=60, seed=3)
    kernels = kid_module.kid_kernels(x, y)
    assert kid(x, y, subsets=25, subset_size=60, seed=3, kernels=kernels) == reused
    monkeypatch.setattr(kid_module, "FULL_KERNEL_ELEMENTS", 0)  # too big: one kernel product per subset
    assert kid_module.kid_kernels(x, y) is None
    per_subset = kid(x, y, subsets=25, subset_size=60, seed=3)
    assert reused == pytest.approx(per_subset, rel=1e-10)
