"""GAN, WGAN-GP, VAE/CVAE and VAE-GAN families (S004, S001): the gradient penalty, conditioning, the
freeze schedule through the real trainer, latent interpolation, shapes/ranges, and every tiny preset
trained and sampled per class on a small built-in brain-lesions dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.data.prepare import PrepareOptions, prepare
from medgen.data.sources import SourceOptions
from medgen.engine.checkpoint import load_checkpoint
from medgen.engine.context import StepContext
from medgen.errors import UserError
from medgen.models.base import DataInfo
from medgen.models.gan_monitor import GANMonitor
from medgen.models.layers import blocks_layout, level_strides
from medgen.models.losses import gradient_penalty
from medgen.models.registry import family_class
from medgen.sampling import load_run_model, sample
from medgen.training import train

LABELS = ["glioma", "meningioma", "none", "pituitary"]
quiet = lambda *a, **k: None  # noqa: E731


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "bl"
    prepare("builtin:brain-lesions", out, PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=40)))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def tiny_run(lesions, runs):
    """A preset's tiny profile trained once per module (cached by preset name)."""
    done = {}

    def get(preset: str):
        if preset not in done:
            out = runs / f"tiny-{preset}"
            train(preset, lesions, out, profile="tiny", echo=quiet)
            done[preset] = out
        return done[preset]

    return get


@pytest.fixture(scope="module")
def vae_run(tiny_run):
    """The tiny unconditional VAE (brain-tumor-vae-pretrain), the source of the transfer test."""
    return tiny_run("brain-tumor-vae-pretrain")


def build(family: str, size=(32, 32), labels=LABELS, **params):
    cls = family_class(family)
    info = DataInfo(len(size), 1, tuple(size), list(labels))
    return cls(cls.Params.model_validate({"channels": [8, 16, 16], "latent_dim": 8, **params}), info)


def fake_ctx(model, seed=0, lr=1e-3):
    ctx = StepContext(torch.device("cpu"), False, None, torch.Generator().manual_seed(seed))
    ctx.optimizers = model.optimizers("main", type("T", (), {"lr": lr, "weight_decay": 0.0})())
    return ctx


def batch(size=(32, 32), n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand((n, 1, *size), generator=g), "label": torch.arange(n) % 4, "index": torch.arange(n)}


# --- gradient penalty -------------------------------------------------------------------------

def test_gradient_penalty_of_a_linear_critic_is_exact():
    # f(x) = w.x has gradient w everywhere: penalty (||w|| - 1)^2 whatever eps is
    w = torch.randn(1 * 8 * 8, generator=torch.Generator().manual_seed(1))
    w = 3.0 * w / w.norm()
    critic = lambda x: x.flatten(1) @ w  # noqa: E731
    real, fake = torch.rand(5, 1, 8, 8), torch.rand(5, 1, 8, 8)
    for rng in (None, torch.Generator().manual_seed(0)):
        penalty, norm = gradient_penalty(critic, real, fake, rng=rng)
        assert penalty.item() == pytest.approx(4.0, rel=1e-5)
        assert norm.item() == pytest.approx(3.0, rel=1e-5)
    # a unit-norm critic is not penalised
    penalty, _ = gradient_penalty(lambda x: x.flatten(1) @ (w / 3.0), real, fake)
    assert penalty.item() == pytest.approx(0.0, abs=1e-8)


