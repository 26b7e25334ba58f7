"""Memorisation audit: exact nearest neighbours, copies flagged, independent samples not."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from medgen.metrics import closest_pairs_figure, memorisation_audit, nearest_neighbours


def structured_images(n, seed):
    """Images from a low-dimensional model (like real data: correlated pixels), (n, 1, 16, 16)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).standard_normal((12, 256))  # same basis for every set
    return (rng.standard_normal((n, 12)) @ basis / 12 + 0.5).reshape(n, 1, 16, 16)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nearest_neighbours_match_bruteforce(metric):
    rng = np.random.default_rng(0)
    q, ref = rng.standard_normal((70, 9)), rng.standard_normal((120, 9))
    dist, idx = nearest_neighbours(q, ref, metric=metric, k=3, batch=16)
    full = cdist(q, ref, metric=metric)
    want_idx = np.argsort(full, axis=1)[:, :3]
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, np.take_along_axis(full, want_idx, axis=1), rtol=1e-9, atol=1e-12)


def test_exact_copies_have_zero_distance_in_pixel_space():
    x = structured_images(50, 1)
    dist, idx = nearest_neighbours(torch.from_numpy(x[10:20]), x)
    assert dist.shape == (10, 1)
    np.testing.assert_array_equal(idx[:, 0], np.arange(10, 20))
    assert np.all(dist == 0.0)


def test_training_images_as_synthetic_are_flagged():
    train, test = structured_images(300, 1), structured_images(200, 2)
    for rule in ("distance", "ratio", "either", "both"):
        out = memorisation_audit(train, train, test, space_name="pixels", quantile=0.05, rule=rule)
        assert out["fraction_flagged"] >= 0.95, rule
    assert out["synthetic_to_train"]["median"] == 0.0
    assert out["binomial_pvalue"] < 1e-10
    assert out["baseline_test"]["p_value"] < 1e-10
    ci = out["fraction_flagged_ci"]
    assert ci["low"] > 0.9 and ci["high"] == 1.0 and ci["n"] == 300 and "Clopper-Pearson" in ci["method"]


def test_noisy_copies_are_flagged():
    train, test = structured_images(300, 1), structured_images(200, 2)
    rng = np.random.default_rng(3)
    copies = train[:100] + 0.005 * rng.standard_normal(train[:100].shape)
    out = memorisation_audit(copies, train, test, quantile=0.01)
    assert out["fraction_flagged"] >= 0.95
    assert all(p["train"] == p["synthetic"] for p in out["closest_pairs"])  # each copy finds its source


def test_independent_samples_flag_about_the_baseline_quantile():
    train, test, fresh = structured_images(400, 1), structured_images(400, 2), structured_images(400, 3)
    out = memorisation_audit(fresh, train, test, space_name="pixels", quantile=0.05)
    assert out["fraction_flagged"] <= 0.12
    assert out["fraction_flagged_ratio"] <= 0.12
    assert out["expected_fraction"] == pytest.approx(0.05, abs=0.01)
    assert out["binomial_pvalue"] > 0.001
    base = out["baseline_test"]
    assert base["p_value"] > 0.01 and base["real_baseline"]["value"] == pytest.approx(out["expected_fraction"])
    assert out["fraction_flagged_ci"]["low"] <= out["fraction_flagged"] <= out["fraction_flagged_ci"]["high"]
    assert out["threshold"] == pytest.approx(np.quantile(out["test_nn_distance"], 0.05))
    assert out["rule"] == "distance" and "0.05-quantile" in out["rule_description"]


def test_mixture_of_copies_and_fresh_samples_and_result_fields():
    train, test, fresh = structured_images(300, 1), structured_images(200, 2), structured_images(100, 3)
    synthetic = np.concatenate([fresh, train[:100]])
    out = memorisation_audit(synthetic, train, test, quantile=0.02, top_k=8, metric="cosine")
    assert 0.48 <= out["fraction_flagged"] <= 0.6
    assert out["flagged"][100:].all()
    pairs = out["closest_pairs"]
    assert len(pairs) == 8 and all(p["synthetic"] >= 100 for p in pairs)
    d = [p["distance"] for p in pairs]
    assert d == sorted(d)
    for key in ("median", "q01", "q05", "q25", "q75", "q95"):
        assert key in out["synthetic_to_train"] and key in out["test_to_train"]
    assert out["space"] == "pixels" and out["n_train"] == 300 and out["nn_index"].shape == (200,)
    with pytest.raises(ValueError):
        memorisation_audit(synthetic, train, test, quantile=0.0)
    with pytest.raises(ValueError):
        memorisation_audit(synthetic, train, test, rule="nope")


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 16, 16), (1, 8, 16, 16)])
def test_closest_pairs_figure_writes_png(tmp_path, shape):
    rng = np.random.default_rng(4)
    syn, train = rng.random((6, *shape)), rng.random((9, *shape))
    pairs = [{"synthetic": 0, "train": 3, "distance": 1.5}, (2, 4, 0.7), (5, 8)]
    path = closest_pairs_figure(syn, train, pairs, tmp_path / "sub" / "pairs.png", title="closest pairs")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
