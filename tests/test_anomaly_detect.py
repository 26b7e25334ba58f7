"""``medgen detect`` end to end on tiny runs trained on normal brain-lesions slices: the conv-ae
(reconstruction) and a pixel DDPM (AnoDDPM-style partial noising), from prepared data and from a
folder of image files with masks."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions

    out = tmp_path_factory.mktemp("anomaly") / "bl"
    prepare("builtin:brain-lesions", out, PrepareOptions(size=(32, 32), workers=1, split=(0.5, 0.25, 0.25),
                                                         source=SourceOptions(n=64)))
    return out


@pytest.fixture(scope="module")
def ae_run(lesions):
    from medgen.training import train

    run = lesions.parent / "ae"
    train("brain-ae-anomaly", lesions, run, profile="tiny", subset=["label=none"], echo=lambda *_: None)
    return run


@pytest.fixture(scope="module")
def ddpm_run(lesions):
    from medgen.training import train

    run = lesions.parent / "ddpm"
    train("brain-ddpm-anomaly", lesions, run, profile="tiny", subset=["label=none"], echo=lambda *_: None)
    return run


def test_detect_conv_ae_end_to_end(ae_run):
    from medgen.anomaly import detect
    from medgen.rundir import RunDir

    lines = []
    r = detect(ae_run, echo=lines.append, map="combined", smooth=1.0, score="top-percentile")
    out = ae_run / "detect" / "test"
    assert r["output"] == str(out)
    for name in ("metrics.json", "scores.csv", "maps.npy", "figure.png", "scores.png"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["image"]["n_normal"] == 4 and m["image"]["n_anomalous"] == 12
    for key in ("auroc", "auprc", "fpr_at_threshold", "sensitivity_at_threshold"):
        assert m["image"][key] is not None and 0 <= m["image"][key] <= 1, key
    for key in ("auroc", "auprc", "dice_best", "dice_at_threshold"):
        assert 0 <= m["pixel"][key] <= 1 and 0 <= m["pixel_foreground"][key] <= 1, key
    assert m["pixel_foreground"]["pixels"] < m["pixel"]["pixels"] == 16 * 32 * 32
    assert set(m["image"]["by_label"]) == {"glioma", "meningioma", "pituitary", "none"}
    assert m["settings"]["map"] == "combined" and m["settings"]["detector"] == "reconstruct"
    assert m["model"]["family"] == "conv-ae" and m["model"]["encoder_weights"].startswith("none")
    assert m["threshold"]["target_fpr"] == 0.05 and m["calibration"]["n"] == 4
    # the threshold is the 95th percentile of the normal-validation scores: at most 1 of 4 above it
    assert m["threshold"]["image"] > 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 16 and set(rows[0]) == {"id", "label", "score", "predicted", "anomalous"}
    assert {r_["anomalous"] for r_ in rows if r_["label"] == "none"} == {"0"}
    maps = np.load(out / "maps.npy")
    assert maps.shape == (16, 1, 32, 32) and np.isfinite(maps).all()
    section = RunDir(ae_run).metrics()["anomaly"]
    assert section["image"]["auroc"] == m["image"]["auroc"] and "test" in section["by_input"]
    assert any("image: AUROC" in line for line in lines)

    from medgen.errors import UserError

    with pytest.raises(UserError, match="already exists"):
        detect(ae_run, echo=lambda *_: None)
    r2 = detect(ae_run, echo=lambda *_: None, force=True, threshold="value:0.5", map="abs", score="max", smooth=0)
    assert r2["threshold"]["image"] == 0.5 and r2["settings"]["score"] == "max"



def test_a_detect_folder_another_process_is_writing_is_refused(ae_run, tmp_path):
    """Two detections aimed at one --out: the second is refused while the first holds the folder,
    so it can neither pass the "already exists" check before the first writes and then delete the
    first's results, nor interleave its files with them."""
    from medgen.anomaly import detect
    from medgen.errors import UserError
    from medgen.fsio import acquire_lock

    with acquire_lock(tmp_path / ".d.lock", "detect output folder"):  # what a running `medgen detect --out d` holds
        with pytest.raises(UserError, match="detect output folder .* is in use by another medgen process"):
            detect(ae_run, out=tmp_path / "d", force=True, echo=lambda *_: None)
    assert not (tmp_path / "d").exists()
    detect(ae_run, out=tmp_path / "d", echo=lambda *_: None)
    assert (tmp_path / "d" / "metrics.json").exists() and not (tmp_path / ".d.lock").exists()

