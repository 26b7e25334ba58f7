import json

import numpy as np
import pytest
import torch

from medgen.data.prepare import PrepareOptions, prepare
from medgen.models.diffusion import Denoiser, SchedulerParams, UNetParams
from medgen.sampling import generate, load_run_model, sample
from medgen.training import train


def _oracle(den: Denoiser, x0: torch.Tensor):
    """An exact noise predictor for a known x0: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
    def eps(x, t, labels):
        abar = den.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()
    return eps


@pytest.mark.parametrize("sampler,steps", [("ddim", 10), ("ddpm", 20), ("ddpm", 50), ("ddim", 50)])
def test_samplers_recover_x0_with_an_exact_denoiser(sampler, steps):
    den = Denoiser(UNetParams(channels=[8, 8], attention_levels=[False, False], norm_num_groups=4, num_head_channels=8),
                   SchedulerParams(num_train_timesteps=50), 2, 1, 0, False, 0.0)
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    den.eps = _oracle(den, x0)
    gen = torch.Generator().manual_seed(0)
    out = den.sample((2, 1, 8, 8), None, sampler, steps, 1.0, gen, clip=(-1, 1))
    assert torch.allclose(out, x0, atol=1e-4)
    assert den.timesteps(steps)[0] == 49 and den.timesteps(steps)[-1] == 0 and len(den.timesteps(steps)) == steps


def _tiny_denoiser(**sched) -> Denoiser:
    return Denoiser(UNetParams(channels=[8, 8], attention_levels=[False, False], norm_num_groups=4, num_head_channels=8),
                    SchedulerParams(num_train_timesteps=50, **sched), 2, 1, 0, False, 0.0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_v_prediction_samplers_recover_x0_with_an_exact_velocity(sampler):
    den = _tiny_denoiser(prediction_type="v_prediction")
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    true_eps = _oracle(den, x0)

    def velocity(x, t, labels):  # v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho)
        abar = den.alphas_cumprod[t].view(-1, 1, 1, 1)
        return abar.sqrt() * true_eps(x, t, labels) - (1 - abar).sqrt() * x0

    den.net = velocity
    t = torch.tensor([3, 40])
    x = den.q_sample(x0, t, torch.randn(2, 1, 8, 8))
    assert torch.allclose(den.eps(x, t, None), true_eps(x, t, None), atol=1e-4)  # the samplers get the noise back
    out = den.sample((2, 1, 8, 8), None, sampler, 25, 1.0, torch.Generator().manual_seed(0), clip=(-1, 1))
    assert torch.allclose(out, x0, atol=1e-4)


class _Ctx:
    """The trainer context's random draws and autocast, fixed for a test."""

    def __init__(self, t):
        self.t, self.gen = t, torch.Generator().manual_seed(0)

    def randn(self, shape):
        return torch.randn(shape, generator=self.gen)

    def randint(self, high, shape):
        return self.t

    def rand(self, shape):
        return torch.rand(shape, generator=self.gen)

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights_the_loss_per_timestep(prediction):
    plain, weighted = _tiny_denoiser(prediction_type=prediction), _tiny_denoiser(prediction_type=prediction, snr_gamma=5.0)
    weighted.load_state_dict(plain.state_dict())
    t = torch.tensor([0, 49])  # nearly clean (SNR >> 5) and nearly pure noise (SNR << 5)
    abar = plain.alphas_cumprod[t]
    snr = abar / (1 - abar)
    expected = snr.clamp(max=5.0) / (snr if prediction == "epsilon" else snr + 1)
    assert torch.allclose(weighted.loss_weights(t), expected)
    assert plain.loss_weights(t) is None
    assert expected[0] < 0.05 and expected[1] > (0.99 if prediction == "epsilon" else 0.0)
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        loss_w, loss_u = weighted.training_loss(x0, None, _Ctx(t)), plain.training_loss(x0, None, _Ctx(t))
        noise = _Ctx(t).randn(x0.shape)  # the draw training_loss made
        err = (plain.net(plain.q_sample(x0, t, noise), t, None) - plain.target(x0, noise, t)) ** 2
    assert torch.allclose(loss_u, err.mean(), atol=1e-6)  # the default loss is unchanged
    assert torch.allclose(loss_w, (err.flatten(1).mean(1) * expected).mean(), atol=1e-6)


def test_classifier_free_guidance_mixes_conditional_and_null():
    den = Denoiser(UNetParams(channels=[8, 8], attention_levels=[False, False], norm_num_groups=4, num_head_channels=8),
                   SchedulerParams(num_train_timesteps=10), 2, 1, 3, True, 0.1)
    torch.manual_seed(0)
    for p in den.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 8, 8)
    y = torch.tensor([0, 2])
    tt = torch.full((2,), 5)
    cond = den.eps(x, tt, y)
    null = den.eps(x, tt, torch.full((2,), 3))
    assert not torch.allclose(cond, null)  # the label changes the prediction
    assert torch.allclose(den.guided_eps(x, 5, y, 1.0), cond, atol=1e-5)
    assert torch.allclose(den.guided_eps(x, 5, y, 0.0), null, atol=1e-5)
    assert torch.allclose(den.guided_eps(x, 5, y, 3.0), null + 3 * (cond - null), atol=1e-4)


def test_tiny_ldm_run_directory(ldm_run):
    for name in ("config.yaml", "data.json", "metrics.json", "status.json", "checkpoints/final/model.safetensors", "logs/metrics.jsonl"):
        assert (ldm_run / name).exists(), name
    lines = [json.loads(l) for l in (ldm_run / "logs/metrics.jsonl").read_text().splitlines()]
    assert {l["stage"] for l in lines} == {"autoencoder", "diffusion"}
    assert json.loads((ldm_run / "status.json").read_text())["state"] == "finished"
    assert list((ldm_run / "logs").glob("events.out.tfevents*"))


