"""medgen compare: paired bootstrap of metric differences between runs, from stored features."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medgen.cli import main
from medgen.compare import compare
from medgen.errors import UserError
from medgen.feature_store import load_features, save_features
from medgen.metrics.intervals import A_BETTER, B_BETTER, NO_DIFFERENCE

F = 8


def _run(root, name, generated, real, ids=None, extractor_info=None):
    run = root / name
    run.mkdir()
    save_features(run / "evaluation", "domain", real, generated, extractor_info=extractor_info or {"name": "domain", "key": "k1"},
                  real_ids=ids if ids is not None else [f"r{i}" for i in range(len(real))],
                  real_source={"dataset": "d", "split": "test"}, generated_info={"sampler": "ddim"})
    return run


@pytest.fixture()
def sets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(120, F))
    good = rng.normal(size=(120, F))
    good2 = rng.normal(size=(120, F))
    bad = rng.normal(size=(120, F)) * 0.6 + 0.8
    return real, good, good2, bad


def test_degraded_run_is_worse_and_a_run_against_itself_shows_no_difference(tmp_path, sets):
    real, good, _, bad = sets
    a = _run(tmp_path, "a", good, real)
    b = _run(tmp_path, "b", bad, real)
    res = compare([a, b], n_resamples=200)
    fid = res["metrics"]["fid"]["comparisons"][0]
    assert fid["verdict"] == A_BETTER and fid["high"] < 0  # FID(A) - FID(B) < 0, the whole interval
    assert res["metrics"]["kid"]["comparisons"][0]["verdict"] == A_BETTER
    assert res["metrics"]["coverage"]["comparisons"][0]["verdict"] == A_BETTER
    assert res["correction"].startswith("none")
    assert "compare" in json.loads((a / "metrics.json").read_text())
    swapped = compare([b, a], n_resamples=200, write=False)
    assert swapped["metrics"]["fid"]["comparisons"][0]["verdict"] == B_BETTER

    same = compare([a, a], n_resamples=200, write=False)
    for metric, d in same["metrics"].items():
        c = d["comparisons"][0]
        assert c["verdict"] == NO_DIFFERENCE, metric
        assert c["low"] <= 0 <= c["high"] and c["smallest_detectable_difference"] > 0


def test_three_runs_are_holm_corrected(tmp_path, sets):
    real, good, good2, bad = sets
    runs = [_run(tmp_path, n, g, real) for n, g in (("a", good), ("b", good2), ("c", bad))]
    res = compare(runs, n_resamples=200, write=False)
    assert res["correction"] == "Holm over the 3 pairs of runs, per metric"
    fid = {(c["a"][-1], c["b"][-1]): c for c in res["metrics"]["fid"]["comparisons"]}
    assert fid[("a", "b")]["verdict"] == NO_DIFFERENCE
    assert fid[("a", "c")]["verdict"] == A_BETTER and fid[("b", "c")]["verdict"] == A_BETTER
    assert all("p_adjusted" in c for c in fid.values())


def test_different_evidence_is_refused_naming_the_difference(tmp_path, sets, capsys):
    real, good, _, bad = sets
    a = _run(tmp_path, "a", good, real)
    other_real = _run(tmp_path, "b", bad, real, ids=[f"x{i}" for i in range(len(real))])
    with pytest.raises(UserError, match="different real images"):
        compare([a, other_real], n_resamples=20)
    fewer = _run(tmp_path, "c", bad[:60], real)
    with pytest.raises(UserError, match="number of generated images"):
        compare([a, fewer], n_resamples=20)
    other_ext = _run(tmp_path, "d", bad, real, extractor_info={"name": "domain", "key": "k2"})
    with pytest.raises(SystemExit) as err:
        main(["compare", str(a), str(other_ext), "--resamples", "20"])
    assert err.value.code == 2 and "different extractor" in capsys.readouterr().err
    with pytest.raises(UserError, match="no stored radiomics features"):
        compare([a, a], features="radiomics")


def test_cli_json(tmp_path, sets, capsys):
    real, good, _, bad = sets
    a, b = _run(tmp_path, "a", good, real), _run(tmp_path, "b", bad, real)
    with pytest.raises(SystemExit) as err:
        main(["compare", str(a), str(b), "--resamples", "50", "--json", "--no-write"])
    assert err.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["fid"]["comparisons"][0]["verdict"] == A_BETTER
    assert out["n_real"] == 120 and out["n_resamples"] == 50
    assert not (a / "metrics.json").exists()
    assert load_features(a, "domain").real.shape == (120, F)
