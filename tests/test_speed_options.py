"""The opt-in speed options (train.efficient_attention, train.channels_last, train.compile,
train.cpu_amp): each
leaves what the networks compute as it was (to float rounding) and the checkpoints loadable by a
plain model, and the run records which options it trained with."""
import json

import pytest
import torch

from medgen.config import resolve
from medgen.engine.checkpoint import load_checkpoint, save_checkpoint
from medgen.engine.speed import apply_speed_options, networks
from medgen.errors import UserError
from medgen.models.base import DataInfo, build_model

INFO = DataInfo(2, 1, (32, 32), ["a", "b", "c"])


def _model(*overrides):
    cfg = resolve("demo-brain-ldm", "tiny", ["data.builtin=null", *overrides])
    torch.manual_seed(0)
    return build_model(cfg, INFO).eval(), cfg


def _outputs(m):
    """The U-Net's noise prediction and the autoencoder's reconstruction of fixed inputs."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 32, 32, generator=g)
    z = torch.randn(4, 3, 8, 8, generator=g)
    with torch.no_grad():
        eps = m.denoiser.eps(z, torch.tensor([1, 20, 50, 99]), torch.tensor([0, 1, 2, 3]))
        recon = m.autoencoder.reconstruct(x)  # from the mean latent (forward draws one from q(z|x))
    return eps, recon


def test_nothing_is_on_by_default_and_the_run_says_so():
    m, cfg = _model()
    assert apply_speed_options(m, cfg.train, torch.device("cpu")) == {
        "autocast": "off (a CPU needs train.cpu_amp)", "efficient_attention": "off", "channels_last": "off", "compile": "off"}


def test_efficient_attention_switches_monais_attention_blocks_and_keeps_the_outputs():
    m, cfg = _model("train.efficient_attention=true")
    before = _outputs(m)  # building the model applies no option: only the trainer does
    on = apply_speed_options(m, cfg.train, torch.device("cpu"))
    blocks = [b for b in m.modules() if type(b).__name__ == "SABlock"]
    assert blocks and all(b.use_flash_attention for b in blocks)
    assert on["efficient_attention"] == f"on ({len(blocks)} attention blocks)"
    for a, b in zip(before, _outputs(m)):
        assert torch.allclose(a, b, atol=1e-5)


def test_channels_last_stores_conv_weights_nhwc_and_its_checkpoint_loads_into_a_plain_model(tmp_path):
    m, cfg = _model("train.channels_last=true")
    before = _outputs(m)
    assert apply_speed_options(m, cfg.train, torch.device("cpu"))["channels_last"] == "on"
    convs = [c.weight for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # the layout really changed
    for a, b in zip(before, _outputs(m)):
        assert torch.allclose(a, b, atol=1e-5)
    save_checkpoint(tmp_path / "ck", m, {"step": 0})
    plain, _ = _model()
    for p in plain.parameters():
        p.data.zero_()
    plain.load_state_dict(load_checkpoint(tmp_path / "ck", torch.device("cpu"))["model"])
    for a, b in zip(before, _outputs(plain)):
        assert torch.allclose(a, b, atol=1e-5)


def test_compile_compiles_each_network_in_place_so_the_state_dict_keys_stay(tmp_path, monkeypatch):
    # aot_eager: TorchDynamo's graph capture and AOT autograd, as Inductor gets them, without
    # generating C++ kernels (a minute of gcc on these cores; bench_speed_options.py runs Inductor)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    m, cfg = _model("train.compile=true", "train.compile_backend=aot_eager")
    keys = list(m.state_dict())
    before = _outputs(m)
    on = apply_speed_options(m, cfg.train, torch.device("cpu"))
    nets = list(networks(m))
    # the demo has no adversary: the autoencoder and the U-Net inside the Denoiser (which has no forward)
    assert nets == [m.autoencoder, m.denoiser.unet]
    assert all(n._compiled_call_impl is not None for n in nets)
    # medgen's kernel cache, not Inductor's /tmp default (which importing torch._dynamo would pin)
    assert on["compile"] == f"on (aot_eager, 2 networks; cache {tmp_path / 'medgen' / 'torchinductor'})"
    assert list(m.state_dict()) == keys
    for a, b in zip(before, _outputs(m)):
        assert torch.allclose(a, b, atol=1e-5)
    # a training step through the compiled networks
    m.train()
    from medgen.engine.context import StepContext

    ctx = StepContext(torch.device("cpu"), True, None, torch.Generator().manual_seed(0))
    ctx.optimizers = m.optimizers("autoencoder", cfg.stage("autoencoder"))
    batch = {"image": torch.rand(4, 1, 32, 32), "label": torch.tensor([0, 1, 2, 0]), "index": torch.arange(4)}
    losses = m.training_step(batch, "autoencoder", ctx)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_channels_last_in_3d_is_ndhwc():
    cfg = resolve("dbt-ddpm-3d", "tiny", ["train.channels_last=true"])
    torch.manual_seed(0)
    m = build_model(cfg, DataInfo(3, 1, (8, 16, 16), []))
    apply_speed_options(m, cfg.train, torch.device("cpu"))
    convs = [c.weight for c in m.modules() if isinstance(c, torch.nn.Conv3d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs)


def test_a_run_records_its_speed_options_in_metrics_json(tmp_path):
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.training import train

    prepare("builtin:mni152", tmp_path / "d", PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=24)))
    with pytest.raises(UserError, match="not a torch.compile backend"):  # refused before the run directory exists
        train("demo-brain-ldm", tmp_path / "d", tmp_path / "bad", profile="tiny",
              overrides=["train.compile=true", "train.compile_backend=nope"], echo=lambda *a: None)
    assert not (tmp_path / "bad").exists()
    train("demo-brain-ldm", tmp_path / "d", tmp_path / "r", profile="tiny",
          overrides=["train.efficient_attention=true", "train.channels_last=true"], echo=lambda *a: None)
    speed = json.loads((tmp_path / "r" / "metrics.json").read_text())["training"]["speed_options"]
    assert speed["efficient_attention"].startswith("on (") and speed["channels_last"] == "on"
    assert speed["compile"] == "off" and speed["autocast"] == "off (a CPU needs train.cpu_amp)"


def test_compile_says_what_is_missing_before_training_starts(monkeypatch):
    m, cfg = _model("train.compile=true", "train.compile_backend=no-such-backend")
    with pytest.raises(UserError, match="'no-such-backend' is not a torch.compile backend .*inductor"):
        apply_speed_options(m, cfg.train, torch.device("cpu"))
    m, cfg = _model("train.compile=true")
    monkeypatch.setattr("medgen.engine.speed.shutil.which", lambda name: None)
    with pytest.raises(UserError, match="needs a C\\+\\+ compiler"):
        apply_speed_options(m, cfg.train, torch.device("cpu"))
    assert all(n._compiled_call_impl is None for n in networks(m))  # refused before anything was compiled


def test_cpu_amp_autocasts_the_training_step_in_bf16(monkeypatch):
    # CPU autocast to bf16 runs on any CPU (emulated where it has no native bf16), so the autocast
    # path is tested on every machine; only the refusal below depends on the CPU model
    monkeypatch.setattr("medgen.engine.context.cpu_has_native_bf16", lambda: True)
    from medgen.engine.context import StepContext

    cfg = resolve("brain-ddpm-anomaly", "tiny", ["data.builtin=null", "train.cpu_amp=true"])
    torch.manual_seed(0)
    m = build_model(cfg, DataInfo(2, 1, (32, 32), [])).train()
    assert apply_speed_options(m, cfg.train, torch.device("cpu"))["autocast"] == "bf16 (CPU, train.cpu_amp)"
    dtypes = []
    conv = next(c for c in m.denoiser.unet.modules() if isinstance(c, torch.nn.Conv2d))
    conv.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    batch = {"image": torch.rand(4, 1, 32, 32), "label": torch.zeros(4, dtype=torch.long), "index": torch.arange(4)}
    scfg = cfg.stage("diffusion")
    for cpu_amp, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        ctx = StepContext(torch.device("cpu"), scfg.amp, None, torch.Generator().manual_seed(0), cpu_amp)
        ctx.stage, ctx.optimizers = "diffusion", m.optimizers("diffusion", scfg)
        before = [p.detach().clone() for p in m.denoiser.unet.parameters()]
        dtypes.clear()
        losses = m.training_step(batch, "diffusion", ctx)
        assert dtypes == [dtype]  # the U-Net's first conv ran in bf16 with cpu_amp, in fp32 without
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
        assert all(p.dtype == torch.float32 for p in m.denoiser.unet.parameters())  # the weights stay fp32
        assert any(not torch.equal(a, b) for a, b in zip(before, m.denoiser.unet.parameters()))  # and were stepped


def test_cpu_amp_is_refused_before_the_run_on_a_cpu_without_native_bf16(tmp_path, monkeypatch):
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.training import train

    monkeypatch.setattr("medgen.engine.context.cpu_has_native_bf16", lambda: False)
    prepare("builtin:mni152", tmp_path / "d", PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=24)))
    with pytest.raises(UserError, match="train.cpu_amp: this CPU has no native bf16 .*train.cpu_amp=false"):
        train("demo-brain-ldm", tmp_path / "d", tmp_path / "r", profile="tiny", overrides=["train.cpu_amp=true"],
              echo=lambda *a: None)
    assert not (tmp_path / "r").exists()


def test_families_that_train_in_fp32_say_so_instead_of_naming_an_autocast_they_do_not_use(monkeypatch):
    monkeypatch.setattr("medgen.engine.context.cpu_has_native_bf16", lambda: True)
    for preset in ("brain-tumor-wgan-gp", "vae-gan"):
        cfg = resolve(preset, "tiny", ["data.builtin=null", "train.cpu_amp=true"])
        m = build_model(cfg, DataInfo(2, 1, (32, 32), ["a", "b"]))
        assert apply_speed_options(m, cfg.train, torch.device("cpu"))["autocast"] == "off (this family trains in fp32)"
