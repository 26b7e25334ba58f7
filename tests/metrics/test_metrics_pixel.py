"""Paired pixel metrics: hand-checked values, identity, noise monotonicity, adapted MS-SSIM."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medgen.metrics import MS_SSIM_WEIGHTS, mae, ms_ssim, ms_ssim_settings, mse, paired_metrics, psnr, ssim, ssim_settings


def smooth_images(shape, seed=0):
    """Random images with structure at several scales (so SSIM is not dominated by noise)."""
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    spatial = tuple(range(2, len(shape)))
    for _ in range(3):  # a few box blurs
        for ax in spatial:
            x = (x + np.roll(x, 1, axis=ax) + np.roll(x, -1, axis=ax)) / 3
    x = (x - x.min()) / (x.max() - x.min())
    return x.astype(np.float32)


def test_hand_checked_mae_mse_psnr():
    x = np.zeros((3, 1, 8, 8))
    y = np.full((3, 1, 8, 8), 0.1)
    assert mae(x, y).mean == pytest.approx(0.1)
    assert mse(x, y).mean == pytest.approx(0.01)
    p = psnr(x, y)
    assert p.per_image.shape == (3,)
    np.testing.assert_allclose(p.per_image, 20.0)  # 10 log10(1 / 0.01)
    assert psnr(x, y, data_range=2.0).mean == pytest.approx(20.0 + 20.0 * np.log10(2.0))
    # per-image values: second image differs by 0.5 everywhere -> MSE 0.25, PSNR 6.0206 dB
    y2 = y.copy()
    y2[1] = 0.5
    np.testing.assert_allclose(mse(x, y2).per_image, [0.01, 0.25, 0.01])
    np.testing.assert_allclose(psnr(x, y2).per_image, [20.0, 10 * np.log10(4.0), 20.0])


@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (3, 1, 32, 32), (2, 2, 64, 64), (2, 1, 8, 64, 64)])
def test_identical_inputs(shape):
    x = smooth_images(shape)
    out = paired_metrics(x, x.copy())
    assert out["mae"].mean == 0.0 and out["mse"].mean == 0.0
    assert np.isinf(out["psnr"].per_image).all() and out["psnr"].mean == np.inf
    assert psnr(x, x, cap=100.0).mean == 100.0
    np.testing.assert_allclose(out["ssim"].per_image, 1.0, atol=1e-5)
    np.testing.assert_allclose(out["ms_ssim"].per_image, 1.0, atol=1e-5)
    assert out["ms_ssim"].per_image.shape == (shape[0],)


@pytest.mark.parametrize("shape", [(4, 1, 16, 16), (4, 1, 32, 32), (4, 1, 64, 64), (2, 1, 8, 64, 64)])
def test_ms_ssim_and_ssim_decrease_with_noise(shape):
    x = smooth_images(shape, seed=1)
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(shape)
    ms, ss = [], []
    for level in (0.02, 0.08, 0.2):
        y = np.clip(x + level * noise, 0, 1)
        ms.append(ms_ssim(x, y).mean)
        ss.append(ssim(x, y).mean)
    assert 1.0 > ms[0] > ms[1] > ms[2] > 0
    assert 1.0 > ss[0] > ss[1] > ss[2]


def test_constant_images_hand_checked_ssim_and_ms_ssim():
    # constant images: sigma = 0 so the contrast/structure term is c2/c2 = 1 at every scale, and
    # SSIM is the luminance term (2 mx my + c1) / (mx^2 + my^2 + c1), c1 = (0.01 * 1)^2.
    # MS-SSIM = product of cs^w (= 1) times ssim^w_last at the coarsest scale.
    x = np.full((1, 1, 32, 32), 0.5)
    y = np.full((1, 1, 32, 32), 0.25)
    c1 = 1e-4
    lum = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert ssim(x, y).mean == pytest.approx(lum, rel=1e-5)
    res = ms_ssim(x, y)
    assert res.settings["scales"] == 2
    assert res.mean == pytest.approx(lum ** res.settings["weights"][-1], rel=1e-5)


def test_ms_ssim_settings_examples():
    s = ms_ssim_settings((256, 256))
    assert s["scales"] == 5 and s["kernel_size"] == (11, 11)
    np.testing.assert_allclose(s["weights"], np.array(MS_SSIM_WEIGHTS) / sum(MS_SSIM_WEIGHTS))
    assert ms_ssim_settings((128, 128))["scales"] == 4
    assert ms_ssim_settings((64, 64))["scales"] == 3
    assert ms_ssim_settings((32, 32))["scales"] == 2
    s16 = ms_ssim_settings((16, 16))
    assert s16["kernel_size"] == (7, 7) and s16["scales"] == 2
    s3d = ms_ssim_settings((8, 64, 64))
    assert s3d["kernel_size"] == (3, 11, 11) and s3d["scales"] == 2
    np.testing.assert_allclose(s3d["weights"], [0.0448 / 0.3304, 0.2856 / 0.3304])
    assert s3d["kernel_sigma"] == (pytest.approx(1.5 * 3 / 11), 1.5, 1.5)
    # too small for two scales even with a 3-window: one scale (= SSIM) with the largest window
    s5 = ms_ssim_settings((5, 5))
    assert s5["scales"] == 1 and s5["kernel_size"] == (5, 5) and s5["weights"] == (1.0,)
    with pytest.raises(ValueError):
        ms_ssim_settings((2, 64))
    assert ssim_settings((8, 64, 64))["kernel_size"] == (7, 11, 11)


@settings(max_examples=60, deadline=None)
@given(shape=st.one_of(st.lists(st.integers(3, 400), min_size=2, max_size=2), st.lists(st.integers(3, 96), min_size=3, max_size=3)))
def test_ms_ssim_settings_always_fit(shape):
    s = ms_ssim_settings(shape)
    n = s["scales"]
    assert 1 <= n <= 5 and len(s["weights"]) == n
    assert sum(s["weights"]) == pytest.approx(1.0)
    for size, win in zip(shape, s["kernel_size"]):
        assert win % 2 == 1 and 3 <= win <= 11
        assert size // 2 ** (n - 1) >= win  # the window fits at the coarsest scale
        assert size // max(1, n - 1) ** 2 > win - 1  # MONAI's own guard
    if min(shape) >= 176:
        assert n == 5 and s["kernel_size"] == (11,) * len(shape)  # MONAI defaults where they apply


def test_torch_inputs_and_shape_checks():
    x = torch.from_numpy(smooth_images((2, 1, 32, 32)))
    assert ms_ssim(x, x).mean == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError):
        mse(np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 9)))
    with pytest.raises(ValueError):
        mse(np.zeros((8, 8)), np.zeros((8, 8)))


def test_mse_all_pairs_matches_the_double_loop_and_its_real_baseline():
    from medgen.metrics import mse_all_pairs

    rng = np.random.default_rng(3)
    real, fake = rng.random((5, 1, 6, 7)), rng.random((4, 1, 6, 7)) * 0.5
    brute = np.mean([np.mean((r - f) ** 2) for r in real for f in fake])
    distinct = np.mean([np.mean((real[i] - real[j]) ** 2) for i in range(5) for j in range(5) if i != j])
    out = mse_all_pairs(real, fake)
    assert out["mse"] == pytest.approx(brute, rel=1e-12) and out["real_baseline"] == pytest.approx(distinct, rel=1e-12)
    assert (out["n_real"], out["n_fake"]) == (5, 4)
    assert mse_all_pairs(real[:1], real[:1]) == {"mse": 0.0, "real_baseline": None, "n_real": 1, "n_fake": 1}
    with pytest.raises(ValueError, match="differ in shape"):
        mse_all_pairs(real, rng.random((2, 1, 6, 6)))
