"""The sampler registry, and the pinned numbers: the samplers give what they gave before they moved
into ``medgen.samplers`` (values recorded from the in-model implementation, same seed)."""
import re
from pathlib import Path

import pytest
import torch

from medgen import samplers
from medgen.errors import UserError
from medgen.models.base import DataInfo
from medgen.models.ddpm import DDPMParams, PixelDiffusion
from medgen.models.ldm import LatentDiffusion, LDMParams
from medgen.samplers.base import Sampler

UNET = dict(channels=[8, 8], attention_levels=[False, False], norm_num_groups=4, num_head_channels=8)


def _tiny(cls, params_cls, **kw):
    torch.manual_seed(0)
    model = cls(params_cls.model_validate(kw), DataInfo(2, 1, (8, 8), ["a", "b"])).eval()
    with torch.no_grad():  # MONAI zero-initialises the U-Net's output: random weights make every step count
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.05)
    return model


@pytest.fixture(scope="module")
def models():
    return {
        "ddpm": _tiny(PixelDiffusion, DDPMParams, unet=UNET, scheduler=dict(num_train_timesteps=20), conditional=True),
        "ldm": _tiny(LatentDiffusion, LDMParams, unet=UNET, scheduler=dict(num_train_timesteps=20), conditional=True, adv_weight=0,
                     autoencoder=dict(channels=[4, 4], latent_channels=2, attention_levels=[False, False], norm_num_groups=4)),
    }


# family, sampler, guidance, steps -> (sum, sum of squares, flat values 5..8), recorded before the refactor
RECORDED = [
    ("ddpm", "ddpm", 1.0, 5, 93.33365765213966, 71.04794504813694, [0.463933, 0.004354, 0.047517, 0.808546]),
    ("ddpm", "ddpm", 2.0, None, 94.70048475265503, 70.71503888450275, [0.517372, 0.002141, 0.209233, 0.746728]),
    ("ddpm", "ddim", 1.0, 5, 92.70821249485016, 70.42396775815362, [0.667758, 0.15535, 0.015691, 1.0]),
    ("ddpm", "ddim", 2.0, None, 92.70804417133331, 70.4240352799711, [0.66776, 0.155351, 0.015691, 1.0]),
    ("ldm", "ddpm", 1.0, 5, 5.6614769119769335, 0.19077222941353522, [0.038887, 0.0421, 0.049903, 0.030414]),
    ("ldm", "ddpm", 2.0, None, 5.682243397459388, 0.19280915355852002, [0.039138, 0.042726, 0.049538, 0.028942]),
    ("ldm", "ddim", 1.0, 5, 5.6764124892652035, 0.19215388130137728, [0.037968, 0.041108, 0.048451, 0.030599]),
    ("ldm", "ddim", 2.0, None, 5.6764112170785666, 0.1921535617329611, [0.037968, 0.041108, 0.048451, 0.0306]),
]


@pytest.mark.parametrize("family,sampler,guidance,steps,total,squares,values", RECORDED)
def test_samplers_give_the_recorded_numbers(models, family, sampler, guidance, steps, total, squares, values):
    x = models[family].sample(3, steps=steps, generator=torch.Generator().manual_seed(7), sampler=sampler, guidance=guidance)
    x = x.double()
    assert float(x.sum()) == pytest.approx(total, abs=1e-6)
    assert float((x ** 2).sum()) == pytest.approx(squares, abs=1e-6)
    assert x.flatten()[5:9].tolist() == pytest.approx(values, abs=2e-6)


def test_registry_names_lookup_and_help():
    assert samplers.names() == ["ddpm", "ddim", "rflow", "rflow-heun"]
    assert samplers.names(drives="noise") == ["ddpm", "ddim"] and samplers.names(drives="velocity") == ["rflow", "rflow-heun"]
    assert samplers.help_text() == "ddpm | ddim; rflow models: rflow | rflow-heun"
    for name in samplers.names():
        s = samplers.get(name)
        assert isinstance(s, Sampler) and s.name == name and samplers.summary(name)
    with pytest.raises(UserError, match=r"unknown sampler 'dim' \(did you mean 'ddim'\?\); samplers: ddpm, ddim, rflow, rflow-heun"):
        samplers.get("dim")


