"""Rectified flow (``model.scheduler.objective: rflow``) and its samplers ``rflow`` / ``rflow-heun``."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

from medgen.config import resolve, validate
from medgen.errors import UserError
from medgen.models.base import DataInfo
from medgen.models.ddpm import DDPMParams, PixelDiffusion
from medgen.models.diffusion import Denoiser, SchedulerParams, UNetParams, flow_times, make_flow
from medgen.models.ldm import LatentDiffusion, LDMParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNET = dict(channels=[8, 8], attention_levels=[False, False], norm_num_groups=4, num_head_channels=8)


def _denoiser(spatial_dims=2, num_classes=0, conditional=False, **sched) -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(UNetParams(**UNET), SchedulerParams(num_train_timesteps=50, objective="rflow", **sched),
                    spatial_dims, 1, num_classes, conditional, 0.1)


def _randomise(model):
    """MONAI zero-initialises the U-Net's output layer: random weights make every step count."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.05)
    return model.eval()


def _family(cls, params_cls, **kw):
    torch.manual_seed(0)
    return _randomise(cls(params_cls.model_validate(kw), DataInfo(2, 1, (8, 8), ["a", "b"])))


def _exact_velocity(x0: torch.Tensor, T: int):
    """The true velocity field of the straight path to one known image: x_t = (1 - s) x0 + s n, s = t/T."""
    def net(x, t, labels):
        s = (t.float() / T).view(-1, *([1] * (x.dim() - 1)))
        noise = (x - (1 - s) * x0) / s
        return x0 - noise
    return net


class _Ctx:
    """The trainer context's random draws and autocast, fixed for a test."""

    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, shape):
        return torch.randn(shape, generator=self.generator)

    def rand(self, shape):
        return torch.rand(shape, generator=self.generator)

    def randint(self, high, shape):
        return torch.randint(0, high, shape, generator=self.generator)

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()


@pytest.mark.parametrize("sampler,steps", [("rflow", 1), ("rflow", 7), ("rflow-heun", 4)])
def test_samplers_follow_the_straight_path_to_x0_with_the_exact_velocity(sampler, steps):
    den = _denoiser()
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    den.net = _exact_velocity(x0, den.T)
    out = den.sample((2, 1, 8, 8), None, sampler, steps, 1.0, torch.Generator().manual_seed(0), clip=(-1, 1))
    assert torch.allclose(out, x0, atol=1e-4)  # a straight path: exact in any number of Euler steps


def test_the_time_grid_is_monais():
    den = _denoiser()
    flow = make_flow(den.sched)
    flow.set_timesteps(5)
    assert den.timesteps(5) == flow.timesteps.tolist() == [50, 40, 30, 20, 10]
    assert len(den.timesteps(None)) == 50 and den.timesteps(None)[0] == 50


def test_heun_costs_two_evaluations_per_step_but_the_last():
    den = _denoiser()
    calls = []
    net = _exact_velocity(torch.zeros(1, 1, 8, 8), den.T)
    den.net = lambda x, t, labels: calls.append(int(t[0])) or net(x, t, labels)
    den.sample((1, 1, 8, 8), None, "rflow-heun", 4, 1.0, torch.Generator().manual_seed(0))
    assert calls == [50, 38, 38, 25, 25, 12, 12]  # 2 * 4 - 1 evaluations, each end point evaluated once more
    calls.clear()
    den.sample((1, 1, 8, 8), None, "rflow", 4, 1.0, torch.Generator().manual_seed(0))
    assert calls == [50, 38, 25, 12]


@pytest.mark.parametrize("method", ["uniform", "logit-normal"])
def test_training_times_are_monais_draws_from_the_trainers_generator(method):
    flow = make_flow(SchedulerParams(num_train_timesteps=1000, objective="rflow", time_sampling=method))
    torch.manual_seed(3)
    monai_t = flow.sample_timesteps(torch.empty(64, 1))
    global_state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(3)
    ours = flow_times(flow, 64, gen)
    assert torch.equal(ours, monai_t)  # MONAI's definition, drawn from our generator
    assert torch.equal(torch.get_rng_state(), global_state)  # torch's global generator is left alone
    assert not torch.equal(flow_times(flow, 64, gen), ours)  # the generator moved on
    assert ours.dtype == torch.long and 0 <= int(ours.min()) and int(ours.max()) < 1000
    if method == "logit-normal":  # mass in the middle: the logit-normal(0, 1) median is 0.5
        assert 350 < float(ours.float().median()) < 650