def test_detect_folder_of_images_with_masks(ae_run, lesions, tmp_path):
    from PIL import Image

    from medgen.anomaly import detect
    from medgen.data.dataset import PreparedDataset

    ds = PreparedDataset(lesions)
    rows = ds.select("test")[:6]
    imgs, msks = tmp_path / "imgs", tmp_path / "masks"
    for i, row in enumerate(rows):
        lab = ds.index["label"].iloc[row]
        (imgs / lab).mkdir(parents=True, exist_ok=True)
        msks.mkdir(exist_ok=True)
        # 64x64 files: detect resizes them to the run's 32x32 and normalises like its data
        big = np.kron(np.asarray(ds.images[row, 0]), np.ones((2, 2)))
        Image.fromarray((big * 65535).astype(np.uint16)).save(imgs / lab / f"case{i}.png")
        mk = np.kron(np.asarray(ds.masks[row, 0]), np.ones((2, 2)))
        Image.fromarray((mk * 255).astype(np.uint8)).save(msks / f"case{i}.png")
    r = detect(ae_run, input=imgs, masks=msks, out=tmp_path / "out", echo=lambda *_: None)
    assert r["n"] == 6 and r["input_name"] == "imgs"
    labels = [ds.index["label"].iloc[row] for row in rows]
    assert r["image"]["n_anomalous"] == sum(lab != "none" for lab in labels)
    assert "auroc" in r["pixel"] and (tmp_path / "out" / "figure.png").exists()


