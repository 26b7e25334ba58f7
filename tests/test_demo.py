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


def test_pretrained_export_and_install_round_trip(tmp_path):
    """The shipped-checkpoint path: a finished demo run exported as float16 safetensors, installed
    as a run for another dataset folder, loads with its EMA weights and samples."""
    import pytest
    import torch
    from safetensors.torch import load_file

    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.demo import export_pretrained, install_pretrained
    from medgen.engine.checkpoint import load_checkpoint
    from medgen.errors import UserError
    from medgen.report import write_report
    from medgen.rundir import RunDir
    from medgen.sampling import load_run_model, sample

    run_demo(tmp_path / "demo", profile="tiny", n_images=45, echo=lambda m: None)
    run = tmp_path / "demo" / "runs" / "demo-small"
    info = json.loads((run / "data.json").read_text())  # as `medgen train` records it from the command line
    info["command"] = "medgen train demo-brain-ldm --profile tiny --data /home/someone/mni --out /home/someone/run"
    (run / "data.json").write_text(json.dumps(info))
    asset = export_pretrained(run, tmp_path / "asset")
    shipped = load_file(str(asset))
    assert all(v.dtype == torch.float16 for v in shipped.values() if v.is_floating_point())
    info = json.loads((tmp_path / "asset" / "data.json").read_text())
    assert "dataset" not in info and info["trained_on"]["source"] == "builtin:mni152" and info["trained_on"]["seed"] == 0
    assert "path: null" in (tmp_path / "asset" / "config.yaml").read_text()  # no path of the machine that trained it

    # the demo's own data (seed 0) holds the images this checkpoint trained on: its test split is no test, refused
    assert install_pretrained(tmp_path / "seen", tmp_path / "demo" / "data", asset_dir=tmp_path / "asset") is None
    assert not (tmp_path / "seen").exists()
    # the same built-in atlas drawn with another seed: other items, accepted
    other = tmp_path / "other-data"
    prepare("builtin:mni152", other, PrepareOptions(size=(32, 32), seed=1, source=SourceOptions(n=9)), force=True)
    installed = install_pretrained(tmp_path / "pre", other, asset_dir=tmp_path / "asset")
    assert json.loads((installed / "data.json").read_text())["dataset"] == str(other.resolve())
    assert RunDir(installed).config().data.path == str(other.resolve())  # config and data.json agree
    _, model, _ = load_run_model(installed, device="cpu")
    ema = load_checkpoint(run / "checkpoints" / "final")["ema"]
    name = next(k for k in ema if k.startswith("denoiser") and ema[k].is_floating_point() and ema[k].numel() > 10)
    got = model.state_dict()[name]
    assert got.dtype == torch.float32 and torch.allclose(got, ema[name].float(), atol=1e-2, rtol=1e-2)
    res = sample(installed, n=3, steps=2, seed=0, out=tmp_path / "s", force=True, echo=lambda m: None)
    assert (tmp_path / "s" / "grid.png").exists(), res
    page = write_report(installed).read_text()  # labelled for what it is, with the command that made it
    assert "Pretrained checkpoint shipped with medgen" in page and "--data DATA --out RUN" in page and "seed 0" in page
    assert install_pretrained(tmp_path / "none", other, asset_dir=tmp_path / "missing") is None

    moved = tmp_path / "demo" / "data-moved"
    (tmp_path / "demo" / "data").rename(moved)
    with pytest.raises(UserError, match="not a prepared dataset"):
        export_pretrained(run, tmp_path / "asset3")
    assert not (tmp_path / "asset3").exists()  # refused before anything is written
    moved.rename(tmp_path / "demo" / "data")

    (run / "status.json").write_text(json.dumps({"state": "running"}))
    with pytest.raises(UserError, match="not finished"):
        export_pretrained(run, tmp_path / "asset2")


def test_export_of_a_continued_run_records_the_whole_chain(tmp_path):
    """A checkpoint trained further with --init-from ships the commands of every run in its chain, the
    steps of all of them and no path of the training machine; a chain over two data sets is refused."""
    import pytest

    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.demo import DEMO_PRESET, export_pretrained
    from medgen.errors import UserError
    from medgen.training import train

    data = tmp_path / "data"
    prepare("builtin:mni152", data, PrepareOptions(size=(32, 32), seed=1, source=SourceOptions(n=30)), force=True)
    quiet = dict(profile="tiny", echo=lambda m: None)

    def made_by(run, command):  # as `medgen train` records its command line (here: pytest's)
        info = json.loads((run / "data.json").read_text())
        info["command"] = command
        (run / "data.json").write_text(json.dumps(info))

    train(DEMO_PRESET, data, tmp_path / "first", **quiet)
    made_by(tmp_path / "first", f"medgen train demo-brain-ldm --profile tiny --data {data} --out {tmp_path / 'first'}")
    train(DEMO_PRESET, data, tmp_path / "second", init_from=tmp_path / "first",
          overrides=["train.stages.autoencoder.epochs=0"], **quiet)
    made_by(tmp_path / "second", f"medgen train demo-brain-ldm --profile tiny --data {data} --init-from "
            f"{tmp_path / 'first'} --set train.stages.autoencoder.epochs=0 --out {tmp_path / 'second'}")

    export_pretrained(tmp_path / "second", tmp_path / "asset")
    info = json.loads((tmp_path / "asset" / "data.json").read_text())
    assert info["command"] == ("medgen train demo-brain-ldm --profile tiny --data DATA --out RUN1 && "
                               "medgen train demo-brain-ldm --profile tiny --data DATA --init-from RUN1 "
                               "--set train.stages.autoencoder.epochs=0 --out RUN")
    steps = [json.loads((tmp_path / r / "status.json").read_text())["steps"] for r in ("first", "second")]
    assert info["steps"] == sum(steps) and steps[1] < sum(steps)
    assert info["init_from"] is None and str(tmp_path) not in (tmp_path / "asset" / "data.json").read_text()

    other = tmp_path / "other"
    prepare("builtin:mni152", other, PrepareOptions(size=(32, 32), seed=2, source=SourceOptions(n=30)), force=True)
    train(DEMO_PRESET, other, tmp_path / "third", init_from=tmp_path / "first",
          overrides=["train.stages.autoencoder.epochs=0"], **quiet)
    with pytest.raises(UserError, match="other data"):
        export_pretrained(tmp_path / "third", tmp_path / "asset2")
    assert not (tmp_path / "asset2").exists()