def test_gradient_penalty_passes_labels_and_is_differentiable():
    # a per-class linear critic: norms 2 and 0.5 -> penalty mean((2-1)^2, (0.5-1)^2) = 0.625
    d = 16
    W = torch.zeros(2, d)
    W[0, 0], W[1, 1] = 2.0, 0.5
    W.requires_grad_(True)
    critic = lambda x, y: (x.flatten(1) * W[y]).sum(1)  # noqa: E731
    penalty, norm = gradient_penalty(critic, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    assert penalty.item() == pytest.approx(0.625, rel=1e-5)
    assert norm.item() == pytest.approx(1.25, rel=1e-5)
    penalty.backward()  # create_graph: the critic is trained through the penalty
    assert W.grad is not None and W.grad[0, 0].item() == pytest.approx(2 * (2 - 1) / 2, rel=1e-5)


def test_gradient_penalty_uses_the_step_context_generator():
    critic = lambda x: (x ** 2).flatten(1).sum(1)  # noqa: E731  (gradient depends on eps)
    real, fake = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    a = gradient_penalty(critic, real, fake, rng=fake_ctx(build("gan", loss="wgan-gp"), seed=7))[0]
    b = gradient_penalty(critic, real, fake, rng=fake_ctx(build("gan", loss="wgan-gp"), seed=7))[0]
    c = gradient_penalty(critic, real, fake, rng=fake_ctx(build("gan", loss="wgan-gp"), seed=8))[0]
    assert a.item() == b.item() and a.item() != c.item()


# --- conditioning -------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_conditional_gan_uses_the_label_in_generator_and_discriminator(loss):
    torch.manual_seed(0)
    m = build("gan", conditional=True, loss=loss).eval()
    z = torch.randn(1, 8).repeat(4, 1)
    x = m.generator(z, torch.arange(4))
    assert all(not torch.allclose(x[0], x[i], atol=1e-6) for i in (1, 2, 3))  # same z, different labels
    img = torch.rand(1, 1, 32, 32).repeat(4, 1, 1, 1)
    logits = m.discriminator(img, torch.arange(4))
    assert len(set(np.round(logits.detach().numpy(), 6))) == 4
    # the unconditional model has no label inputs and ignores labels given to sample()
    u = build("gan", conditional=False).eval()
    assert u.generator.embed is None and u.discriminator.label_map is None
    assert u.sample(2, labels=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0)).shape == (2, 1, 32, 32)