def test_detect_cli_command(ae_run, tmp_path):
    import typer
    from typer.testing import CliRunner

    from medgen.commands.detect import detect_cmd

    app = typer.Typer()
    app.command()(detect_cmd)
    res = CliRunner().invoke(app, [str(ae_run), "--out", str(tmp_path / "cli"), "--map", "ssim", "--smooth", "0",
                                   "--score", "mean", "--foreground", "none", "--threshold", "fpr:0.1", "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert m["settings"]["foreground"] is None and m["settings"]["map"] == "ssim" and "pixel_foreground" not in m
    assert m["threshold"]["rule"] == "fpr:0.1"


def test_diffusion_reconstruct_partial_noise(ddpm_run):
    from medgen.anomaly.diffusion import diffusion_reconstruct, partial_timesteps, t_start_for
    from medgen.sampling import load_run_model

    assert partial_timesteps(250, 6) == [250, 200, 150, 100, 50, 0]
    assert partial_timesteps(4, None) == [4, 3, 2, 1, 0]
    _, model, _ = load_run_model(ddpm_run, "cpu")
    assert t_start_for(model, 0.25) == 10  # tiny profile: 40 timesteps
    x = torch.rand(2, 1, 32, 32)
    a = diffusion_reconstruct(model, x, 10, 4, torch.Generator().manual_seed(0))
    b = diffusion_reconstruct(model, x, 10, 4, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= float(a.min()) and float(a.max()) <= 1
    c = diffusion_reconstruct(model, x, 10, 4, torch.Generator().manual_seed(0), sampler="ddim")
    assert c.shape == x.shape and torch.isfinite(c).all()
    with pytest.raises(ValueError):
        diffusion_reconstruct(model, x, 40, 4, None)


def test_detect_diffusion_end_to_end(ddpm_run):
    from medgen.anomaly import detect

    r = detect(ddpm_run, echo=lambda *_: None, noise_level=0.25, steps=5, map="abs")
    s = r["settings"]
    assert s["detector"] == "diffusion" and s["t_start"] == 10 and s["reverse_steps"] == 5 and s["T"] == 40
    assert 0 <= r["image"]["auroc"] <= 1 and 0 <= r["pixel"]["auroc"] <= 1
    assert (ddpm_run / "detect" / "test" / "figure.png").exists()


def test_diffusion_detector_averages_its_draws(ddpm_run, tmp_path):
    from medgen.anomaly import detect
    from medgen.anomaly.detectors.base import Settings
    from medgen.anomaly.detectors.diffusion import PartialDiffusion
    from medgen.anomaly.diffusion import diffusion_reconstruct
    from medgen.errors import UserError
    from medgen.sampling import load_run_model

    _, model, _ = load_run_model(ddpm_run, "cpu")
    x = np.random.default_rng(0).random((3, 1, 32, 32)).astype(np.float32)
    det = PartialDiffusion(model, Settings(noise_levels=(0.25,), steps=4, sampler="ddpm", draws=3, batch_size=8))
    got = det.reconstruct(x, 10, torch.Generator().manual_seed(5), "test")
    gen = torch.Generator().manual_seed(5)  # the same noise, drawn in the same order
    draws = [diffusion_reconstruct(model, torch.from_numpy(x), 10, 4, gen, "ddpm") for _ in range(3)]
    assert not torch.equal(draws[0], draws[1])  # each draw has its own noise
    np.testing.assert_allclose(got, (sum(draws) / 3).numpy(), rtol=1e-6, atol=1e-6)
    r = detect(ddpm_run, out=tmp_path / "d2", echo=lambda *_: None, noise_level=0.25, steps=3, draws=2)
    assert r["settings"]["draws"] == 2
    with pytest.raises(UserError, match="--draws"):
        detect(ddpm_run, out=tmp_path / "d0", echo=lambda *_: None, draws=0)


def test_diffusion_detector_averages_several_noise_levels(ddpm_run, tmp_path):
    from medgen.anomaly import detect, scoring
    from medgen.anomaly.detectors.base import Settings
    from medgen.anomaly.detectors.diffusion import PartialDiffusion
    from medgen.errors import UserError
    from medgen.sampling import load_run_model

    _, model, _ = load_run_model(ddpm_run, "cpu")
    x = np.random.default_rng(1).random((2, 1, 32, 32)).astype(np.float32)
    det = PartialDiffusion(model, Settings(noise_levels=(0.1, 0.25), steps=3, draws=1))
    assert det.t_starts == [4, 10]
    got = det.run(x, 7, "test").maps
    gen = torch.Generator().manual_seed(7)
    want = sum(scoring.error_map(x, det.reconstruct(x, t, gen, "ref"), "abs") for t in (4, 10)) / 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    r = detect(ddpm_run, out=tmp_path / "levels", echo=lambda *_: None, noise_level="0.1,0.25", steps=3, draws=1)
    assert r["settings"]["noise_level"] == [0.1, 0.25] and r["settings"]["t_start"] == [4, 10]
    with pytest.raises(UserError, match="--noise-level"):
        detect(ddpm_run, out=tmp_path / "bad", echo=lambda *_: None, noise_level="0.1,1.5")


def test_detector_choice_follows_declared_detectors():
    from medgen.anomaly.detectors import choose, names
    from medgen.errors import UserError

    class Recon:
        detectors = ("reconstruct", "model")

    class Pixel:
        detectors = ("diffusion",)

    class Features:
        detectors = ("patchcore", "padim")

    class Nothing:
        detectors = ()

    assert {"reconstruct", "model", "diffusion", "patchcore", "padim"} <= set(names())
    assert choose(Recon(), "auto") == "reconstruct"  # vae, vae-gan, ldm, conv-ae: their reconstruct()
    assert choose(Pixel(), "auto") == "diffusion"
    assert choose(Features(), "auto") == "patchcore" and choose(Features(), "padim") == "padim"
    with pytest.raises(UserError, match="no anomaly detector"):
        choose(Nothing(), "auto")
    with pytest.raises(UserError, match="does not apply to Recon runs; these do: reconstruct, model"):
        choose(Recon(), "diffusion")
    with pytest.raises(UserError, match="unknown --detector 'magic'"):
        choose(Recon(), "magic")


def test_a_registered_detector_is_found_by_name(monkeypatch):
    from medgen.anomaly import detectors

    monkeypatch.setitem(detectors.DETECTORS, "mine", "medgen.anomaly.detectors.own_map:OwnMap")

    class Mine:
        detectors = ("mine",)

    assert detectors.choose(Mine(), "auto") == "mine"
    assert detectors.detector_class("mine").name == "model"


def test_no_input_image_counting_as_normal_names_the_labels_and_suggests_normal(ae_run, lesions, tmp_path):
    from PIL import Image

    from medgen.anomaly import detect
    from medgen.data.dataset import PreparedDataset

    ds = PreparedDataset(lesions)
    for i, lab in enumerate(ds.index["label"].tolist()[:6]):
        sub = tmp_path / "in" / ("normal" if lab == "none" else "lesion")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.asarray(ds.images[i][0]) * 255).astype(np.uint8)).save(sub / f"{i}.png")
    # the run was trained with --subset label=none: no folder is called that, so every image counts as anomalous
    r = detect(ae_run, input=tmp_path / "in", out=tmp_path / "o", echo=lambda *_: None)
    assert r["image"]["auroc"] is None
    note = next(n for n in r["notes"] if "no input image counts as normal" in n)
    assert "labels found: lesion, normal" in note and "--normal normal" in note
    r = detect(ae_run, input=tmp_path / "in", out=tmp_path / "o2", echo=lambda *_: None, normal="normal")
    assert r["image"]["auroc"] is not None and not any("counts as normal" in n for n in r["notes"])


def test_noise_level_auto_picks_a_candidate_set_on_normals_only(ddpm_run, tmp_path):
    from medgen.anomaly import detect, tuning

    lines = []
    r = detect(ddpm_run, out=tmp_path / "auto", echo=lines.append, noise_level="auto", steps=2, draws=1)
    choice = r["settings"]["noise_level_choice"]
    assert tuple(choice["chosen"]) in tuning.NOISE_SETS and len(choice["candidates"]) == len(tuning.NOISE_SETS)
    best = max(c["synthetic_auroc"] for c in choice["candidates"])
    assert abs(choice["synthetic_auroc"] - best) < 1e-4
    levels = r["settings"]["noise_level"]
    assert sorted(np.atleast_1d(levels).tolist()) == sorted(choice["chosen"])
    scales = r["settings"]["level_scales"]
    assert len(scales) == len(choice["chosen"]) and all(v > 0 for v in scales)
    assert any("noise levels chosen on normal validation images" in line for line in lines)
    assert r["settings"]["tuning"]["applied"] is False  # auto scoring tuning is for feature detectors only


def test_tune_synthetic_on_a_reconstruction_run_records_its_choice(ae_run, tmp_path):
    from medgen.anomaly import detect, tuning
    from medgen.errors import UserError

    r = detect(ae_run, out=tmp_path / "tuned", echo=lambda *_: None, tune="synthetic")
    t = r["settings"]["tuning"]
    assert t["applied"] and tuning.Scoring(**t["chosen"]) in tuning.grid(32)
    for key in ("smooth", "score", "edge_margin"):
        assert r["settings"][key] == t["chosen"][key]
    assert t["synthetic_auroc"] >= t["synthetic_auroc_of_given_settings"]
    plain = detect(ae_run, out=tmp_path / "plain", echo=lambda *_: None)
    assert plain["settings"]["tuning"] == {"mode": "auto", "applied": False} and plain["settings"]["smooth"] == 3.0
    with pytest.raises(UserError, match="--tune"):
        detect(ae_run, out=tmp_path / "bad", echo=lambda *_: None, tune="sometimes")
    with pytest.raises(UserError, match="--edge-margin"):
        detect(ae_run, out=tmp_path / "bad", echo=lambda *_: None, edge_margin=-1)
    with pytest.raises(UserError, match="--noise-level auto needs the diffusion detector"):
        detect(ae_run, out=tmp_path / "bad", echo=lambda *_: None, noise_level="auto")


def test_detect_walks_a_rectified_flow_back_with_its_own_sampler(lesions, ddpm_run, tmp_path):
    from medgen.errors import UserError

    """An rflow run's diffusion detector defaults to the rflow sampler; a noise sampler is refused
    naming the run's own, and a noise run still defaults to ddim."""
    from medgen.anomaly import detect
    from medgen.training import train

    run = tmp_path / "rflow"
    train("brain-ddpm-anomaly", lesions, run, profile="tiny", subset=["label=none"], echo=lambda *_: None,
          overrides=["model.scheduler.objective=rflow", "sample.sampler=rflow", "evaluate.sweep=[]"])
    r = detect(run, echo=lambda *_: None, noise_level=0.25, steps=3, map="abs")
    assert r["settings"]["detector"] == "diffusion" and r["settings"]["sampler"] == "rflow"
    assert 0 <= r["image"]["auroc"] <= 1
    with pytest.raises(UserError, match="choose one of rflow, rflow-heun"):
        detect(run, out=tmp_path / "wrong", echo=lambda *_: None, sampler="ddim")
    noise = detect(ddpm_run, out=tmp_path / "noise", echo=lambda *_: None, noise_level=0.25, steps=3)
    assert noise["settings"]["sampler"] == "ddim"


def test_patch_wise_reconstruction(ddpm_run, tmp_path):
    from medgen.anomaly import detect
    from medgen.anomaly.diffusion import diffusion_reconstruct, patch_reconstruct
    from medgen.errors import UserError
    from medgen.sampling import load_run_model

    _, model, _ = load_run_model(ddpm_run, "cpu")
    x = torch.rand(2, 1, 32, 32)
    # one patch covering the image is exactly whole-image partial diffusion (same noise, deterministic ddim)
    whole = diffusion_reconstruct(model, x, 10, 4, torch.Generator().manual_seed(0), sampler="ddim")
    one = patch_reconstruct(model, x, 10, 4, torch.Generator().manual_seed(0), "ddim", patch=1.0)
    torch.testing.assert_close(one, whole)
    quarters = patch_reconstruct(model, x, 10, 4, torch.Generator().manual_seed(0), "ddim", patch=0.5)
    assert quarters.shape == x.shape and 0 <= float(quarters.min()) and float(quarters.max()) <= 1
    assert not torch.allclose(quarters, whole)  # each quarter rebuilt from the input around it
    r = detect(ddpm_run, out=tmp_path / "p", echo=lambda *_: None, noise_level=0.25, steps=3, draws=1, patch=0.5)
    assert r["settings"]["patch"] == 0.5 and 0 <= r["image"]["auroc"] <= 1
    with pytest.raises(UserError, match="--patch"):
        detect(ddpm_run, out=tmp_path / "p2", echo=lambda *_: None, patch=1.5)
