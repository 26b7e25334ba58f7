"""The evaluation's registries: every registered group and extractor is reachable by name, the help
texts list them, and docs/extending.md's two worked examples (a metric group, a feature extractor),
executed as written there, plug in with one registration each."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from medgen.errors import UserError
from medgen.evaluation import evaluate, summary_tables
from medgen.evaluation.features import registry as feature_registry
from medgen.evaluation.groups import registry as group_registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
QUIET = lambda *a, **k: None  # noqa: E731


def _doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def _module(name: str, code: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    sys.modules[name] = mod
    exec(compile(code, f"docs/extending.md:{name}", "exec"), mod.__dict__)
    return mod


def test_groups_and_extractors_are_registered_and_listed_in_help():
    from medgen.commands.evaluate import evaluate_cmd  # noqa: F401 - the help texts are built at import
    from medgen.evaluation.groups import all_groups

    names = group_registry.group_names()
    assert names == ("reconstruction", "fidelity", "distribution", "sensitivity", "intensity", "memorisation", "utility",
                     "seg_utility")
    assert all(g.name in group_registry.metrics_help() for g in all_groups())
    assert group_registry.parse_groups("all", ()) == list(names[:-2])  # utility and seg_utility have their own options
    assert group_registry.parse_groups("utility,fidelity", ()) == ["fidelity", "utility"]
    with pytest.raises(UserError, match="unknown metric group.*choose from reconstruction"):
        group_registry.parse_groups("fid", ())
    assert feature_registry.extractor_names() == ("domain", "texture", "inception", "resnet50", "radimagenet", "radiomics")
    for name in feature_registry.extractor_names():
        assert name in feature_registry.extractor_usage()
    with pytest.raises(UserError, match="did you mean 'radiomics'"):
        feature_registry.parse_feature_specs("radiomic")


def test_the_documented_group_and_extractor_plug_in(tmp_path, monkeypatch):
    group_code, group_reg, extractor_code, extractor_reg = _doc_blocks()
    brightness = _module("medgen.evaluation.groups.brightness", group_code)
    histogram = _module("medgen.evaluation.features.feature_extractor_histogram", extractor_code)
    monkeypatch.setattr(group_registry, "_REGISTRY", dict(group_registry._REGISTRY))
    monkeypatch.setattr(feature_registry, "_REGISTRY", dict(feature_registry._REGISTRY))
    monkeypatch.setitem(sys.modules, "medgen.evaluation.groups.brightness", brightness)
    monkeypatch.setitem(sys.modules, "medgen.evaluation.features.feature_extractor_histogram", histogram)
    import medgen.evaluation.features as features_pkg

    monkeypatch.setattr(features_pkg, "feature_extractor_histogram", histogram, raising=False)
    exec(group_reg, vars(group_registry))  # the documented registration lines, as written
    exec(extractor_reg, vars(feature_registry))

    assert "brightness" in group_registry.metrics_help() and "histogram[:BINS]" in feature_registry.extractor_usage()
    rng = np.random.default_rng(0)
    real = rng.uniform(0.2, 0.6, (12, 1, 16, 16)).astype(np.float32)
    fake = np.clip(real[::-1] + 0.1, 0, 1)
    res = evaluate(real=real, fake=fake, metrics="brightness,distribution", features="histogram:16", out=tmp_path, echo=QUIET)
    b = res["brightness"]
    assert b["difference"] == pytest.approx(float(fake.mean() - real.mean()), rel=1e-6) and b["difference"] > 0.09
    assert res["summary"]["brightness/difference"] == b["difference"]
    d = res["distribution"]["histogram"]
    assert d["feature_dim"] == 16 and d["fid"] > 0 and d["settings"]["features"]["name"] == "histogram"
    assert res["features"][0]["preprocessing"].startswith("per-image density histogram, 16 bins")
    rows = [tuple(r) for t in summary_tables(res) for r in zip(*(c._cells for c in t.columns))]
    assert any(r[0] == "brightness" and r[1] == "mean difference" for r in rows)
    same = evaluate(real=real, fake=real, metrics="distribution", features="histogram", out=tmp_path / "same", echo=QUIET)
    assert same["distribution"]["histogram"]["fid"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UserError, match="whole number"):
        evaluate(real=real, fake=fake, metrics="distribution", features="histogram:many", out=tmp_path / "bad", echo=QUIET)


def test_runs_columns_come_from_the_groups():
    from medgen.runs import key_metrics

    ev = {"distribution": {"domain": {"fid": 3.0, "kid_mean": 0.1}, "radiomics": {"fid": 40.0, "frd": 40.0, "kid_mean": 2.0}},
          "memorisation": {"pixels": {"fraction_flagged": 0.05}, "features": {"fraction_flagged": 0.2}},
          "sweep": [{"fid/domain": 9.0}], "summary": {"fid/domain": 3.0}}
    assert key_metrics({"evaluation": ev}) == {"fid": 3.0, "kid_mean": 0.1, "frd": 40.0, "fraction_flagged": 0.05}
    assert key_metrics({"evaluation": {"memorisation": {"skipped": "no dataset"}}}) == {}
