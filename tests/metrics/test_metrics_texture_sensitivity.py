"""Texture/contrast features see blur and lost contrast; the sensitivity check says whether an extractor can."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from medgen.metrics.sensitivity import degrade, sensitivity_check
from medgen.metrics.texture import FEATURE_NAMES, texture_features


def textured(n, seed, size=24):
    """Images of smoothed noise with a random brightness: texture at several scales."""
    rng = np.random.default_rng(seed)
    x = np.stack([ndi.gaussian_filter(rng.normal(size=(size, size)), rng.uniform(0.5, 1.5)) for _ in range(n)])
    x = 0.5 + 0.15 * x / x.std(axis=(1, 2), keepdims=True) + rng.uniform(-0.1, 0.1, size=(n, 1, 1))
    return x[:, None].astype(np.float32)


def _standardise(real, *others):
    mu, sd = real.mean(0), real.std(0) + 1e-12
    return [(f - mu) / sd for f in (real, *others)], {}


def test_features_shape_and_what_they_respond_to():
    x = textured(6, 0)
    f = texture_features(x)
    assert f.shape == (6, len(FEATURE_NAMES)) == (6, 26) and np.isfinite(f).all()
    g = texture_features(degrade(x, blur_sigma=1.0, contrast=0.7))
    fine = FEATURE_NAMES.index("dog0.5-1_absmean")
    assert (g[:, fine] < 0.8 * f[:, fine]).all()  # blur removes the finest band
    assert (g[:, FEATURE_NAMES.index("std")] < f[:, FEATURE_NAMES.index("std")]).all()  # contrast falls
    assert np.allclose(g[:, 0], f[:, 0], atol=1e-4)  # the mean brightness is kept
    assert texture_features(np.zeros((2, 2, 4, 8, 8))).shape == (2, 52)


def test_sensitivity_check_tells_a_seeing_extractor_from_a_blind_one():
    x = textured(120, 1)
    seeing = sensitivity_check(x, texture_features, n_resamples=100, standardise=_standardise)
    assert seeing["detects_defect"] and seeing["real_vs_degraded"]["low"] > seeing["real_vs_real"]["high"]
    assert seeing["n_per_half"] == 60 and seeing["degradation"] == {"blur_sigma_px": 1.0, "contrast": 0.7}

    def brightness_only(images):  # blind to blur and contrast: degrade keeps each image's mean
        return np.stack([images.mean(axis=(1, 2, 3)), images[:, :, :2].mean(axis=(1, 2, 3))], axis=1)

    blind = sensitivity_check(x, brightness_only, n_resamples=100)
    assert not blind["detects_defect"]
