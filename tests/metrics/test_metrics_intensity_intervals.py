"""Image-bootstrap intervals of the pooled-intensity numbers (medgen.metrics.intensity_intervals)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medgen.metrics import compare_intensities, mse_all_pairs
from medgen.metrics.intensity_intervals import BINS, _PooledIntensities, intensity_intervals


def _images(n, seed=0, contrast=1.0, size=16):
    """Discs of random brightness on a dark background; ``contrast`` < 1 pulls them towards grey."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, 1, size, size))
    for i in range(n):
        cy, cx, r = rng.uniform(5, size - 5), rng.uniform(5, size - 5), rng.uniform(3, 5)
        img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, rng.uniform(0.6, 0.9), 0.1) + rng.normal(0, 0.03, (size, size))
        out[i, 0] = 0.5 + (img - 0.5) * contrast
    return np.clip(out, 0, 1)


def _values(real, fake):
    c = compare_intensities(real, fake, value_range=(0.0, 1.0), max_samples=None)
    return {"ks": c["ks_statistic"], "wasserstein": c["wasserstein"], "mse": mse_all_pairs(real, fake)["mse"]}


def test_resampled_statistics_equal_the_recomputation_on_the_drawn_images():
    real, fake = _images(30, 0), _images(25, 1, contrast=0.7)
    stat = _PooledIntensities(real.astype(np.float32), fake.astype(np.float32), (0.0, 1.0), BINS)
    rng = np.random.default_rng(3)
    ir, ifk = rng.integers(0, 30, (4, 30)), rng.integers(0, 25, (4, 25))
    got = stat(ir, ifk)
    for b in range(4):
        r, f = real[ir[b]], fake[ifk[b]]
        # the MSE is exact (float32 mean images: to ~1e-6); KS and W1 binned at 1/1024
        assert got[b, 2] == pytest.approx(mse_all_pairs(r, f)["mse"], rel=1e-5)
        assert got[b, 0] == pytest.approx(stats.ks_2samp(r.ravel(), f.ravel()).statistic, abs=0.01)
        assert got[b, 1] == pytest.approx(stats.wasserstein_distance(r.ravel(), f.ravel()), abs=1.0 / BINS)


def test_same_distribution_reaches_zero_and_a_contrast_loss_excludes_it():
    real, other = _images(80, 0), _images(80, 1)
    flat = _images(80, 2, contrast=0.6)
    same = intensity_intervals(real, other, _values(real, other), n_resamples=300)
    bad = intensity_intervals(real, flat, _values(real, flat), n_resamples=300)
    for name in ("ks", "wasserstein"):
        assert same[name]["low"] < 0.5 * same[name]["value"] + 1e-3  # reaches down to about 0
        assert bad[name]["low"] > same[name]["high"]  # the contrast loss is clearly worse
        assert bad[name]["low"] <= bad[name]["value"] <= bad[name]["high"]
        assert bad[name]["method"].startswith("shifted") and bad[name]["n"] == [80, 80]
    assert bad["mse"]["low"] <= bad["mse"]["value"] <= bad["mse"]["high"]
    assert bad["mse"]["method"].startswith("percentile")
    again = intensity_intervals(real, flat, _values(real, flat), n_resamples=300)
    assert again == bad  # seeded


def test_quadrupling_n_roughly_halves_the_width():
    widths = []
    for n in (40, 160):
        real, fake = _images(n, 0), _images(n, 1, contrast=0.8)
        ci = intensity_intervals(real, fake, _values(real, fake), n_resamples=300)["wasserstein"]
        widths.append(ci["high"] - ci["low"])
    assert 1.4 < widths[0] / widths[1] < 3.0


def test_bad_inputs_are_refused():
    real = _images(5)
    with pytest.raises(ValueError, match="at least 2"):
        intensity_intervals(real[:1], real, {"ks": 0.0})
    with pytest.raises(ValueError, match="differ in shape"):
        intensity_intervals(real, real[:, :, :8], {"ks": 0.0})
