"""Every registered model family, through the protocol only (as anomalib's model tests loop over its
models): built tiny from its preset's ``tiny`` profile, one training step per stage, sampling with
each declared sampler, a save/load round trip that gives the same samples for a seed, and
``reconstruct`` / ``anomaly_map`` / ``encode`` where the family declares them. A new family is
tested here by registering it (and shipping a preset, which every family needs anyway)."""
import json

import numpy as np
import pytest
import torch

from medgen import samplers
from medgen.config import load_preset, preset_names, resolve
from medgen.engine.checkpoint import load_checkpoint, save_checkpoint
from medgen.errors import UserError
from medgen.config import validate
from medgen.engine.context import StepContext
from medgen.models import registry
from medgen.models.base import DataInfo, build_model
from medgen.models.registry import FAMILIES, family_class
from medgen.sampling import load_run_model
from medgen.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 16


def _preset_of(family: str) -> str | None:
    """The first 2D preset of ``family`` (presets name their family in config.model)."""
    for name in preset_names():
        model = load_preset(name)["config"]["model"]
        if model["family"] == family and model.get("spatial_dims", 2) == 2:
            return name
    return None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions

    out = tmp_path_factory.mktemp("families") / "bl"
    prepare("builtin:brain-lesions", out, PrepareOptions(size=(SIZE, SIZE), workers=1, source=SourceOptions(n=16)))
    return out


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def trained(request, data, tmp_path_factory):
    """(family, run directory, model loaded from it) after one optimiser step per stage."""
    family = request.param
    preset = _preset_of(family)
    assert preset, f"family '{family}' has no 2D preset to take its tiny settings from"
    stages = family_class(family).stages
    one_step = ["train.epochs=1", "train.max_steps=1", "train.batch_size=4", "train.val_every=1"]
    one_step += [f"train.stages.{s}.{k}=1" for s in stages for k in ("epochs", "max_steps")]
    out = tmp_path_factory.mktemp("runs") / family
    overrides = [*one_step, "data.subset={}", "train.early_stopping_patience=null"]
    init_from = None
    if family_class(family).init_from_families:  # trained on top of another run: its preset's base, first
        base = load_preset(preset).get("base")
        assert base, f"preset '{preset}' of family '{family}' (which needs --init-from) names no base preset"
        init_from = out.parent / "base"
        train(base["preset"], data, init_from, profile="tiny", overrides=overrides, echo=lambda *a: None)
    train(preset, data, out, profile="tiny", overrides=overrides, init_from=init_from, echo=lambda *a: None)
    _, model, _ = load_run_model(out, device="cpu")
    return family, out, model


def _samples(model, sampler: str | None, seed: int = 0):
    extra = {"sampler": sampler} if sampler else {}
    if model.needs_masks:  # a mask-conditioned family samples from label maps: a square lesion of class 1
        masks = torch.zeros(2, 1, SIZE, SIZE, dtype=torch.long)
        masks[:, :, 4:10, 4:10] = 1
        extra["masks"] = masks
    return model.sample(2, steps=2 if sampler else None, generator=torch.Generator().manual_seed(seed), **extra)


def test_declared_capabilities_are_consistent(trained):
    family, _, model = trained
    assert set(model.samplers) <= set(samplers.names()), "declared samplers must be registered names"
    assert (model.num_timesteps is not None) == bool(model.samplers)  # iterative samplers walk timesteps
    # the reconstruction and model-score detectors need the methods they call
    assert model.can_reconstruct or "reconstruct" not in model.detectors
    assert model.can_score or "model" not in model.detectors
    assert isinstance(model.describe(), dict) and all(isinstance(n, str) for n in model.notes())