def test_the_loss_targets_monais_velocity_and_decreases_on_a_toy_batch():
    den = _denoiser()
    x0 = torch.rand(8, 1, 8, 8) * 2 - 1
    noise, t = torch.randn(8, 1, 8, 8), torch.tensor([0, 10, 25, 49] * 2)
    assert torch.allclose(den.noised(x0, t, noise), den.flow.add_noise(x0, noise, t))
    assert torch.equal(den.target(x0, noise, t), x0 - noise)

    def val():
        return float(den.validation_loss(x0, None, torch.Generator().manual_seed(1)))

    before = val()
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)
    ctx = _Ctx()
    for _ in range(40):
        loss = den.training_loss(x0, None, ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert val() < 0.7 * before


def test_guidance_mixes_conditional_and_null_velocities():
    den = _randomise(_denoiser(num_classes=2, conditional=True))
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 0])
    tt = torch.full((3,), 20)
    cond, null = den.net(x, tt, y), den.net(x, tt, torch.full_like(y, den.null_label))
    assert torch.allclose(den.guided_velocity(x, 20, y, 3.0), null + 3.0 * (cond - null), atol=1e-5)
    assert torch.allclose(den.guided_velocity(x, 20, y, 1.0), cond, atol=1e-6)
    assert torch.allclose(den.guided_velocity(x, 20, None, 3.0), null, atol=1e-6)
    ctx = _Ctx()  # labels are dropped to the null class in training, as for the noise objective
    assert torch.isfinite(den.training_loss(x, y, ctx))


@pytest.fixture(scope="module")
def families():
    return {
        "ddpm": _family(PixelDiffusion, DDPMParams, unet=UNET, conditional=True,
                        scheduler=dict(num_train_timesteps=20, objective="rflow")),
        "ldm": _family(LatentDiffusion, LDMParams, unet=UNET, conditional=True, adv_weight=0,
                       scheduler=dict(num_train_timesteps=20, objective="rflow"),
                       autoencoder=dict(channels=[4, 4], latent_channels=2, attention_levels=[False, False], norm_num_groups=4)),
    }


@pytest.mark.parametrize("family", ["ddpm", "ldm"])
@pytest.mark.parametrize("sampler", ["rflow", "rflow-heun"])
def test_families_sample_in_range_deterministically_and_guidance_changes_the_images(families, family, sampler):
    model = families[family]
    assert model.samplers == ("rflow", "rflow-heun") and not model.can_inpaint

    def draw(seed, guidance=1.0):
        return model.sample(4, steps=4, generator=torch.Generator().manual_seed(seed), sampler=sampler, guidance=guidance)

    a = draw(0)
    assert a.shape == (4, 1, 8, 8) and float(a.min()) >= 0 and float(a.max()) <= 1 and float(a.std()) > 0
    assert torch.equal(a, draw(0)) and not torch.allclose(a, draw(1))
    assert not torch.allclose(a, draw(0, guidance=3.0))


@pytest.mark.parametrize("family", ["ddpm", "ldm"])
def test_a_noise_sampler_on_an_rflow_model_is_refused_naming_both(families, family):
    with pytest.raises(UserError, match=r"sampler 'ddim' walks a noise predictor, but this model was trained with "
                                        r"objective 'rflow' \(it predicts the velocity\): use rflow or rflow-heun"):
        families[family].sample(2, steps=3, sampler="ddim")


def test_an_rflow_sampler_on_a_noise_model_is_refused_naming_both():
    model = _family(PixelDiffusion, DDPMParams, unet=UNET, scheduler=dict(num_train_timesteps=20))
    assert model.samplers == ("ddpm", "ddim") and model.can_inpaint
    with pytest.raises(UserError, match=r"sampler 'rflow' walks a velocity predictor, but this model was trained with "
                                        r"objective 'diffusion' \(it predicts the noise\): use ddpm or ddim"):
        model.sample(2, steps=3, sampler="rflow")


def test_3d_rflow_trains_and_samples():
    den = Denoiser(UNetParams(**UNET), SchedulerParams(num_train_timesteps=20, objective="rflow"), 3, 1, 0, False, 0.0)
    x0 = torch.rand(2, 1, 4, 8, 8) * 2 - 1
    loss = den.training_loss(x0, None, _Ctx())
    loss.backward()
    assert torch.isfinite(loss)
    out = _randomise(den).sample((2, 1, 4, 8, 8), None, "rflow-heun", 3, 1.0, torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 4, 8, 8) and float(out.abs().max()) <= 1


def test_partial_reconstruct_walks_back_from_t_start(families):
    from medgen.anomaly.diffusion import diffusion_reconstruct

    model = families["ddpm"]
    x = torch.rand(2, 1, 8, 8)
    den = model.denoiser
    saved = den.net
    try:
        den.net = _exact_velocity(x * 2 - 1, den.T)  # the exact velocity back to x itself
        out = diffusion_reconstruct(model, x, 10, steps=4, generator=torch.Generator().manual_seed(0), sampler="rflow")
    finally:
        den.net = saved
    assert torch.allclose(out, x, atol=1e-4)
    with pytest.raises(ValueError, match="rflow, rflow-heun"):
        diffusion_reconstruct(model, x, 10, steps=4, sampler="ddpm")


