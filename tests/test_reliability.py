"""Crash safety: kill -9 or Ctrl-C mid-run and --resume ends with the same weights; safe loading;
non-finite losses stop the run with a usable checkpoint; corrupt inputs never crash the readers."""
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from medgen.weights import load_weights_file
from medgen.errors import InputFileError, UserError

TRAIN = ["dbt-ddpm-3d", "--profile", "tiny", "--set", "model.spatial_dims=2", "--set", "train.epochs=8",
         "--set", "train.max_steps=1000", "--set", "train.batch_size=4"]


def _train(phantom, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "medgen", "--quiet", "train", *TRAIN, "--data", str(phantom), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final(run):
    return load_file(str(run / "checkpoints/final/model.safetensors"))


@pytest.fixture(scope="module")
def reference(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "full"
    p = _train(phantom, out)
    assert p.wait(300) == 0, p.stderr.read()
    return _final(out)


def _wait_for_checkpoint(run, proc, timeout=120):
    start = time.time()
    while not list((run / "checkpoints").glob("step-*/state.json")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() - start < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_identical_weights(phantom, reference, tmp_path, sig):
    run = tmp_path / "cut"
    proc = _train(phantom, run)
    _wait_for_checkpoint(run, proc)
    time.sleep(random.Random(int(sig)).uniform(0.0, 0.8))
    proc.send_signal(sig)
    code = proc.wait(120)
    if code == 0:
        pytest.skip("the run finished before the signal arrived")
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    if sig == signal.SIGINT:
        assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    r = subprocess.run([sys.executable, "-m", "medgen", "--quiet", "train", "--resume", "--out", str(run)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    resumed = _final(run)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    steps = [json.loads(l)["step"] for l in (run / "logs/metrics.jsonl").read_text().splitlines() if '"event"' not in l]
    assert steps == sorted(steps)  # replayed steps are not logged twice


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": Evil()}, f)
    with pytest.raises(UserError, match="refusing to load a pickled checkpoint"):
        load_weights_file(path)
    with pytest.raises(UserError, match="refused to load"):
        load_weights_file(path, allow_pickle=True)
    assert not (tmp_path / "pwned-by-checkpoint").exists()
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(load_weights_file(tmp_path / "ok.pt", allow_pickle=True)["w"], torch.ones(2))


def test_corrupt_run_checkpoint_is_a_clear_error(ldm_run, tmp_path):
    import shutil

    from medgen.sampling import load_run_model

    bad = tmp_path / "bad"
    shutil.copytree(ldm_run, bad)
    (bad / "checkpoints/final/model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt checkpoint"):
        load_run_model(bad)


def test_nonfinite_losses_stop_the_run_with_a_checkpoint(phantom, tmp_path, monkeypatch):
    from medgen.engine.trainer import TrainingDiverged
    from medgen.models.ddpm import PixelDiffusion
    from medgen.training import train

    def nan_step(self, batch, stage, ctx):
        loss = (self.denoiser.unet.conv_in.conv.weight.sum() * float("nan"))
        ctx.backward(loss)
        return {"loss": float(loss)}

    monkeypatch.setattr(PixelDiffusion, "training_step", nan_step)
    with pytest.raises(TrainingDiverged, match="3 non-finite losses in a row"):
        train("dbt-ddpm-3d", phantom, tmp_path / "nan", profile="tiny",
              overrides=["model.spatial_dims=2", "train.max_nonfinite=3", "train.epochs=5", "train.max_steps=50"], echo=lambda *a: None)
    ckpt = sorted((tmp_path / "nan/checkpoints").glob("step-*"))[-1]
    weights = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert json.loads((tmp_path / "nan/status.json").read_text())["state"] == "failed"


def test_checkpoint_budget_rule():
    from medgen.engine.trainer import checkpoint_due

    assert checkpoint_due(None, cost=5.0, done_at=0.0, now=0.1)  # null: after every epoch
    assert not checkpoint_due(0.02, cost=1.0, done_at=10.0, now=59.0)  # 49 s of training < 1 s / 2 %
    assert checkpoint_due(0.02, cost=1.0, done_at=10.0, now=60.0)


STEPS = ["model.spatial_dims=2", "train.batch_size=16", "train.epochs=4", "train.max_steps=100", "train.keep_last=10"]  # 3 steps per epoch


@pytest.mark.parametrize("budget, steps", [("null", [3, 6, 9, 12]), ("1e-9", [3, 12])])
def test_step_checkpoints_follow_the_budget(phantom, tmp_path, budget, steps):
    """A budget no checkpoint fits in still writes the first epoch's and the stage's last."""
    from medgen.training import train

    run = tmp_path / "run"
    train("dbt-ddpm-3d", phantom, run, profile="tiny", overrides=[*STEPS, f"train.checkpoint_budget={budget}"], echo=lambda *a: None)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [f"step-{s:08d}" for s in steps]


def test_a_stop_writes_a_checkpoint_whatever_the_budget(phantom, tmp_path, monkeypatch):
    from medgen.models.ddpm import PixelDiffusion
    from medgen.training import train

    real_step = PixelDiffusion.training_step

    def step(self, batch, stage, ctx):
        if ctx.step == 7:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C during the 8th step (the 3rd epoch)
        return real_step(self, batch, stage, ctx)

    monkeypatch.setattr(PixelDiffusion, "training_step", step)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train("dbt-ddpm-3d", phantom, run, profile="tiny", overrides=[*STEPS, "train.checkpoint_budget=1e-9"], echo=lambda *a: None)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000003", "step-00000008"]
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"


SUFFIXES = [".png", ".jpg", ".tif", ".dcm", ".nii", ".nii.gz", ".npy", ""]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=600), suffix=st.sampled_from(SUFFIXES), prefix=st.sampled_from(
    [b"", b"\x89PNG\r\n\x1a\n", b"\x00" * 128 + b"DICM", b"II*\x00", b"\x93NUMPY", b"\x1f\x8b\x08", b"\x5c\x01\x00\x00"]))
def test_fuzzed_files_give_input_errors_not_crashes(tmp_path, data, suffix, prefix):
    from medgen.data.io import read_image

    path = tmp_path / f"fuzz{suffix or ''}"
    path.write_bytes(prefix + data)
    try:
        arr = read_image(path)
    except InputFileError as err:
        assert str(path) in str(err)
    else:
        assert np.isfinite(arr).all()


@pytest.mark.parametrize("name,make", [
    ("trunc.png", lambda p: p.write_bytes(_png_bytes()[: len(_png_bytes()) // 2])),
    ("trunc.dcm", lambda p: p.write_bytes(_dicom_bytes()[:400])),
    ("trunc.nii.gz", lambda p: p.write_bytes(_nifti_bytes()[:100])),
])
def test_truncated_files_end_in_rejected_csv(tmp_path, name, make):
    import pandas as pd

    from medgen.data.prepare import PrepareOptions, prepare

    folder = tmp_path / "in"
    folder.mkdir()
    make(folder / name)
    from PIL import Image

    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(folder / "good.png")
    prepare(f"folder:{folder}", tmp_path / "out", PrepareOptions(size=(8, 8), workers=1))
    rejected = pd.read_csv(tmp_path / "out/rejected.csv")
    assert list(rejected["source"].map(lambda s: s.split("/")[-1])) == [name]


def _png_bytes():
    import io

    from PIL import Image

    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)  # incompressible: truncation cuts pixels
    Image.fromarray(noise).save(buf, format="PNG")
    return buf.getvalue()


def _dicom_bytes():
    import tempfile
    from pathlib import Path

    from conftest import write_dicom

    with tempfile.TemporaryDirectory() as d:
        p = write_dicom(Path(d) / "x.dcm", np.full((32, 32), 5, np.uint16))
        return p.read_bytes()


def _nifti_bytes():
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    return gzip.compress(img.to_bytes())


def test_outputs_get_the_usual_permissions_not_owner_only(tmp_path):
    """Checkpoints and prepared datasets are written via temporary folders (mkdtemp: 0700) and
    safetensors (0600); a lab sharing runs needs the usual umask-derived modes."""
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.engine.checkpoint import save_checkpoint
    from medgen.fsio import current_umask

    umask = current_umask()
    folder = save_checkpoint(tmp_path / "ckpt", torch.nn.Linear(2, 2), {"step": 1}, ema={"weight": torch.zeros(2, 2)})
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    for f in folder.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
    from medgen.data.sources import SourceOptions

    prepare("builtin:mni152", tmp_path / "data", PrepareOptions(size=(16, 16), source=SourceOptions(n=12)))
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o777 & ~umask


def test_ema_decay_warms_up_so_a_short_run_does_not_keep_its_start():
    from medgen.engine.ema import EMA

    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = EMA(lin, 0.999)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update()  # first update: decay min(0.999, 1/10)
    assert float(ema.shadow["weight"]) == pytest.approx(0.9)
    for _ in range(179):
        ema.update()
    # 180 steps at a constant 0.999 would leave 0.999**180 = 84 % of the starting weight
    assert float(ema.shadow["weight"]) > 0.99 and ema.updates == 180
    for _ in range(20000):
        ema.update()
    assert ema.current_decay() == 0.999
