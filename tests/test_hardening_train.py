"""Training against values that pass the schema but would crash or poison a run, and checkpoints
whose state is not what it claims: each is exit 2 with one line, before anything is written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medgen.errors import UserError

QUIET = lambda *a, **k: None  # noqa: E731
TINY = ["model.spatial_dims=2", "train.epochs=2", "train.max_steps=4", "train.checkpoint_budget=null"]


@pytest.mark.parametrize("override,needle", [
    ("model.channels=[0]", "model.channels: 0 is not a layer width"),
    ("model.channels=[-8]", "model.channels: -8 is not a layer width"),
    ("model.hidden_dim=100000000", "model.hidden_dim: 100000000 is not a layer width"),
    ("train.seed=-1", "train.seed: -1 is outside"),
    ("train.seed=10000000000000000000000", "train.seed: 10000000000000000000000 is outside"),
    ("train.device=meta", "train.device: 'meta' is not"),
    ("train.lr=.inf", "train.lr: inf is not a finite number"),
    ("train.weight_decay=.inf", "train.weight_decay: inf is not a finite number"),
])
def test_config_ranges_are_checked_before_a_run_exists(tmp_path, override, needle):
    from medgen.config import resolve
    from medgen.training import train

    preset = "brain-tumor-cvae" if "hidden_dim" in override or "channels" in override else "brain-ae-anomaly"
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        resolve(preset, "tiny", [override])
    with pytest.raises(UserError):
        train(preset, tmp_path, tmp_path / "run", profile="tiny", overrides=[override], echo=QUIET)
    assert not (tmp_path / "run").exists()


def test_every_preset_and_profile_passes_the_range_checks():
    from medgen.config import load_preset, preset_names, resolve

    for name in preset_names():
        for profile in load_preset(name).get("profiles", {}):
            resolve(name, profile)


def test_weights_gone_non_finite_stop_the_run(phantom, tmp_path, monkeypatch):
    """Losses that still read as numbers do not hide weights that are NaN (train.lr far too large)."""
    from medgen.engine.trainer import TrainingDiverged
    from medgen.models.ddpm import PixelDiffusion
    from medgen.training import train

    real_step = PixelDiffusion.training_step

    def poisoning_step(self, batch, stage, ctx):
        losses = real_step(self, batch, stage, ctx)
        with torch.no_grad():
            next(self.parameters()).fill_(float("nan"))
        return {k: 0.5 for k in losses}

    monkeypatch.setattr(PixelDiffusion, "training_step", poisoning_step)
    with pytest.raises(TrainingDiverged, match="weights became non-finite"):
        train("dbt-ddpm-3d", phantom, tmp_path / "nan", profile="tiny", overrides=TINY, echo=QUIET)
    assert json.loads((tmp_path / "nan/status.json").read_text())["state"] == "failed"
    assert not (tmp_path / "nan/checkpoints/final").exists()


@pytest.fixture(scope="module")
def stopped_run(phantom, tmp_path_factory):
    """A run with a step checkpoint and no final one: what --resume continues."""
    from medgen.training import train

    out = tmp_path_factory.mktemp("runs") / "stopped"
    train("dbt-ddpm-3d", phantom, out, profile="tiny", overrides=TINY, echo=QUIET)
    shutil.rmtree(out / "checkpoints" / "final")
    assert sorted((out / "checkpoints").glob("step-*"))
    return out


def _damaged_copy(run: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpt = sorted((copy / "checkpoints").glob("step-*"))[-1]
    damage(ckpt)
    return copy


def _state_edit(**position):
    def damage(ckpt: Path):
        state = json.loads((ckpt / "state.json").read_text())
        state["position"].update(position)
        (ckpt / "state.json").write_text(json.dumps(state))
    return damage


def _raw_state(text: str | bytes):
    def damage(ckpt: Path):
        (ckpt / "state.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return damage


def _foreign_weights(ckpt: Path):
    from safetensors.torch import save_file

    save_file({f"other.layer{i}.weight": torch.zeros(3, 3) for i in range(200)}, str(ckpt / "model.safetensors"))


@pytest.mark.parametrize("damage,needle", [
    (_raw_state(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94."), "binary, not JSON"),
    (_raw_state('{"position": {"step": Infinity}}'), "state.json is not valid"),
    (_raw_state('{"position": {"step": ' + "9" * 5000 + "}}"), "state.json is not valid"),
    (_raw_state('{"position": {"step": ' + "9" * 4000 + "}}"), "position step = 999"),
    (_raw_state("[1, 2]"), "does not hold a mapping"),
    (_state_edit(epoch=-1), "position epoch = -1"),
    (_state_edit(step=1.5), "position step = 1.5"),
    (_foreign_weights, "does not fit this run's model"),
])
def test_damaged_checkpoint_state_is_one_line_exit_2(stopped_run, tmp_path, damage, needle):
    from medgen.training import train

    run = _damaged_copy(stopped_run, tmp_path, damage)
    log = (run / "logs" / "metrics.jsonl").read_text()
    with pytest.raises(UserError) as err:
        train("", None, run, resume=True, echo=QUIET)
    message = str(err.value)
    assert needle in message and "\n" not in message and len(message) < 400
    assert (run / "logs" / "metrics.jsonl").read_text() == log  # nothing trained, nothing logged


def test_pickle_refusal_names_no_option_that_does_not_exist(tmp_path):
    from medgen.weights import load_weights_file

    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    with pytest.raises(UserError) as err:
        load_weights_file(tmp_path / "w.pt")
    assert "--allow-pickle" not in str(err.value) and "safetensors" in str(err.value)