def test_class_conditional_batchnorm_starts_as_batchnorm_and_learns_a_scale_per_class():
    with pytest.raises(ValueError, match="cond_norm.*conditional"):
        build("gan", cond_norm=True)
    torch.manual_seed(0)
    plain = build("gan", conditional=True)
    m = build("gan", conditional=True, cond_norm=True)
    # the same parameter names apart from the norms: a checkpoint's other weights keep their keys
    def outside_norms(model):
        return {k for k in model.state_dict() if not k.startswith("generator.fc_norm.0")
                and not (k.startswith("generator.blocks.") and k.split(".")[3] == "1")}

    assert outside_norms(m) == outside_norms(plain)
    g = m.generator.eval()
    norm = g.blocks[0][1]
    x = torch.randn(4, norm.scale.weight.shape[1], 8, 8)
    ref = torch.nn.functional.batch_norm(x, norm.bn.running_mean, norm.bn.running_var, training=False)
    assert torch.allclose(norm(x, torch.arange(4)), ref, atol=1e-6)  # every class starts at scale 1, shift 0
    data = {"image": torch.rand(8, 1, 32, 32), "label": torch.arange(8) % 4, "index": torch.arange(8)}
    m.train()
    ctx = fake_ctx(m, lr=2e-3)
    for _ in range(3):
        m.training_step(data, "main", ctx)
    scales = g.blocks[0][1].scale.weight.detach()
    assert not torch.allclose(scales[0], scales[1])  # each class got its own scale
    z = torch.randn(1, 8).repeat(4, 1)
    out = m.generator.eval()(z, torch.arange(4))
    assert all(not torch.allclose(out[0], out[i], atol=1e-6) for i in (1, 2, 3))


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_ac_gan_class_head_learns_the_real_classes_and_is_not_told_the_label(loss):
    with pytest.raises(ValueError, match="conditional"):
        build("gan", aux_weight=1.0)
    torch.manual_seed(0)
    m = build("gan", conditional=True, loss=loss, aux_weight=1.0, n_critic=1)
    d = m.discriminator
    assert d.label_map is None and d.classifier is not None  # the class head cannot read the label off its input
    img = torch.rand(1, 1, 32, 32).repeat(4, 1, 1, 1)
    _, logit, cls = d.eval().heads(img, torch.arange(4))
    assert torch.allclose(cls[0], cls[1]) and cls.shape == (4, 4)  # same image, same class logits
    # class c: a bright square in quadrant c (a pattern: layer norm would remove a difference in brightness)
    labels = torch.arange(16) % 4
    images = torch.full((16, 1, 32, 32), 0.2)
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 16 * (c // 2):16 * (c // 2) + 16, 16 * (c % 2):16 * (c % 2) + 16] = 0.9
    data = {"image": images, "label": labels, "index": torch.arange(16)}
    ctx = fake_ctx(m, lr=2e-3)
    m.train()
    logs = [m.training_step(data, "main", ctx) for _ in range(80)]
    assert {"d_class_loss", "g_class_loss"} <= set(logs[0])
    first, last = (np.mean([r["d_class_loss"] for r in part]) for part in (logs[:10], logs[-10:]))
    assert last < 0.5 * first
    assert "class_acc_fake" in m.eval().validation_step(data, "main")


def test_mode_seeking_term_pairs_two_noises_of_one_class_and_spreads_them():
    from medgen.models.gan import mode_seeking_loss, real_spread, standardised

    torch.manual_seed(0)
    same = torch.rand(1, 1, 8, 8).repeat(8, 1, 1, 1)
    varied = torch.rand(8, 1, 8, 8)
    assert real_spread(same, None) == 0
    assert real_spread(0.5 * same + 0.2 * torch.arange(8.0).view(8, 1, 1, 1), None) < 1e-3  # brightness and contrast do not count
    assert abs(float(real_spread(varied, None)) - 2 / 3 ** 0.5) < 0.1  # |u - v| / std of two uniforms: (1/3) * sqrt(12)
    labels = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])
    twins = varied.clone()
    twins[1] = twins[0]
    assert real_spread(twins, labels) == 0  # only the one same-class pair counts
    assert real_spread(varied, torch.arange(8)) is None  # no two of one class
    spread = real_spread(varied, None)
    assert float(mode_seeking_loss(same, spread)) == pytest.approx(1.0)  # one image for every z
    assert float(mode_seeking_loss(varied.flip(0), spread)) < 0.2
    assert float(mode_seeking_loss(varied, 0.5 * spread)) == 0  # more varied than the target: no push
    assert torch.allclose(standardised(3 * varied + 1), standardised(varied), atol=1e-2)
    torch.manual_seed(0)
    m = build("gan", conditional=True, loss="hinge", mode_seeking=1.0)
    seen = []
    m.generator.register_forward_hook(lambda mod, args, out: seen.append(args[1].clone()))
    data = {"image": torch.rand(8, 1, 32, 32), "label": torch.tensor([0, 1, 2, 3, 3, 2, 1, 0]), "index": torch.arange(8)}
    ctx = fake_ctx(m)
    m.train()
    logs = [m.training_step(data, "main", ctx) for _ in range(30)]
    assert torch.equal(seen[-1], torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))  # the generator step's labels: halves paired
    assert all(np.isfinite(r["mode_seeking"]) for r in logs)
    z = torch.randn(16, 8)
    spread = lambda mdl: float(mdl.generator.eval()(z, torch.zeros(16, dtype=torch.long)).detach().std(0).mean())  # noqa: E731
    torch.manual_seed(0)
    plain = build("gan", conditional=True, loss="hinge")
    ctx = fake_ctx(plain)
    plain.train()
    for _ in range(30):
        plain.training_step(data, "main", ctx)
    assert spread(m) > 1.5 * spread(plain)  # the term keeps the images of one class apart


