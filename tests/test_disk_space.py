"""A full disk or an unwritable folder fails early with a message naming the folder and the sizes;
mid-run it stops with a UserError (exit 2) that points at the last complete checkpoint, which still
loads; nothing half-written is left behind."""
import errno
import json
import shutil
from collections import namedtuple

import pytest

from medgen.errors import UserError

TRAIN = ["model.spatial_dims=2", "train.batch_size=16", "train.epochs=2"]  # 33 items: steps 3 and 4 end epochs 0 and 1
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def full_disk(monkeypatch):
    """shutil.disk_usage reports 10 MB free everywhere."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 10**7, 10**7))


def test_train_on_a_full_disk_fails_before_writing(phantom, tmp_path, full_disk, capsys):
    from medgen.cli import main

    out = tmp_path / "runs" / "r"
    with pytest.raises(SystemExit) as exc:
        main(["--quiet", "train", "dbt-ddpm-3d", "--profile", "tiny", *[a for o in TRAIN for a in ("--set", o)],
              "--data", str(phantom), "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(out) in err and "10.0 MB free" in err and "needed" in err
    assert not (tmp_path / "runs").exists()  # nothing created


def test_prepare_on_a_full_disk_fails_before_writing(tmp_path, monkeypatch):
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 500, 500))
    with pytest.raises(UserError, match=r"500 B free, about 163.8 KB needed") as exc:  # 40 images of 32x32 float32, written once
        prepare("builtin:breast-phantom", tmp_path / "ph", PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=40)))
    assert exc.value.path == str(tmp_path / "ph")
    assert list(tmp_path.iterdir()) == []  # no dataset, no temporary folder


def test_space_estimate_counts_every_kept_checkpoint():
    import torch

    from medgen.config import resolve
    from medgen.training import space_needed

    cfg = resolve("dbt-ddpm-3d", "tiny", ["train.keep_last=3"])
    model = torch.nn.Linear(1000, 1000)  # 4 MB of weights
    model.stages = ("main",)
    weights = 1001 * 1000 * 4
    # 3 last + 1 being written + 1 best + final, each weights + EMA + two Adam moments, + 64 MiB
    assert space_needed(model, cfg) == 6 * 4 * weights + 64 * 2**20
    assert space_needed(model, cfg, resume=True) == 2 * 4 * weights + 64 * 2**20


@pytest.mark.parametrize("where", ["checkpoint", "log"])
def test_disk_full_mid_run_is_a_user_error_and_the_last_checkpoint_loads(phantom, tmp_path, monkeypatch, where):
    from safetensors import SafetensorError

    import safetensors.torch
    from medgen.engine.checkpoint import load_checkpoint
    from medgen.rundir import RunDir
    from medgen.training import train

    if where == "checkpoint":
        real = safetensors.torch.save_file

        def save_file(tensors, path, *a, **k):
            if ".step-00000004.tmp-" in str(path):  # the second step checkpoint: half a file, then the disk is full
                open(path, "wb").write(b"\0" * 100)
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            return real(tensors, path, *a, **k)

        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    else:
        real_log = RunDir.log

        def log(self, record):
            if record.get("epoch") == 1 and record.get("event"):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_log(self, record)

        monkeypatch.setattr(RunDir, "log", log)
    run = tmp_path / "run"
    with pytest.raises(UserError) as exc:
        train("dbt-ddpm-3d", phantom, run, profile="tiny", overrides=TRAIN, echo=lambda *a: None)
    msg = str(exc.value)
    assert "No space left on device" in msg and "step-00000003" in msg and "intact" in msg and "--resume" in msg
    assert exc.value.path == str(run / "checkpoints/step-00000004" if where == "checkpoint" else run)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "step-00000004" not in names and not [n for n in names if n.startswith(".")]  # no half-written folder
    assert load_checkpoint(run / "checkpoints/step-00000003")["state"]["position"]["step"] == 3
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


def test_safetensors_io_errors_are_read_as_os_errors(tmp_path):
    """The parser reads the message of a real safetensors failure (not a made-up one)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from medgen.engine.checkpoint import os_error_of

    with pytest.raises(SafetensorError) as exc:
        save_file({"w": torch.zeros(2)}, str(tmp_path / "missing" / "model.safetensors"))
    err = os_error_of(exc.value, tmp_path / "ckpt")
    assert isinstance(err, OSError) and err.errno == errno.ENOENT and err.filename == str(tmp_path / "ckpt")
