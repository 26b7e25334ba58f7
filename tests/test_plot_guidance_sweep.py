"""bench/plot_guidance_sweep.py draws the guidance figure of docs/sample-quality.md from bench outputs."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _result(consistency, recall, frd):
    return {"class_consistency": {"generated": {"value": consistency, "ci95": [consistency - 0.1, min(1.0, consistency + 0.05)]}},
            "radiomics": {"generated": {"recall": recall}, "frd_ratio": frd / 2.0, "frd_ci95": [frd * 0.9, frd * 1.4],
                          "frd_real_vs_real": 2.0},
            "domain": {"diversity": {"min_ratio": 1.0 / frd}}}


def test_plot_guidance_sweep_draws_one_line_per_label_and_refuses_a_bad_argument(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("plot_guidance_sweep", ROOT / "bench" / "plot_guidance_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = []
    for label in ("a", "b"):
        for g, vals in ((1.0, (0.7, 0.3, 20.0)), (2.0, (0.9, 0.5, 15.0)), (3.0, (0.97, 0.6, 14.0))):
            p = tmp_path / f"{label}-{g}.json"
            p.write_text(json.dumps(_result(*vals)))
            args.append(f"{label}:{g:g}={p}")
    assert mod.main([str(tmp_path / "fig.png"), *args]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(capsys.readouterr().out)["series"] == {"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}
    with pytest.raises(SystemExit, match="expected LABEL:G=RESULT.json"):
        mod.main([str(tmp_path / "x.png"), "no-scale.json"])
