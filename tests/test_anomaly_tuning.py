"""Scoring chosen on normal validation images only: the rim left out of the image score, the
synthetic lesions, and the choice among the scoring candidates."""
from __future__ import annotations

import numpy as np
import pytest


def _discs(n, seed=0, size=64):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2) * 0.6
    return np.stack([np.clip(base + rng.normal(0, 0.02, (size, size)) * (base > 0), 0, 1)
                     for _ in range(n)])[:, None].astype(np.float32)


def test_scoring_region_leaves_the_rim_out_and_never_empties_an_image():
    from medgen.anomaly.scoring import scoring_region

    fg = np.zeros((2, 1, 20, 20), bool)
    fg[0, 0, 2:18, 2:18] = True    # 16 x 16: a 3-px rim leaves the central 10 x 10
    fg[1, 0, 9:11, 9:11] = True    # 2 x 2: nothing lies 3 px inside, so the whole foreground stays
    r = scoring_region(fg, 3)
    assert r[0, 0].sum() == 10 * 10 and r[0, 0, 5:15, 5:15].all()
    assert np.array_equal(r[1], fg[1])
    assert scoring_region(fg, 0) is fg and scoring_region(None, 3) is None


def test_edge_margin_lets_an_inner_lesion_outrank_a_bright_rim():
    from medgen.anomaly.scoring import foreground_mask, image_scores, scoring_region

    x = _discs(2)
    fg = foreground_mask(x, 0.05)
    inner = scoring_region(fg, 4)
    maps = np.zeros_like(x)
    maps[fg & ~inner] = 1.0                 # both images: the rim lights up (a normal image's peak)
    maps[1, 0, 30:33, 30:33] = 0.8          # image 1: a small lesion inside
    assert image_scores(maps, "max", 1, fg)[1] == image_scores(maps, "max", 1, fg)[0]  # the rim hides it
    s = image_scores(maps, "max", 1, inner)
    assert s[1] > s[0]


def test_synthetic_lesions_one_per_image_in_the_tissue_and_reproducible():
    from medgen.anomaly.synthetic import add_lesions

    x = _discs(12)
    y, m = add_lesions(x, seed=3)
    assert y.shape == x.shape and m.shape == (12, 1, 64, 64) and (0 <= y).all() and (y <= 1).all()
    changed = np.abs(y - x) > 0.05
    for i in range(12):
        assert 2 <= m[i].sum() <= np.pi * (0.14 * 64 / 2) ** 2 + 8   # at most 9 px across at 64 px
        assert changed[i][m[i]].mean() > 0.9 and not changed[i, 0][~_dilate(m[i, 0])].any()  # only there
        assert (x[i, 0][m[i, 0]] > 0.05).all()  # inside the disc, not on the background
    y2, m2 = add_lesions(x, seed=3)
    assert np.array_equal(y, y2) and np.array_equal(m, m2)
    assert not np.array_equal(add_lesions(x, seed=4)[1], m)
    with pytest.raises(ValueError, match="2D images"):
        add_lesions(x[:, :, None])


def _dilate(mask):
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, iterations=2)


def test_choice_prefers_the_scoring_that_separates_synthetic_lesions():
    """Maps where normals peak at the rim and lesions are small interior blobs: the choice must
    leave the rim out; maps that carry no lesion signal get an AUROC near chance."""
    from medgen.anomaly import tuning
    from medgen.anomaly.scoring import foreground_mask, scoring_region
    from medgen.anomaly.synthetic import add_lesions

    rng = np.random.default_rng(0)
    x = _discs(20)
    y, m = add_lesions(x, seed=1)
    fg = foreground_mask(x, 0.05)
    rim = fg & ~scoring_region(fg, 3)

    def raw(masks):
        r = rng.uniform(0, 0.2, x.shape).astype(np.float32)
        r[rim] += rng.uniform(0.5, 1.5, (len(x), 1))[np.nonzero(rim)[0]].ravel()  # normal variation at the rim
        return r + 0.6 * masks

    given = tuning.Scoring(3.0, "top-percentile", 5.0, 0.0)
    best, rec = tuning.choose(raw(np.zeros_like(m)), x, raw(m), y, 0.05, given)
    assert best.edge_margin >= 3 and rec["synthetic_auroc"] > 0.9 > rec["synthetic_auroc_of_given_settings"]
    assert rec["candidates"][0]["edge_margin"] == 0 and len(rec["candidates"]) == len(tuning.grid(64))
    _, blind = tuning.choose(raw(np.zeros_like(m)), x, raw(np.zeros_like(m)), y, 0.05, given)
    assert blind["synthetic_auroc"] < 0.85