def test_one_training_step_per_stage(trained):
    _, run, model = trained
    lines = [json.loads(l) for l in (run / "logs/metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "event" not in l]
    assert [l["stage"] for l in steps] == list(model.stages)  # exactly one logged step per stage, in order
    assert all(np.isfinite(v) for l in steps for k, v in l.items() if k not in ("stage", "epoch", "step"))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_each_declared_sampler_gives_images_in_range_and_seeded(trained):
    _, _, model = trained
    if not model.can_sample:
        with pytest.raises(UserError):
            _samples(model, None)
        return
    for sampler in model.samplers or (None,):
        a, b, c = _samples(model, sampler), _samples(model, sampler), _samples(model, sampler, seed=1)
        assert a.shape == (2, model.info.channels, SIZE, SIZE)
        assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_save_load_round_trip_gives_the_same_samples(trained, tmp_path):
    _, run, model = trained
    save_checkpoint(tmp_path / "ckpt", model, {"step": 1})
    cfg = resolve(str(run / "config.yaml"))
    torch.manual_seed(123)  # a fresh model whose initial weights differ
    fresh = build_model(cfg, model.info)
    fresh.load_state_dict(load_checkpoint(tmp_path / "ckpt")["model"])
    fresh.eval()
    x = torch.rand(2, model.info.channels, SIZE, SIZE)
    if model.can_reconstruct:
        assert torch.equal(model.reconstruct(x), fresh.reconstruct(x))
    for sampler in (model.samplers or (None,)) if model.can_sample else ():
        assert torch.equal(_samples(model, sampler), _samples(fresh, sampler))


def test_reconstruct_anomaly_map_and_encode_where_declared(trained):
    _, _, model = trained
    x = torch.rand(2, model.info.channels, SIZE, SIZE)
    if model.can_reconstruct:
        r = model.reconstruct(x)
        assert r.shape == x.shape and torch.isfinite(r).all()
    if model.can_score:
        m = model.anomaly_map(x)
        assert m.shape == (2, 1, SIZE, SIZE) and torch.isfinite(m).all() and (m >= 0).all()
    if model.can_encode:
        y = torch.arange(2) % model.info.num_classes if model.conditional else None
        mu, logvar = model.encode(x, y)
        assert mu.shape == logvar.shape and mu.shape[0] == 2
        assert model.decode(mu, y).shape == x.shape
    if not (model.can_reconstruct or model.can_score or model.can_encode):
        with pytest.raises(NotImplementedError):
            model.reconstruct(x)


def test_the_documented_family_example_works(monkeypatch, tmp_path):
    from test_samplers import doc_example  # tests/ is on sys.path (pytest rootdir-relative imports)

    module, registration = doc_example("### Worked example: a per-pixel Gaussian")
    (tmp_path / "docs_gaussian.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "FAMILIES", dict(registry.FAMILIES))
    exec(registration.replace("medgen.models.gaussian", "docs_gaussian"), {"register": registry.register})
    with pytest.raises(UserError, match=r"model.min_sd: unknown key for family 'gaussian' \(did you mean 'model.min_std'\?\)"):
        validate({"model": {"family": "gaussian", "min_sd": 0.1}}, "test")
    cfg = validate({"model": {"family": "gaussian"}, "train": {"lr": 0.05}}, "test")
    model = build_model(cfg, DataInfo(2, 1, (8, 8), []))
    ctx = StepContext(torch.device("cpu"), False, None, torch.Generator().manual_seed(0))
    ctx.optimizers = model.optimizers("main", cfg.train)
    g = torch.Generator().manual_seed(0)
    batch = {"image": 0.6 + 0.05 * torch.randn(32, 1, 8, 8, generator=g), "label": torch.zeros(32, dtype=torch.long)}
    first = model.training_step(batch, "main", ctx)["nll"]
    for _ in range(100):
        last = model.training_step(batch, "main", ctx)["nll"]
    assert last < first - 0.5 and model.validation_step(batch, "main")["nll"] == pytest.approx(last, abs=0.05)
    x = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert abs(float(model.reconstruct(batch["image"]).mean()) - 0.6) < 0.05  # the learnt mean
    fresh = build_model(cfg, model.info)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.sample(4, generator=torch.Generator().manual_seed(0)), x)
    assert model.can_reconstruct and not model.samplers and "reconstruct" in model.detectors
