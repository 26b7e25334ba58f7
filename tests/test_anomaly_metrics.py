"""Anomaly metrics against hand-checked cases: AUROC/AUPRC, Dice and its search, thresholds at a
false-positive rate (and that they hold it on held-out normals), per-image scores."""
from __future__ import annotations

import numpy as np
import pytest

from medgen.anomaly.evaluation import best_dice, dice, image_metrics, pixel_metrics
from medgen.anomaly.scoring import image_scores
from medgen.anomaly.thresholds import choose, false_positive_rate, parse_rule, subsample, threshold_at_fpr
from medgen.errors import UserError


def test_auroc_auprc_known_answer():
    # pairs (anomalous, normal): (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4): 3 of 4 ordered right
    m = image_metrics([0.1, 0.4, 0.35, 0.8], [False, False, True, True], threshold=0.5)
    assert m["auroc"] == pytest.approx(0.75)
    # ranked: 0.8 (pos, precision 1), 0.4 (neg), 0.35 (pos, precision 2/3): AP = 1/2 * 1 + 1/2 * 2/3
    assert m["auprc"] == pytest.approx(0.5 + 1 / 3)
    assert m["fpr_at_threshold"] == 0.0 and m["sensitivity_at_threshold"] == 0.5
    assert m["precision_at_threshold"] == 1.0 and m["n_anomalous"] == 2 and m["n_normal"] == 2


def test_auroc_undefined_with_one_class():
    m = image_metrics([0.1, 0.2], [False, False], threshold=0.15)
    assert m["auroc"] is None and m["auprc"] is None
    assert m["fpr_at_threshold"] == 0.5 and m["sensitivity_at_threshold"] is None


def test_dice_of_known_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :4] = True  # 4 pixels
    b[0, 2:4] = True
    b[1, 0:2] = True  # 4 pixels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 8)
    assert dice(a, a) == 1.0
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def test_best_dice_search_known_cases():
    d, t = best_dice([0.9, 0.8, 0.7, 0.1], [1, 1, 0, 0])
    assert d == pytest.approx(1.0) and 0.7 < t < 0.8
    # a tie can only be taken whole: the top two (0.5, 0.5) give 2*1/(2+1); all three 2/4
    d, t = best_dice([0.5, 0.5, 0.2], [1, 0, 0])
    assert d == pytest.approx(2 / 3) and 0.2 < t < 0.5


def test_best_dice_equals_brute_force():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(300), 2)  # many ties
    g = rng.random(300) < 0.2 + 0.5 * s
    brute = max(dice(s > t, g) for t in np.r_[np.unique(s), -1.0])
    d, t = best_dice(s, g)
    assert d == pytest.approx(brute)
    assert dice(s > t, g) == pytest.approx(d)


def test_threshold_at_fpr_known_list():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    t = threshold_at_fpr(scores, 0.05)
    assert t == pytest.approx(95.05)  # the 95th percentile (linear interpolation)
    assert false_positive_rate(scores, t) == pytest.approx(0.05)
    assert choose("fpr:0.05", scores) == pytest.approx(95.05)
    assert choose("value:3.5") == 3.5


@pytest.mark.parametrize("spec", ["fpr:1.5", "fpr:0", "p95", "value:abc", "fpr:"])
def test_bad_threshold_rules(spec):
    with pytest.raises(UserError, match="--threshold"):
        parse_rule(spec)


def test_fpr_rule_needs_normal_scores():
    with pytest.raises(UserError, match="normal validation"):
        choose("fpr:0.05", None)


@pytest.mark.parametrize("target", [0.05, 0.1])
def test_threshold_holds_target_fpr_on_held_out_normals(target):
    # calibrate on 1000 normal-validation scores, check on 20000 fresh normals of the same distribution;
    # the binomial standard error of the quantile's coverage with n=1000 is sqrt(p(1-p)/n) < 0.01
    rng = np.random.default_rng(1)
    for dist in (lambda n: rng.gamma(2.0, 1.0, n), lambda n: rng.normal(0, 1, n)):
        t = threshold_at_fpr(dist(1000), target)
        held_out = false_positive_rate(dist(20000), t)
        assert abs(held_out - target) < 0.03, (held_out, target)