def test_cvae_class_prior_learns_a_mean_per_class_and_samples_around_it():
    with pytest.raises(ValueError, match="class_prior.*conditional"):
        build("vae", class_prior=True)
    torch.manual_seed(0)
    m = build("vae", conditional=True, class_prior=True)
    assert torch.count_nonzero(m.prior_mean.weight) == 0  # starts as the plain N(0, I) prior
    # the KL is to N(m_y, I): zero for a posterior equal to the class's prior
    m.prior_mean.weight.data = torch.randn(4, 8)
    y = torch.arange(4)
    assert m._kl(m.prior_mean(y), torch.zeros(4, 8), y).item() == pytest.approx(0.0, abs=1e-6)
    assert m._kl(torch.zeros(4, 8), torch.zeros(4, 8), y).item() > 1.0
    # class c's images: a bright quadrant; the prior means move apart with training
    m.prior_mean.weight.data.zero_()
    images = torch.full((16, 1, 32, 32), 0.2)
    labels = torch.arange(16) % 4
    for i, c in enumerate(labels.tolist()):
        images[i, 0, 16 * (c // 2):16 * (c // 2) + 16, 16 * (c % 2):16 * (c % 2) + 16] = 0.9
    ctx = fake_ctx(m, lr=1e-2)
    m.train()
    for _ in range(30):
        m.training_step({"image": images, "label": labels, "index": torch.arange(16)}, "main", ctx)
    means = m.prior_mean.weight.detach()
    assert torch.cdist(means, means)[~torch.eye(4, dtype=bool)].min() > 0.05
    # sampling decodes z + m_y
    m.eval()
    z = torch.randn(4, 8)
    assert torch.allclose(m.from_latent(z, y), m.decode(z + means[y], y))
    val = m.validation_step({"image": images, "label": labels}, "main")  # its KL is to the class prior too
    with torch.no_grad():
        kl = float(m._kl(*m.encode(images, labels), labels))
    assert val["kl"] == pytest.approx(kl, rel=1e-5)


@pytest.mark.parametrize("family", ["vae", "vae-gan"])
def test_conditional_vae_uses_the_label_in_encoder_and_decoder(family):
    torch.manual_seed(0)
    m = build(family, conditional=True).eval()
    z = torch.randn(1, 8).repeat(4, 1)
    x = m.decode(z, torch.arange(4))
    assert all(not torch.allclose(x[0], x[i], atol=1e-6) for i in (1, 2, 3))
    img = torch.rand(1, 1, 32, 32).repeat(4, 1, 1, 1)
    mu, _ = m.encode(img, torch.arange(4))
    assert not torch.allclose(mu[0], mu[1])
    with pytest.raises(ValueError, match="labels"):
        m.encode(img)
    # reconstruct without labels picks, per image, the class that reconstructs it best
    rec = m.reconstruct(img[:2])
    with torch.no_grad():
        best = min((m.decode(m.encode(img[:1], torch.tensor([c]))[0], torch.tensor([c])) for c in range(4)),
                   key=lambda r: float((r - img[:1]).abs().mean()))
    assert torch.allclose(rec[0], best[0], atol=1e-6)


# --- shapes, ranges, training steps per family and size -------------------------------------------

FAMILIES = [("gan", {"conditional": True}), ("gan", {"loss": "wgan-gp", "n_critic": 2}),
            ("gan", {"conditional": True, "loss": "hinge", "spectral_norm": True, "projection": True, "disc_norm": "none",
                     "diffaugment": ["translation", "cutout", "brightness"], "r1_weight": 1.0}),
            ("gan", {"upsample": "resize", "disc_norm": "batch", "dropout": 0.0}),
            ("vae", {"conditional": True, "block": "residual"}), ("vae", {"block": "skip", "blocks_per_level": [2, 1], "input_noise": 0.1}),
            ("vae-gan", {"conditional": True})]


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("family,params", FAMILIES, ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()))
def test_shapes_ranges_and_one_training_step(family, params, size):
    m = build(family, (size, size), **params)
    ctx = fake_ctx(m)
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    out = m.training_step(batch((size, size)), "main", ctx)
    assert out and all(np.isfinite(v) for v in out.values())
    assert any(not torch.equal(before[k], v) for k, v in m.state_dict().items())  # something was trained
    m.eval()
    x = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, size, size) and float(x.min()) >= 0 and float(x.max()) <= 1
    val = m.validation_step(batch((size, size)), "main")
    assert all(np.isfinite(v) for v in val.values())
    if m.can_reconstruct:
        r = m.reconstruct(batch((size, size))["image"])
        assert r.shape == (4, 1, size, size) and float(r.min()) >= 0 and float(r.max()) <= 1