def test_a_registered_sampler_is_usable_everywhere_by_name(models, monkeypatch):
    """One file + one registration: config validation and model sampling accept the new name."""
    from medgen.config import resolve

    monkeypatch.setitem(samplers.SAMPLERS, "x0", samplers.Registration("test_samplers:JumpToX0", "one jump to x_0"))
    cfg = resolve("mammo-roi-ldm", "tiny", ["sample.sampler=x0"])
    assert cfg.sample.sampler == "x0"
    out = models["ddpm"].sample(2, steps=3, generator=torch.Generator().manual_seed(0), sampler="x0")
    assert out.shape == (2, 1, 8, 8) and type(samplers.get("x0")).calls == 3  # one step per timestep
    with pytest.raises(UserError, match="sample.sampler"):
        resolve("mammo-roi-ldm", "tiny", ["sample.sampler=euler"])


class JumpToX0(Sampler):
    name = "x0"
    calls = 0

    def step(self, den, x, eps, t, t_prev, clip, generator):
        from medgen.samplers.base import abar, predict_x0

        type(self).calls += 1
        return predict_x0(x, eps, abar(den, t), clip)


def doc_example(heading: str) -> tuple[str, str]:
    """The module and the registration line printed under ``heading`` in docs/extending-models.md."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "extending-models.md").read_text()
    module, registration = re.findall(r"```python\n(.*?)```", text.split(heading, 1)[1], re.S)[:2]
    return module, registration


def test_the_documented_sampler_example_works(models, monkeypatch, tmp_path):
    module, registration = doc_example("### Worked example: DDIM with noise")
    (tmp_path / "docs_ddim_eta.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(samplers, "SAMPLERS", dict(samplers.SAMPLERS))
    monkeypatch.setattr(samplers, "_instances", {})
    exec(registration.replace("medgen.samplers.ddim_eta", "docs_ddim_eta"), {"register": samplers.register})
    model = models["ddpm"]
    assert model.samplers == ("ddpm", "ddim", "ddim-eta") and samplers.help_text() == "ddpm | ddim | ddim-eta; rflow models: rflow | rflow-heun"

    def run(name, seed):
        return model.sample(2, steps=4, generator=torch.Generator().manual_seed(seed), sampler=name)

    example = samplers.get("ddim-eta")
    monkeypatch.setattr(example, "eta", 0.0)
    assert torch.allclose(run("ddim-eta", 0), run("ddim", 0), atol=1e-5)  # eta = 0 is DDIM
    monkeypatch.setattr(example, "eta", 1.0)
    a, b = run("ddim-eta", 0), run("ddim-eta", 1)
    assert torch.isfinite(a).all() and not torch.allclose(a, b) and not torch.allclose(a, run("ddim", 0))


def test_the_docs_list_every_registered_sampler_with_its_summary():
    text = (Path(__file__).resolve().parents[1] / "docs" / "extending-models.md").read_text()
    rows = dict(re.findall(r"^\| `([\w-]+)` \| (.+?) \|$", text.split("The registered samplers today:", 1)[1], re.M))
    assert rows == {name: samplers.summary(name) for name in samplers.names()}


def test_network_evaluations_per_image_and_the_sweep_curve(tmp_path):
    from medgen.evaluation.sweep_figure import sweep_figure, x_axis

    assert [samplers.get(n).evaluations(10) for n in ("ddpm", "ddim", "rflow", "rflow-heun")] == [10, 10, 10, 19]
    assert samplers.get("rflow-heun").evaluations(1) == 1  # a single step is Euler
    rows = [{"sampler": s, "steps": k, "nfe": samplers.get(s).evaluations(k), "fid/domain": 10.0 / k,
             "intervals": {"fid/domain": {"ci": [5.0 / k, 20.0 / k]}}} for s in ("ddim", "rflow-heun") for k in (2, 5)]
    path = sweep_figure(rows, tmp_path / "sweep.png")
    assert path == tmp_path / "sweep.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert x_axis(rows) == "evaluations"
    # a guidance sweep at one number of steps is drawn against the guidance scale
    scales = [{"sampler": "ddim", "steps": 50, "nfe": 50, "guidance": g, "fid/domain": 10.0 / g} for g in (1.0, 2.0, 3.0)]
    assert x_axis(scales) == "guidance" and sweep_figure(scales, tmp_path / "g.png").stat().st_size > 0
    assert x_axis(scales + [{**scales[0], "steps": 25, "nfe": 25}]) == "evaluations"  # both vary: one line per scale
    assert sweep_figure(scales + [{**scales[0], "steps": 25, "nfe": 25}], tmp_path / "both.png").stat().st_size > 0
    assert sweep_figure([{"sampler": None, "steps": None, "fid/domain": 1.0}], tmp_path / "none.png") is None  # a GAN: no steps
    assert not (tmp_path / "none.png").exists()
