"""The command line against careless and hostile input: names printed as text, one-line errors
with exit 2, no result replaced without --force, one writer per run, and a user's habits
(--resume appended to the same command, a subset that selects nothing) met with help."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medgen.cli import main
from medgen.errors import UserError

QUIET = lambda *a, **k: None  # noqa: E731
TINY = ["model.spatial_dims=2", "train.epochs=1", "train.max_steps=2"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def _pngs(folder: Path, n: int = 4, size=(16, 20)) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


@pytest.fixture(scope="module")
def tiny_run(phantom, tmp_path_factory):
    from medgen.training import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train("dbt-ddpm-3d", phantom, out, profile="tiny", overrides=TINY, echo=QUIET)
    return out


def test_dollar_signs_in_class_and_output_names_are_plain_text(tmp_path):
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.plots import image_grid

    src = tmp_path / "src"
    _pngs(src / "a$x^2$")
    _pngs(src / "b$")
    out = tmp_path / "out $\\frac{1$"
    summary = prepare(f"folder:{src}", out, PrepareOptions(size=(16, 16), workers=1))
    assert Path(summary.preview).stat().st_size > 0
    grid = image_grid(np.zeros((2, 1, 8, 8)), tmp_path / "g.png", titles=["$\\nope", "ok"], title="run $x_{$: ddim")
    assert grid.stat().st_size > 0


def test_brackets_in_labels_are_printed_not_parsed_as_markup(tmp_path, capsys):
    from medgen.data.prepare import PrepareOptions, prepare

    _pngs(tmp_path / "src")
    rows = [f"src/im{i}.png,{'[/bold]' if i % 2 else '[red]x'}" for i in range(4)]
    (tmp_path / "meta.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    prepare(f"csv:{tmp_path / 'meta.csv'}", tmp_path / "ds", PrepareOptions(size=(16, 16), workers=1))
    code, out, err = run_cli(capsys, "data", "inspect", tmp_path / "ds")
    assert code == 0, err
    assert "[/bold]" in out and "[red]x" in out
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("preset: '[/bold]'\nprofile: '[i]'\nmodel: {family: ldm}\n")
    code, out, err = run_cli(capsys, "runs", tmp_path / "runs")
    assert code == 0, err
    assert "[/bold]" in out


def test_report_on_a_config_with_a_python_tag_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    code, out, err = run_cli(capsys, "report", run)
    assert code == 2 and "config.yaml" in err and "not valid YAML" in err
    assert len(err.strip().splitlines()) == 1 and "pwned" not in out


def test_yaml_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  family: ldm\n   channels: [1,\n")
    code, _, err = run_cli(capsys, "train", bad, "--data", tmp_path, "--out", tmp_path / "r")
    assert code == 2 and "line 3" in err
    assert len(err.strip().splitlines()) == 1


def test_evaluate_out_keeps_an_earlier_metrics_json_without_force(tmp_path, capsys):
    real, fake = _pngs(tmp_path / "real"), _pngs(tmp_path / "fake")
    out = tmp_path / "ev"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}')
    code, _, err = run_cli(capsys, "evaluate", "--real", real, "--fake", fake, "--out", out, "--metrics", "intensity")
    assert code == 2 and "--force" in err
    assert json.loads((out / "metrics.json").read_text()) == {"mine": 1}


def test_sample_out_naming_a_file_exits_2(tiny_run, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, _, err = run_cli(capsys, "sample", tiny_run, "--n", "2", "--out", target)
    assert code == 2 and "is a file" in err
    assert target.read_text() == "keep me"


def test_a_live_run_refuses_a_second_writer_with_its_pid(tiny_run, phantom):
    import os

    from medgen.fsio import acquire_lock, lock_holder
    from medgen.rundir import RunDir
    from medgen.training import train

    assert lock_holder(tiny_run / ".lock") is None  # the finished run gave its lock back
    before = (tiny_run / "status.json").read_text()
    with acquire_lock(tiny_run / ".lock", "this run directory"):  # as a training process holds it
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            RunDir(tiny_run).set_status("running")
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            train("dbt-ddpm-3d", phantom, tiny_run, profile="tiny", overrides=TINY, force=True, echo=QUIET)
    assert (tiny_run / "status.json").read_text() == before and (tiny_run / "checkpoints" / "final").exists()


def test_resume_appended_to_the_same_command_is_accepted(tiny_run, phantom):
    from medgen.training import train

    result = train("dbt-ddpm-3d", phantom, tiny_run, profile="tiny", overrides=TINY, resume=True, echo=QUIET)
    assert result["finished"]
    with pytest.raises(UserError, match="train.epochs would be 3 but the run has 1"):
        train("dbt-ddpm-3d", phantom, tiny_run, profile="tiny", overrides=[*TINY, "train.epochs=3"], resume=True, echo=QUIET)
    with pytest.raises(UserError, match="--subset"):
        train("", None, tiny_run, subset=["label=beta"], resume=True, echo=QUIET)


def test_a_subset_that_selects_nothing_lists_the_labels_and_the_subset_to_use(phantom, tmp_path):
    from medgen.training import train

    with pytest.raises(UserError) as err:
        train("dbt-ddpm-3d", phantom, tmp_path / "r", profile="tiny", overrides=TINY, subset=["label=none"], echo=QUIET)
    message = str(err.value)
    assert "labels present there: calcification (" in message and "normal (" in message
    assert message.endswith("--subset label=normal")
    assert not (tmp_path / "r").exists()
