"""The command line as a user meets it: exit codes, one-line errors, no tracebacks."""
import json
import subprocess
import sys

import pytest


def medgen(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "medgen", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_commands():
    r = medgen("--help")
    assert r.returncode == 0
    for cmd in ("data", "train", "sample", "runs", "weights", "presets", "demo"):
        assert cmd in r.stdout


def test_presets_lists_the_profiles_a_preset_inherits():
    lines = {line.split()[0]: line for line in medgen("presets").stdout.splitlines() if line.strip()}
    assert "profiles: paper, small, tiny" in lines["brain-tumor-ldm"] and "(extends demo-brain-ldm)" in lines["brain-tumor-ldm"]
    assert "pretrain" in lines["demo-brain-ldm"] and "pretrain" not in lines["brain-tumor-ldm"]


@pytest.mark.parametrize("args,needle", [
    (["data", "prepare", "--source", "nope:x", "--out", "o"], "bad --source 'nope:x'"),
    (["data", "prepare", "--source", "folder:/no/such/dir", "--out", "o"], "/no/such/dir: folder source not found"),
    (["data", "prepare", "--source", "builtin:mni152", "--out", "o", "--size", "64"], "bad --size"),
    (["data", "prepare", "--source", "builtin:mni152", "--out", "o", "--normalize", "window:40"], "window:CENTER,WIDTH"),
    (["data", "prepare", "--source", "builtin:nope", "--out", "o"], "unknown built-in dataset 'nope'"),
    (["data", "inspect", "/no/such"], "not a prepared dataset"),
    (["train", "mammo-roi-ldm", "--out", "r"], "no data: give --data DIR"),
    (["train", "no-such-preset", "--data", "d", "--out", "r"], "unknown preset"),
    (["sample", "/no/such/run"], "not a medgen run directory"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, needle):
    r = medgen(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_usage_error_exits_2(tmp_path):
    r = medgen("data", "prepare", cwd=tmp_path)
    assert r.returncode == 2


def test_the_command_exits_with_main_s_code_and_its_objects_frozen_out_of_the_collector(tmp_path):
    # the interpreter's exit then skips collecting them (1.2-1.3 s with torch and MONAI loaded)
    code = ("import atexit, gc, sys; from medgen.cli import entry; "
            "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
            "sys.argv = ['medgen', 'data', 'inspect', '/no/such']; entry()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "not a prepared dataset" in r.stderr
    assert r.stdout.strip() == "frozen True"


def test_prepare_inspect_runs_weights_via_cli(tmp_path, png_classes):
    r = medgen("data", "prepare", "--source", f"folder:{png_classes}", "--out", tmp_path / "ds", "--size", "24", "32", "--normalize", "train-max")
    assert r.returncode == 0, r.stderr
    assert "1 input(s) rejected" in r.stdout and "preview:" in r.stdout
    r = medgen("data", "inspect", tmp_path / "ds", "--json")
    info = json.loads(r.stdout)
    assert info["shape"] == [1, 24, 32] and info["rejected"] == 1 and info["normalize"]["mode"] == "train-max"
    again = medgen("data", "prepare", "--source", f"folder:{png_classes}", "--out", tmp_path / "ds")
    assert again.returncode == 2 and "--force" in again.stderr
    w = json.loads(medgen("weights", "--json").stdout)
    assert {row["name"] for row in w} >= {"FID Inception-v3", "VGG16 ImageNet"} and all("get_it_from" in row for row in w)


def test_runs_table_reports_status(tmp_path):
    from medgen.runs import list_runs

    run = tmp_path / "runs" / "a"
    (run / "checkpoints" / "step-00000001").mkdir(parents=True)
    (run / "config.yaml").write_text("preset: x\nprofile: tiny\nmodel: {family: ldm}\n")
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": 999999999}))
    (run / "metrics.json").write_text(json.dumps({"evaluation": {"domain": {"fid": 12.5}}}))
    rows = list_runs(tmp_path / "runs")
    assert rows[0]["status"] == "crashed (resumable)" and rows[0]["metrics"] == {"fid": 12.5}
    r = medgen("runs", tmp_path / "runs", "--json")
    assert json.loads(r.stdout)[0]["preset"] == "x"


def test_quiet_lasts_one_invocation():
    """`--quiet` silences that command only: an in-process caller (a notebook, a test) is not left muted."""
    from medgen.cli import main
    from medgen.progress import is_quiet

    assert not is_quiet()
    try:
        main(["--quiet", "version"])
    except SystemExit as e:
        assert e.code in (0, None)
    assert not is_quiet()