def test_diffaugment_shifts_whole_pixels_cuts_a_box_and_passes_gradients():
    from medgen.models.diffaugment import diff_augment

    ctx = fake_ctx(build("gan"))
    x = torch.rand(6, 1, 32, 32, requires_grad=True)
    shifted = diff_augment(x, ["translation"], ctx)
    for i in range(6):  # each image is its own shifted by whole pixels (at most 4 = 32 / 8), zero-filled
        found = any(torch.equal(torch.roll(x[i], (dy, dx), (1, 2))[:, max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)],
                                shifted[i][:, max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)])
                    for dy in range(-4, 5) for dx in range(-4, 5))
        assert found
    cut = diff_augment(x, ["cutout"], ctx)
    zeroed = (cut == 0).flatten(1).sum(1)
    assert bool(((zeroed >= 8 * 8) & (zeroed <= 16 * 16)).all())  # a half-side box, clipped at the border
    diff_augment(x, ["translation", "cutout", "brightness"], ctx).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    vol = diff_augment(torch.rand(2, 1, 8, 16, 16), ["translation", "cutout"], ctx)
    assert vol.shape == (2, 1, 8, 16, 16)


def test_gan_logs_and_3d_volumes():
    m = build("gan", loss="wgan-gp", n_critic=1)
    out = m.training_step(batch(), "main", fake_ctx(m))
    assert {"g_loss", "d_loss", "wasserstein", "grad_norm"} <= set(out)
    b = build("gan", conditional=True)
    assert {"g_loss", "d_loss", "acc_real", "acc_fake", "warn_d_wins"} <= set(b.training_step(batch(), "main", fake_ctx(b)))
    for family in ("gan", "vae", "vae-gan"):  # spatial_dims 3: same code, Conv3d
        v = build(family, (8, 16, 16), conditional=True)
        v.training_step(batch((8, 16, 16)), "main", fake_ctx(v))
        assert v.eval().sample(2).shape == (2, 1, 8, 16, 16)


@pytest.mark.parametrize("size,levels", [(16, 2), (32, 3), (64, 4), (128, 5)])
def test_depth_follows_image_size(size, levels):
    assert len(level_strides((size, size))) == levels
    m = build("gan", (size, size), channels=[4, 8])
    assert len(m.generator.blocks) == levels and len(m.discriminator.blocks) == levels
    assert m.eval().sample(1).shape == (1, 1, size, size)


def test_vgg_variants_count_conv_blocks():
    assert blocks_layout(None, 13, 5) == [2, 2, 3, 3, 3]
    assert blocks_layout(None, 16, 5) == [2, 2, 4, 4, 4]
    for vgg in (13, 16, 19):
        assert sum(blocks_layout(None, vgg, 4)) == vgg  # folded into fewer levels, same count
        m = build("vae", (64, 64), vgg=vgg, channels=[4, 8, 8, 8])
        n_convs = sum(1 for k, p in m.encoder.convs.named_parameters() if p.dim() == 4)
        assert n_convs == vgg


def test_wgan_gp_rejects_batchnorm_critic():
    from medgen.config import resolve

    with pytest.raises(UserError, match="disc_norm"):
        resolve("brain-tumor-wgan-gp", "tiny", ["model.disc_norm=batch"])


