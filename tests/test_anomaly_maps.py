"""Anomaly maps: zero for a perfect reconstruction, and they localise a planted defect."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.anomaly.scoring import anomaly_map, error_map, foreground_mask, image_scores, smooth_map, ssim_map


def _brain(n=2, size=32, seed=0):
    """Smooth blob images with a black background, like skull-stripped slices."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.05)
        tex = 0.2 * np.sin(12 * xx + rng.random() * 6) * np.cos(9 * yy)
        img = np.where(blob > 0.2, 0.5 + 0.3 * blob + tex, 0.0)
        out.append(img[None])
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("kind", ["abs", "ssim", "combined"])
def test_perfect_reconstruction_gives_zero_map(kind):
    x = _brain()
    m, fg = anomaly_map(x, x.copy(), kind, smooth=1.0, foreground=0.05)
    assert m.shape == (2, 1, 32, 32) and fg.shape == (2, 1, 32, 32)
    assert np.abs(m).max() < 1e-5
    assert image_scores(m, "top-percentile", 1.0, fg).max() < 1e-5


@pytest.mark.parametrize("kind", ["abs", "ssim", "combined"])
def test_planted_square_is_localised(kind):
    x = _brain(1)
    recon = x.copy()
    x[0, 0, 12:18, 14:20] = 1.0  # a bright "lesion" the reconstruction does not have
    m, fg = anomaly_map(x, recon, kind, smooth=1.0, foreground=0.05)
    peak = np.unravel_index(np.argmax(m[0, 0]), m.shape[2:])
    assert 10 <= peak[0] <= 19 and 12 <= peak[1] <= 21, peak
    inside = m[0, 0, 12:18, 14:20].mean()
    outside = np.delete(m[0, 0].ravel(), np.ravel_multi_index(np.mgrid[10:20, 12:22].reshape(2, -1), (32, 32))).mean()
    assert inside > 10 * outside


def test_ssim_map_matches_monai_in_the_interior():
    from monai.metrics.regression import compute_ssim_and_cs

    rng = np.random.default_rng(0)
    a = rng.random((2, 1, 24, 24)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    ours = ssim_map(a, b, window=7)
    ref, _ = compute_ssim_and_cs(torch.from_numpy(a), torch.from_numpy(b), 2, [7, 7], [1.5 * 7 / 11] * 2)
    assert np.allclose(ours[:, :, 3:-3, 3:-3], ref.numpy(), atol=1e-4)


def test_maps_work_in_3d_and_identical_volumes_score_zero():
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 6, 16, 16)).astype(np.float32)
    for kind in ("abs", "ssim"):
        assert np.abs(error_map(x, x, kind)).max() < 1e-5
    y = x.copy()
    y[1, 0, 2:4, 4:8, 4:8] = 0
    m, _ = anomaly_map(x, y, "abs", smooth=0.5)
    s = image_scores(m, "mean")
    assert m.shape == (2, 1, 6, 16, 16) and s[1] > s[0] == 0  # one score per volume


def test_foreground_fills_holes_and_smoothing_keeps_mass():
    x = np.zeros((1, 1, 9, 9), np.float32)
    x[0, 0, 2:7, 2:7] = 1
    x[0, 0, 4, 4] = 0  # a dark hole inside (e.g. a necrotic core) still counts as foreground
    fg = foreground_mask(x, 0.05)
    assert fg[0, 0, 4, 4] and fg.sum() == 25 and foreground_mask(x, None) is None
    m = np.zeros((1, 1, 21, 21), np.float32)
    m[0, 0, 10, 10] = 1
    s = smooth_map(m, 2.0)
    assert s.sum() == pytest.approx(1.0, rel=1e-3) and s.max() < 0.1 and smooth_map(m, 0) is m