def test_config_rejects_a_sampler_that_does_not_fit_the_objective_and_round_trips():
    with pytest.raises(UserError, match=r"sample\.sampler: 'ddim' walks a noise predictor, but model\.scheduler\.objective: "
                                        r"rflow trains one that predicts the velocity: use rflow or rflow-heun"):
        resolve("brain-ddpm-anomaly", "tiny", ["model.scheduler.objective=rflow"])
    with pytest.raises(UserError, match=r"evaluate\.sweep\[0\]\.sampler: 'ddpm'"):
        resolve("mammo-roi-ldm", "tiny", ["model.scheduler.objective=rflow", "sample.sampler=rflow",
                                          "evaluate.sweep=[{sampler: ddpm, steps: 5}]"])
    with pytest.raises(UserError, match="sample.sampler: 'rflow' walks a velocity predictor"):
        resolve("brain-ddpm-anomaly", "tiny", ["sample.sampler=rflow"])
    with pytest.raises(UserError, match="prediction_type"):
        resolve("brain-ddpm-anomaly", "tiny", ["model.scheduler.objective=rflow", "sample.sampler=rflow",
                                               "model.scheduler.prediction_type=v_prediction"])
    cfg = resolve("brain-ddpm-anomaly", "tiny", ["model.scheduler.objective=rflow", "sample.sampler=rflow-heun",
                                                 "model.scheduler.time_sampling=uniform"])
    back = validate(yaml.safe_load(cfg.to_yaml()), "config.yaml")
    assert back == cfg and back.model.params()["scheduler"]["objective"] == "rflow"
    assert back.model.params()["scheduler"]["time_sampling"] == "uniform" and back.sample.sampler == "rflow-heun"


RFLOW = ["model.scheduler.objective=rflow", "sample.sampler=rflow"]


@pytest.fixture(scope="module")
def rflow_run(phantom, tmp_path_factory):
    from medgen.training import train

    out = tmp_path_factory.mktemp("runs") / "rflow"
    train("mammo-roi-ldm", phantom, out, profile="tiny", overrides=RFLOW + ["model.conditional=true", "evaluate.sweep=[]"],
          echo=lambda *a: None)
    return out


def test_an_rflow_ldm_run_saves_loads_and_samples(rflow_run, tmp_path):
    from medgen.sampling import load_run_model, sample

    cfg, model, _ = load_run_model(rflow_run)
    assert model.denoiser.objective == "rflow" and model.samplers == ("rflow", "rflow-heun")
    res = sample(rflow_run, n=3, steps=3, seed=5, out=tmp_path / "a", echo=lambda *a: None)
    again = sample(rflow_run, n=3, steps=3, seed=5, out=tmp_path / "b", echo=lambda *a: None)
    assert res["images"].shape == (3, 1, 32, 32) and (res["images"] == again["images"]).all()
    with pytest.raises(UserError, match="objective 'rflow'"):
        sample(rflow_run, n=2, steps=3, sampler="ddim", out=tmp_path / "c", echo=lambda *a: None)


def test_finetune_from_a_noise_run_into_rflow(ldm_run, phantom, tmp_path):
    """--init-from copies the U-Net of a noise-objective run: the same network, a new objective."""
    from safetensors.torch import load_file

    from medgen.training import train

    out = tmp_path / "ft"
    train("mammo-roi-ldm", phantom, out, profile="tiny", init_from=ldm_run,
          overrides=RFLOW + ["model.conditional=true", "evaluate.sweep=[]", "train.stages.autoencoder.epochs=0",
                             "train.stages.diffusion.epochs=0"], echo=lambda *a: None)
    a = load_file(str(ldm_run / "checkpoints/final/model.safetensors"))
    b = load_file(str(out / "checkpoints/final/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# resume of an rflow run: tests/test_diffusion.py::test_resume_after_interruption_gives_the_same_weights[rflow]


def test_cli_refuses_the_wrong_sampler_with_exit_2(rflow_run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "medgen", "sample", str(rflow_run), "--sampler", "ddpm", "--n", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "sampler 'ddpm'" in r.stderr and "objective 'rflow'" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    h = subprocess.run([sys.executable, "-m", "medgen", "sample", "--help"], capture_output=True, text=True, timeout=300,
                       env={"COLUMNS": "400", **__import__("os").environ})
    assert "rflow-heun" in h.stdout


def test_mask_conditioned_diffusion_trains_and_samples_as_rflow():
    from medgen.models.mask_diffusion import MaskDDPMParams, MaskDiffusion

    model = _family(MaskDiffusion, MaskDDPMParams, unet=UNET, conditional=True, scheduler=dict(num_train_timesteps=20, objective="rflow"))
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:5, 2:5] = 1
    with model.denoiser.conditioned_on(masks):
        assert torch.isfinite(model.denoiser.training_loss(torch.rand(2, 1, 8, 8) * 2 - 1, torch.tensor([0, 1]), _Ctx()))
    out = model.sample(2, steps=3, sampler="rflow", masks=masks, guidance=2.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8) and model.samplers == ("rflow", "rflow-heun") and not model.can_inpaint