def test_monitor_warns_once_when_the_discriminator_wins(capsys):
    mon = GANMonitor(patience=3)
    flags = [mon.check("d_wins", True, "discriminator wins") for _ in range(5)]
    assert flags == [0.0, 0.0, 1.0, 1.0, 1.0] and "d_wins" in mon.warnings
    assert mon.check("d_wins", False, "discriminator wins") == 0.0
    assert mon.diverging({"g_loss": float("nan")}, 1e3) == 1.0 and "nonfinite" in mon.warnings
    assert capsys.readouterr().err.count("discriminator wins") == 1
    # a GAN whose discriminator tells real from generated perfectly is flagged (the model keeps the message)
    m = build("gan", conditional=True, warn_patience=3)
    b = batch(n=8)

    def perfect(x, labels=None):
        sign = 1.0 if x.data_ptr() == b["image"].data_ptr() else -1.0
        return 20.0 * sign + 0.0 * m.discriminator.head.bias.sum() + 0.0 * x.flatten(1).sum(1)

    m.discriminator.forward = perfect
    m.discriminator.heads = lambda x, labels=None: ([], perfect(x, labels), None)
    ctx = fake_ctx(m)
    flags = [m.training_step(b, "main", ctx)["warn_d_wins"] for _ in range(4)]
    assert flags == [0.0, 0.0, 1.0, 1.0] and "d_wins" in m.warnings


def test_monitor_flags_mode_collapse_within_each_class_checking_every_tenth_step():
    mon = GANMonitor(patience=20)  # judged after 80 steps, on every 10th; 2 collapsed checks in a row warn
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(8, 1, 8, 8, generator=gen)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    varied = torch.rand(8, 1, 8, 8, generator=gen)
    one_per_class = torch.cat([varied[:1].expand(4, -1, -1, -1), varied[4:5].expand(4, -1, -1, -1)])
    assert [mon.collapse(real, varied, labels) for _ in range(120)] == [0.0] * 120  # a varied batch never
    # the same image for each class: distinct across classes, no spread within one
    flags = [mon.collapse(real, one_per_class, labels) for _ in range(30)]
    assert flags == [0.0] * 9 + [0.0] + [0.0] * 9 + [1.0] * 11 and "mode_collapse" in mon.warnings
    assert mon.last_diversity == 0.0
    assert GANMonitor(patience=20).collapse(real, one_per_class, None) == 0.0  # not judged in the first 80 steps
    blind = GANMonitor(patience=1)
    assert [blind.collapse(real, one_per_class, None) for _ in range(20)][-1] == 0.0  # across classes it varies


# --- the freeze schedule and the transfer protocol, through the real trainer -------------------

def test_cvae_transfer_freezes_conv_layers_then_unfreezes(lesions, runs, vae_run):
    out = runs / "cvae-tl"
    train("brain-tumor-cvae-transfer", lesions, out, profile="tiny", init_from=vae_run, echo=quiet)
    src = load_checkpoint(vae_run / "checkpoints" / "final")["model"]
    info = json.loads((out / "data.json").read_text())["init_from"]
    assert sorted(info["skipped"]) == ["decoder.dense.0.weight", "encoder.dense.0.weight"]  # the label-dependent layers
    steps = sorted(p for p in (out / "checkpoints").glob("step-*"))
    assert len(steps) == 2  # one step per epoch (32 training items, batch 32)
    after_frozen = load_checkpoint(steps[0])["model"]
    after_unfrozen = load_checkpoint(steps[1])["model"]
    conv = [k for k in src if k.startswith(("encoder.convs.", "decoder.convs."))]
    assert conv and any(k.endswith("running_mean") for k in conv)
    for k in conv:  # frozen epoch: weights and batch-norm statistics exactly as loaded
        assert torch.equal(after_frozen[k], src[k]), k
    assert not torch.equal(after_frozen["encoder.dense.0.weight"], after_unfrozen["encoder.dense.0.weight"])
    assert any(not torch.equal(after_unfrozen[k], src[k]) for k in conv if "running" not in k)  # unfrozen epoch trains them
    model = load_run_model(out)[1]
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_schedule_on_the_model():
    m = build("vae", conditional=True, freeze=["encoder.convs"], freeze_epochs=2)
    names = [n for n, _ in m.named_parameters() if n.startswith("encoder.convs.")]
    for epoch, frozen in ((0, True), (1, True), (2, False)):
        m.on_epoch_start("main", epoch)
        assert all(p.requires_grad is not frozen for n, p in m.named_parameters() if n in names)
        assert all(p.requires_grad for n, p in m.named_parameters() if n not in names)
    with pytest.raises(UserError, match="names no parameters"):
        build("vae", freeze=["encoder.nothing"], freeze_epochs=1)