def test_sampling_is_deterministic_and_conditional(ldm_run):
    _, model, _ = load_run_model(ldm_run)
    a, la = generate(model, 4, None, "ddim", 5, 1.0, seed=3, batch_size=4)
    b, _ = generate(model, 4, None, "ddim", 5, 1.0, seed=3, batch_size=4)
    c, _ = generate(model, 4, None, "ddim", 5, 1.0, seed=4, batch_size=4)
    assert a.shape == (4, 1, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert list(la) == [0, 1, 2, 0]  # classes in turn
    fixed = torch.full((4,), 1)
    d, ld = generate(model, 4, fixed, "ddpm", 5, 2.0, seed=3, batch_size=2)
    assert list(ld) == [1, 1, 1, 1] and np.isfinite(d).all()


def test_sample_command_outputs(ldm_run, tmp_path):
    from PIL import Image

    res = sample(ldm_run, n=3, label="mass", steps=4, out=tmp_path / "s", echo=lambda *a: None)
    pngs = sorted((tmp_path / "s").glob("sample_*.png"))
    assert len(pngs) == 3 and all("_mass" in p.name for p in pngs)
    assert Image.open(pngs[0]).mode in ("I;16", "I")
    assert (tmp_path / "s/grid.png").exists() and (tmp_path / "s/histogram.png").exists()
    manifest = json.loads((tmp_path / "s/samples.json").read_text())
    assert manifest["steps"] == 4 and manifest["label"] == "mass"
    from medgen.errors import UserError

    with pytest.raises(UserError, match="--force"):
        sample(ldm_run, n=3, steps=4, out=tmp_path / "s", echo=lambda *a: None)
    with pytest.raises(UserError, match="exceeds"):
        sample(ldm_run, n=1, steps=10_000, out=tmp_path / "s2", echo=lambda *a: None)
    assert res["images"].shape[0] == 3


def test_dicom_export_is_marked_synthetic_without_phi(ldm_run, tmp_path):
    import pydicom

    sample(ldm_run, n=2, steps=3, fmt="dcm", out=tmp_path / "d", echo=lambda *a: None)
    f = sorted((tmp_path / "d").glob("*.dcm"))[0]
    ds = pydicom.dcmread(f)
    assert "DERIVED" in ds.ImageType and ds.PatientName == "SYNTHETIC" and "SYNTHETIC" in ds.ImageComments
    text = f.read_bytes()
    assert b"Doe^Jane" not in text and b"PID-12345" not in text
    assert ds.pixel_array.shape == (32, 32)


def test_finetune_init_from_starts_from_the_other_run(ldm_run, phantom, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "ft"
    train("mammo-roi-ldm", phantom, out, profile="tiny", init_from=ldm_run, subset=["cohort=beta"],
          overrides=["model.conditional=true", "train.stages.autoencoder.epochs=0", "train.stages.diffusion.epochs=0"], echo=lambda *a: None)
    a = load_file(str(ldm_run / "checkpoints/final/model.safetensors"))
    b = load_file(str(out / "checkpoints/final/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    data = json.loads((out / "data.json").read_text())
    assert data["subset"] == {"cohort": "beta"} and data["init_from"]["loaded"] == len(a)
    assert 0 < data["n_train"] < json.loads((ldm_run / "data.json").read_text())["n_train"]


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints/final/model.safetensors"))


@pytest.mark.parametrize("extra", [
    [],
    # rectified flow: its training times come from the trainer's generator, so a resumed run draws the same ones
    ["model.scheduler.objective=rflow", "sample.sampler=rflow"],
    # the cosine rate is a function of the step, so a resumed run continues on the same curve
    ["train.lr_schedule=cosine", "train.lr=0.001"],
], ids=["noise", "rflow", "cosine-rate"])
def test_resume_after_interruption_gives_the_same_weights(phantom, tmp_path, monkeypatch, extra):
    from medgen.models.ddpm import PixelDiffusion

    over = extra + ["train.epochs=3", "train.max_steps=100", "train.batch_size=8", "sample.steps=3", "model.spatial_dims=2"]
    train("dbt-ddpm-3d", phantom, tmp_path / "full", profile="tiny", overrides=over, echo=lambda *a: None)
    original = PixelDiffusion.on_epoch_start

    def interrupt(self, stage, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        original(self, stage, epoch)

    monkeypatch.setattr(PixelDiffusion, "on_epoch_start", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train("dbt-ddpm-3d", phantom, tmp_path / "cut", profile="tiny", overrides=over, echo=lambda *a: None)
    assert json.loads((tmp_path / "cut/status.json").read_text())["state"] == "interrupted"
    monkeypatch.setattr(PixelDiffusion, "on_epoch_start", original)
    train(None, None, tmp_path / "cut", resume=True, echo=lambda *a: None)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cut/status.json").read_text())["state"] == "finished"


def test_3d_ddpm_trains_and_writes_nifti(tmp_path):
    import nibabel as nib

    data = tmp_path / "v"
    from medgen.data.sources import SourceOptions

    prepare("builtin:mni152", data, PrepareOptions(size=(4, 16, 16), workers=1, source=SourceOptions(n=12)))
    train("dbt-ddpm-3d", data, tmp_path / "r", profile="tiny", echo=lambda *a: None)
    res = sample(tmp_path / "r", n=2, steps=3, echo=lambda *a: None)
    files = sorted((tmp_path / "r/samples").glob("*/sample_*.nii.gz"))
    assert len(files) == 2 and res["images"].shape == (2, 1, 4, 16, 16)
    assert nib.load(str(files[0])).shape == (16, 16, 4)
