"""The demo's whole journey (tiny profile): prepare, train, sample, evaluate, report, then a rerun reuses it."""
import json

from medgen.demo import run_demo


def test_tiny_demo_end_to_end_and_rerun(tmp_path):
    lines = []
    res = run_demo(tmp_path / "demo", profile="tiny", n_images=45, echo=lines.append)
    run = tmp_path / "demo" / "runs" / "demo-small"
    assert (run / "samples/demo/grid.png").exists() and (run / "report.html").exists()
    assert "evaluation" in json.loads((run / "metrics.json").read_text())
    assert res["reports"] == [str(run / "report.html")]
    assert any(line.startswith("done in") for line in lines)
    again = []
    run_demo(tmp_path / "demo", profile="tiny", n_images=45, echo=again.append)
    assert any("reusing the prepared data" in line for line in again) and any("reusing the finished run" in line for line in again)