# --- interpolation -------------------------------------------------------------------------------

def test_interpolation_endpoints_are_the_reconstructions(vae_run, lesions):
    from medgen.data.dataset import PreparedDataset
    from medgen.interpolation import interpolate

    ds = PreparedDataset(lesions)
    a, b = ds.index["id"].iloc[0], ds.index["id"].iloc[1]
    res = interpolate(vae_run, a, b, n=5, echo=quiet)
    imgs = res["images"]
    assert imgs.shape == (5, 1, 32, 32) and res["t"][0] == 0.0 and res["t"][-1] == 1.0
    _, model, _ = load_run_model(vae_run)
    xa = torch.from_numpy(np.array(ds.images[0]))[None]
    xb = torch.from_numpy(np.array(ds.images[1]))[None]
    assert np.allclose(imgs[0], model.reconstruct(xa).numpy()[0], atol=1e-5)
    assert np.allclose(imgs[-1], model.reconstruct(xb).numpy()[0], atol=1e-5)
    assert not np.allclose(imgs[2], imgs[0])
    out = vae_run / "samples" / f"interpolate-{a}-{b}"
    assert (out / "interpolation.png").stat().st_size > 0 and len(list(out.glob("interp_*.png"))) == 5
    from PIL import Image

    assert Image.open(out / "interp_00.png").mode.startswith("I")  # 16-bit
    with pytest.raises(UserError, match="already exists"):
        interpolate(vae_run, a, b, n=5, echo=quiet)
    interpolate(vae_run, a, b, n=3, force=True, echo=quiet)
    assert len(list(out.glob("interp_*.png"))) == 3
    # an image file works as an endpoint too
    from medgen.data.export import write_png

    write_png(lesions.parent / "b.png", np.array(ds.images[1]))
    res = interpolate(vae_run, a, str(lesions.parent / "b.png"), n=2, echo=quiet)
    assert np.allclose(res["images"][-1], imgs[-1], atol=2e-3)  # 16-bit PNG round trip
    with pytest.raises(UserError, match="neither"):
        interpolate(vae_run, "no-such-id", b, echo=quiet)



def test_an_interpolation_folder_another_process_is_writing_is_refused(vae_run, lesions, tmp_path):
    from medgen.data.dataset import PreparedDataset
    from medgen.fsio import acquire_lock
    from medgen.interpolation import interpolate

    ds = PreparedDataset(lesions)
    a, b = ds.index["id"].iloc[0], ds.index["id"].iloc[1]
    with acquire_lock(tmp_path / ".i.lock", "interpolation folder"):
        with pytest.raises(UserError, match="interpolation folder .* is in use by another medgen process"):
            interpolate(vae_run, a, b, n=2, out=tmp_path / "i", echo=lambda *_: None)
    assert not (tmp_path / "i").exists()
    assert interpolate(vae_run, a, b, n=2, out=tmp_path / "i", echo=lambda *_: None)["out"] == str(tmp_path / "i")

def test_interpolation_with_a_cvae_uses_the_label_of_a(lesions, tiny_run):
    from medgen.data.dataset import PreparedDataset
    from medgen.interpolation import interpolate

    out = tiny_run("brain-tumor-cvae")
    ds = PreparedDataset(lesions)
    res = interpolate(out, ds.index["id"].iloc[0], ds.index["id"].iloc[1], n=4, echo=quiet)
    lab = ds.index["label"].iloc[0]
    assert res["label"] == lab and res["label_source"] == "label of A"
    _, model, _ = load_run_model(out)
    y = torch.tensor([LABELS.index(lab)])
    rec = model.reconstruct(torch.from_numpy(np.array(ds.images[0]))[None], y)
    assert np.allclose(res["images"][0], rec.numpy()[0], atol=1e-5)
    res2 = interpolate(out, ds.index["id"].iloc[0], ds.index["id"].iloc[1], n=4, label="none", force=True, echo=quiet)
    assert res2["label"] == "none" and not np.allclose(res2["images"], res["images"])