def test_top_percentile_score():
    maps = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)
    assert image_scores(maps, "top-percentile", 1.0)[0] == pytest.approx(99)
    assert image_scores(maps, "top-percentile", 10.0)[0] == pytest.approx(np.mean(np.arange(90, 100)))
    assert image_scores(maps, "max")[0] == 99 and image_scores(maps, "mean")[0] == pytest.approx(49.5)
    fg = np.zeros_like(maps, dtype=bool)
    fg[..., :5, :] = True  # pixels 0..49 only
    assert image_scores(maps, "top-percentile", 10.0, fg)[0] == pytest.approx(np.mean(np.arange(45, 50)))
    assert image_scores(maps, "mean", foreground=fg)[0] == pytest.approx(24.5)


def test_pixel_metrics_perfect_and_threshold():
    gt = np.zeros((2, 1, 8, 8), np.uint8)
    gt[0, 0, 2:4, 2:4] = 1
    maps = gt.astype(np.float32) * 0.9 + 0.05
    m = pixel_metrics(maps, gt, threshold=0.5)
    assert m["auroc"] == 1.0 and m["auprc"] == 1.0 and m["dice_best"] == 1.0
    assert m["dice_at_threshold"] == 1.0 and m["fpr_at_threshold"] == 0.0 and m["positive_fraction"] == pytest.approx(4 / 128)
    region = np.zeros_like(gt, bool)
    region[:, :, :4, :] = True  # only the top half counts
    r = pixel_metrics(maps, gt, threshold=0.5, region=region)
    assert r["pixels"] == 64 and r["auroc"] == 1.0


def test_subsample_is_deterministic():
    v = np.arange(1000)
    a, b = subsample(v, 100, seed=3), subsample(v, 100, seed=3)
    assert len(a) == 100 and np.array_equal(a, b) and len(np.unique(a)) == 100
    assert np.array_equal(subsample(v, 5000), v)


def test_pixel_auroc_keeps_scores_that_float32_would_tie():
    # maps on a large offset: lesion pixels 1e-4 above the rest, a difference float32 cannot hold at 1e4
    gt = np.zeros((1, 1, 8, 8), bool)
    gt[0, 0, 2:4, 2:4] = True
    maps = np.full(gt.shape, 1.0e4, dtype=np.float64) + gt * 1.0e-4
    m = pixel_metrics(maps, gt)
    assert m["auroc"] == 1.0 and m["dice_best"] == 1.0


def test_per_image_dice_ignores_lesions_wholly_outside_the_region():
    gt = np.zeros((2, 1, 8, 8), bool)
    gt[0, 0, 1:3, 1:3] = True   # inside the region: 4 pixels, the map finds 2 of them (Dice 2/3)
    gt[1, 0, 6:8, 6:8] = True   # wholly outside the region: nothing there can be scored
    region = np.zeros_like(gt)
    region[:, :, :5, :5] = True
    maps = np.zeros(gt.shape)
    maps[0, 0, 1, 1:3] = 1.0
    m = pixel_metrics(maps, gt, threshold=0.5, region=region)
    # counting image 1 (empty prediction vs empty in-region truth = Dice 1) would give (2/3 + 1) / 2
    assert m["dice_at_threshold_mean_per_image"] == pytest.approx(2 / 3)


def test_detect_intervals_are_stratified_bootstraps_and_exact_binomial():
    from medgen.anomaly.uncertainty import image_intervals, pixel_intervals

    rng = np.random.default_rng(0)
    truth = np.r_[np.zeros(30, bool), np.ones(30, bool)]
    scores = rng.normal(0, 1, 60) + truth * 1.0
    r = image_intervals(scores, truth, threshold=1.0)
    a = r["auroc_interval"]
    assert a["low"] < a["value"] < a["high"] and "stratified" in a["method"] and a["n"] == 60
    f = r["fpr_at_threshold_interval"]
    assert f["k"] == int((scores[:30] > 1.0).sum()) and f["n"] == 30 and "binomial" in f["method"]
    assert image_intervals(scores, np.ones(60, bool), 1.0) == {}
    masks = np.zeros((6, 1, 8, 8), bool)
    masks[3:, 0, 2:4, 2:4] = True
    maps = masks * 1.0 + rng.normal(0, 0.01, masks.shape)
    p = pixel_intervals(maps, masks, None, masks.reshape(6, -1).any(axis=1))
    assert p["auroc_interval"]["low"] == pytest.approx(1.0) and p["dice_best_interval"]["value"] == pytest.approx(1.0)
