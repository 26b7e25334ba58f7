"""evaluate's evidence: intervals on the headline numbers, stored features for compare, the sensitivity check."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from medgen.compare import compare
from medgen.evaluation import evaluate
from medgen.metrics.intervals import A_BETTER, NO_DIFFERENCE
from medgen.metrics.sensitivity import degrade

QUIET = lambda *a, **k: None  # noqa: E731


def textured(n, seed, size=16):
    rng = np.random.default_rng(seed)
    x = np.stack([ndi.gaussian_filter(rng.normal(size=(size, size)), rng.uniform(0.5, 1.5)) for _ in range(n)])
    return np.clip(0.5 + 0.15 * x / x.std(axis=(1, 2), keepdims=True), 0, 1)[:, None].astype(np.float32)


def test_intervals_stored_features_sensitivity_and_compare(tmp_path):
    real, same, blurry = textured(60, 0), textured(60, 1), degrade(textured(60, 2))
    good = evaluate(real=real, fake=same, features="texture", metrics="fidelity,distribution,sensitivity",
                    out=tmp_path / "good", n_resamples=100, echo=QUIET)
    bad = evaluate(real=real, fake=blurry, features="texture", metrics="fidelity,distribution,sensitivity",
                   out=tmp_path / "bad", n_resamples=100, echo=QUIET)
    for res in (good, bad):
        ci = res["summary_intervals"]["fid/texture"]
        assert ci["ci"][0] <= res["summary"]["fid/texture"] <= ci["ci"][1] and ci["n"] == [60, 60]
        assert {"precision/texture", "coverage/texture", "kid_mean/texture"} <= set(res["summary_intervals"])
        assert res["sensitivity"]["texture"]["detects_defect"]
    assert bad["summary_intervals"]["fid/texture"]["ci"][0] > good["summary_intervals"]["fid/texture"]["ci"][1]
    assert (tmp_path / "good" / "features" / "texture.npz").exists()
    c = compare([tmp_path / "good", tmp_path / "bad"], features="texture", n_resamples=100, write=False)
    assert c["metrics"]["fid"]["comparisons"][0]["verdict"] == A_BETTER
    itself = compare([tmp_path / "good", tmp_path / "good"], features="texture", n_resamples=100, write=False)
    assert all(d["comparisons"][0]["verdict"] == NO_DIFFERENCE for d in itself["metrics"].values())
    none = evaluate(real=real, fake=same, features="texture", metrics="distribution", out=tmp_path / "none",
                    n_resamples=0, echo=QUIET)
    assert "intervals" not in none["distribution"]["texture"] and not none.get("summary_intervals")


def test_runs_json_shows_intervals_and_compare_verdicts(tmp_path):
    import json

    from medgen.runs import list_runs

    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    ci = {"ci": [1.0, 2.0], "level": 0.95, "method": "shifted bootstrap", "n": [10, 10], "n_resamples": 100}
    comparison = {"a": "runs/a", "b": "runs/b", "verdict": A_BETTER}
    (run / "metrics.json").write_text(json.dumps({
        "evaluation": {"summary": {"fid/texture": 1.5}, "summary_intervals": {"fid/texture": ci}},
        "compare": {"runs/a vs runs/b": {"metrics": {"fid": {"comparisons": [comparison]}}}}}))
    row = list_runs(tmp_path / "runs")[0]
    assert row["intervals"] == {"fid/texture": ci}
    assert row["compare"] == {"runs/a vs runs/b": {"fid": ["runs/a vs runs/b: A better"]}}


def test_report_key_tables_show_intervals_and_verdicts():
    from medgen.report.html import key_table

    ev = {"summary": {"fid/texture": 1.5}, "summary_intervals": {"fid/texture": {
        "ci": [1.0, 2.0], "level": 0.95, "method": "shifted bootstrap", "n": [10, 10], "n_resamples": 100}}}
    html = key_table("evaluation", ev)
    assert "1.5 [1, 2]" in html and "95 % shifted bootstrap" in html
    cmp = {"runs/a vs runs/b": {"correction": "none", "metrics": {"fid": {"comparisons": [
        {"a": "runs/a", "b": "runs/b", "difference": -3.0, "low": -4.0, "high": -2.0, "verdict": A_BETTER,
         "smallest_detectable_difference": 1.2}]}}}}
    html = key_table("compare", cmp)
    assert "fid: a - b" in html and "A better" in html and "[-4, -2]" in html