def test_interpolation_refuses_families_that_cannot_encode(tiny_run):
    from medgen.interpolation import interpolate

    with pytest.raises(UserError, match="cannot interpolate"):
        interpolate(tiny_run("brain-tumor-cgan"), "a", "b", echo=quiet)


# --- every tiny preset trains and samples per class ------------------------------------------

PRESETS = ["brain-tumor-cgan", "brain-tumor-wgan-gp", "brain-tumor-cwgan-gp", "brain-tumor-cvae", "vae-gan"]


@pytest.mark.parametrize("preset", PRESETS)
def test_tiny_preset_trains_and_samples(preset, tiny_run):
    out = tiny_run(preset)
    log = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert any("g_loss" in r or "loss" in r for r in log)
    res = sample(out, n=8, echo=quiet)
    imgs = res["images"]
    assert imgs.shape == (8, 1, 32, 32) and imgs.min() >= 0 and imgs.max() <= 1
    _, model, _ = load_run_model(out)
    if model.conditional:
        assert [LABELS[i] for i in res["labels"]] == LABELS * 2  # classes in turn
        assert not np.allclose(imgs[0], imgs[1])
        one = sample(out, n=3, label="pituitary", echo=quiet)
        assert list(one["labels"]) == [3, 3, 3]
        assert sorted(p.name for p in (out / "samples").glob("*pituitary*/sample_*.png"))[0].endswith("_pituitary.png")
        # --each-label: every class from the same seed, so each row is what --label CLASS gives
        each = sample(out, n=3, each_label=True, echo=quiet)
        assert list(each["labels"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        assert np.array_equal(each["images"][9:], one["images"])
        assert not np.allclose(each["images"][0], each["images"][9])  # same z, another label
    else:
        assert res["labels"] is None
        with pytest.raises(UserError, match="not class-conditional"):
            sample(out, n=2, label="glioma", echo=quiet)
        with pytest.raises(UserError, match="each-label"):
            sample(out, n=2, each_label=True, echo=quiet)


def test_cli_trains_and_samples_the_tiny_cwgan(lesions, runs):
    from medgen.cli import main

    out = runs / "cli-cwgan"
    for argv in (["train", "brain-tumor-cwgan-gp", "--profile", "tiny", "--data", str(lesions), "--out", str(out),
                  "--set", "train.max_steps=2"],
                 ["sample", str(out), "--n", "4", "--label", "glioma"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code in (0, None)
    grids = list((out / "samples").glob("*glioma*/grid.png"))
    assert grids and len(list(grids[0].parent.glob("sample_*_glioma.png"))) == 4


def test_generator_floor_margin_reaches_exact_zero_and_keeps_gradients_above_it():
    from medgen.models.gan_networks import Generator

    torch.manual_seed(0)
    plain = Generator(2, 1, (16, 16), 8, [8, 16])
    floored = Generator(2, 1, (16, 16), 8, [8, 16], floor_margin=0.1)
    floored.load_state_dict(plain.state_dict())
    with torch.no_grad():
        floored.out.bias.fill_(-2.5)  # sigmoid about 0.08: a faint haze without the margin
        plain.out.bias.fill_(-2.5)
    z = torch.randn(4, 8)
    a, b = plain(z), floored(z)
    assert (a > 0).all()  # a sigmoid never reaches the floor
    assert (b == 0).float().mean() > 0.2 and b.min() == 0 and b.max() <= 1
    assert torch.allclose(b, torch.relu(1.1 * a - 0.1), atol=1e-6)
    b.sum().backward()
    assert floored.out.weight.grad.abs().sum() > 0  # the pixels above the floor still train it
