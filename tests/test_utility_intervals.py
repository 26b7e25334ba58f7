"""Intervals of the utility table's scores over seeds and test images (medgen.evaluation.utility_intervals)."""
from __future__ import annotations

import numpy as np
import pytest

from medgen.evaluation.groups.utility import Utility
from medgen.evaluation.utility import METRIC_COLUMNS, _scores
from medgen.evaluation.utility_intervals import confusion_scores, score_intervals


def _predictions(n: int, seeds: int, k: int = 3, right: float = 0.8, seed: int = 0):
    """Labels and per-seed predictions that are right with probability ``right``, else a random class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    preds = np.where(rng.random((seeds, n)) < right, y, rng.integers(0, k, (seeds, n)))
    return y, preds


def test_confusion_scores_equal_the_tables_scikit_learn_scores():
    y, preds = _predictions(50, 3, k=4)
    y[y == 3] = 0  # a class never in the test set: macro averages still run over all four
    want = np.array([[_scores(y, p, 4)[0][m] for m in METRIC_COLUMNS] for p in preds])
    np.testing.assert_allclose(confusion_scores(y, preds, 4, METRIC_COLUMNS), want, atol=1e-12)


def test_interval_contains_the_seed_mean_and_records_how_it_was_made():
    y, preds = _predictions(120, 3)
    cis = score_intervals(y, preds, 3, METRIC_COLUMNS, n_resamples=400)
    means = confusion_scores(y, preds, 3, METRIC_COLUMNS).mean(0)
    for m, mean in zip(METRIC_COLUMNS, means):
        ci = cis[m]
        assert ci["value"] == pytest.approx(mean)
        assert 0.0 <= ci["low"] < ci["value"] < ci["high"] <= 1.0
        assert (ci["n"], ci["n_seeds"], ci["n_resamples"], ci["level"]) == (120, 3, 400, 0.95)
        assert "test images" in ci["method"] and "seeds" in ci["method"]


def test_interval_narrows_with_more_test_images():
    def width(n):
        y, preds = _predictions(n, 3, seed=1)
        ci = score_intervals(y, preds, 3, ("accuracy", "f1_macro"), n_resamples=400)
        return np.array([ci[m]["high"] - ci[m]["low"] for m in ci])

    small, large = width(50), width(800)
    assert np.all(large < 0.5 * small)  # 16x the images: about a quarter of the width


def test_seeds_that_disagree_widen_the_interval():
    y, agree = _predictions(200, 3, seed=2)
    disagree = agree.copy()
    disagree[1] = (y + 1) % 3  # one seed gets every image wrong
    same = score_intervals(y, np.stack([agree[0]] * 3), 3, ("accuracy",), n_resamples=300)["accuracy"]
    spread = score_intervals(y, disagree, 3, ("accuracy",), n_resamples=300)["accuracy"]
    assert spread["high"] - spread["low"] > 2 * (same["high"] - same["low"])


def test_interval_is_reproducible_for_a_seed():
    y, preds = _predictions(80, 2)
    a = score_intervals(y, preds, 3, ("f1_macro",), n_resamples=200, seed=5)
    assert a == score_intervals(y, preds, 3, ("f1_macro",), n_resamples=200, seed=5)
    assert a != score_intervals(y, preds, 3, ("f1_macro",), n_resamples=200, seed=6)


def test_terminal_and_report_show_the_intervals():
    from rich.console import Console

    y, preds = _predictions(60, 2)
    cis = score_intervals(y, preds, 3, METRIC_COLUMNS, n_resamples=100)
    row = {"n_train_real": 10, "n_train_synthetic": 0, "mean": {m: cis[m]["value"] for m in METRIC_COLUMNS},
           "std": {m: 0.01 for m in METRIC_COLUMNS}, "intervals": cis}
    section = {"rows": {"real": row}, "n_test": 60, "seeds": [0, 1]}
    console = Console(record=True, width=250)
    for table in Utility().extra_tables(section):
        console.print(table)
    text = " ".join(console.export_text().split())  # the long title wraps
    acc = cis["accuracy"]
    assert f"[{acc['low']:.3f}, {acc['high']:.3f}]" in text and "60 test images, 2 seed(s), 100 resamples" in text
    assert f"[{acc['low']:.3f}, {acc['high']:.3f}]" in Utility().extra_html(section)


def test_summary_intervals_carry_each_training_sets_accuracy_and_f1():
    """`medgen runs`, the terminal and the report read result["summary_intervals"]: the utility scores are there."""
    from medgen.evaluation.evaluate import _intervals, summary

    rows = {}
    for scenario, right in (("real", 0.9), ("synthetic", 0.6)):
        y, preds = _predictions(60, 3, right=right)
        cis = score_intervals(y, preds, 3, METRIC_COLUMNS, n_resamples=100)
        rows[scenario] = {"n_train_real": 10, "n_train_synthetic": 0, "mean": {m: cis[m]["value"] for m in METRIC_COLUMNS},
                          "std": {m: 0.01 for m in METRIC_COLUMNS}, "intervals": cis}
    result = {"utility": {"rows": rows, "n_test": 60, "seeds": [0, 1, 2]}}
    intervals, values = _intervals(result), summary(result)
    for scenario, row in rows.items():
        for m in ("accuracy", "f1_macro"):
            key = f"{m}/utility-{scenario}"
            ci = row["intervals"][m]
            assert values[key] == row["mean"][m]
            assert intervals[key]["ci"] == [ci["low"], ci["high"]] and ci["low"] < ci["high"]
            assert (intervals[key]["n"], intervals[key]["n_seeds"], intervals[key]["n_resamples"]) == (60, 3, 100)
            assert "seeds" in intervals[key]["method"]
    # a table without intervals (n_resamples 0) gives the values and no interval
    for row in rows.values():
        del row["intervals"]
    assert "accuracy/utility-real" in summary(result) and not _intervals(result)
