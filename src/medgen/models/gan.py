"""DCGAN-style GANs for S004: conditional GAN, WGAN-GP and conditional WGAN-GP.

- ``loss: bce``: the standard GAN (Goodfellow et al.), non-saturating generator loss, Adam with
  beta1 0.5 (Radford et al.). ``n_critic`` discriminator steps per generator step (default 1).
- ``loss: wgan-gp``: Wasserstein loss with gradient penalty (Gulrajani et al. 2017): a critic with
  no sigmoid and no BatchNorm (layer norm by default, as the paper advises), penalty weight
  ``gp_weight`` (10), ``n_critic`` (5) critic steps per generator step, no weight clipping,
  Adam betas (0.5, 0.9) unless set. The critic steps of one training step reuse its batch of real
  images with fresh noise each time, as the Keras WGAN-GP example S004 worked from does
  (Gulrajani's algorithm draws a fresh real batch per critic step).
- ``loss: hinge``: the hinge loss of SN-GAN / BigGAN (Miyato et al. 2018; Brock et al. 2019):
  discriminator relu(1 - D(x)) + relu(1 + D(G(z))), generator -D(G(z)).
- Options for small data, all off by default: ``spectral_norm`` on every discriminator layer
  (Miyato et al. 2018), ``diffaugment`` (Zhao et al. 2020, :mod:`medgen.models.diffaugment`) on
  everything the discriminator sees, ``r1_weight`` (the R1 penalty on real images, Mescheder et al.
  2018), ``disc_lr`` different from ``train.lr`` (two time-scale update rule, Heusel et al. 2017).
- ``conditional: true``: a label embedding is concatenated to z in the generator and a learned
  per-class map to the image in the discriminator (cGAN, Mirza & Osindero). ``cond_norm: true``
  also makes every generator BatchNorm class-conditional (a per-class scale and shift).

Networks are in ``medgen.models.gan_networks``: the generator is S004's "Conv2DTranspose + BatchNorm +
LeakyReLU" (``upsample: transpose``) or "Upsampling + Conv2D + BN" (``upsample: resize``); the
discriminator "Conv2D + LeakyReLU + Dropout" (``disc_norm: none``, ``dropout > 0``) or "Conv2D +
BatchNorm + LeakyReLU" (``disc_norm: batch``). The number of levels follows the image size.

Logged every step: ``g_loss``, ``d_loss`` and, for BCE, the discriminator's accuracy on real and
generated images (S004's acc-real / acc-fake curves); for WGAN-GP ``wasserstein`` (critic mean on
real minus on generated) and ``grad_norm`` (mean gradient norm at the penalty points, ideally ~1).
``warn_*`` flags are 1 while a failure persists (discriminator wins outright, divergence, mode
collapse); each is printed once and kept in ``model.warnings``.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from medgen.models.base import FamilyParams, LatentPriorModel
from medgen.models.diffaugment import diff_augment
from medgen.models.gan_monitor import GANMonitor
from medgen.models.gan_networks import Discriminator, Generator
from medgen.models.layers import dcgan_init
from medgen.models.losses import gradient_penalty


def _spectral_norm(module: torch.nn.Module) -> None:
    for child in list(module.modules()):
        if isinstance(child, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            torch.nn.utils.parametrizations.spectral_norm(child)


def standardised(x: torch.Tensor) -> torch.Tensor:
    """Each image minus its mean, over its standard deviation: differences between two such images
    are differences of structure (where tissue and edges are), not of overall brightness or contrast."""
    flat = x.flatten(1)
    return ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-3)).view_as(x)


def real_spread(x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Mean absolute difference between two :func:`standardised` real images of one class in the
    batch (any two images when unconditional); None when no two share a class."""
    x = standardised(x).flatten(1)
    d = torch.cdist(x, x, p=1) / x.shape[1]
    same = torch.ones_like(d, dtype=torch.bool) if labels is None else labels[:, None] == labels[None, :]
    pairs = same & ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    return d[pairs].mean() if pairs.any() else None


def mode_seeking_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Diversity term for a conditional generator that maps every z of a class to one image (the
    collapse seen on a few hundred images): the first half of the batch is paired with the second
    (same labels, other z), and two :func:`standardised` images of a pair should differ as much as
    two real images of one class do (``target``, :func:`real_spread`); 0 once they do.

    MSGAN (Mao et al. 2019) maximises the image distance per unit of z distance without bound; on
    brain slices that, and a cap on raw pixel differences (DSGAN, Yang et al. 2019, caps the ratio at
    a constant), both bought variety with brightness: saturated white heads. Standardising each image
    first leaves structure as the only way to differ (docs/sample-quality.md)."""
    h = fake.shape[0] // 2
    fake = standardised(fake)
    return torch.relu(1.0 - (fake[:h] - fake[h:2 * h]).abs().mean() / target)


class GANParams(FamilyParams):
    conditional: bool = False
    loss: Literal["bce", "wgan-gp", "hinge"] = "bce"
    latent_dim: int = Field(128, ge=1)  # S004: 64 or 128
    channels: list[int] = [32, 64, 128, 256]  # per level, shallow to deep (the generator mirrors them)
    levels: int | None = Field(None, ge=1)  # None: down to 4x4 from the image size
    embed_dim: int = Field(32, ge=1)  # generator's label embedding
    upsample: Literal["transpose", "resize"] = "transpose"
    cond_norm: bool = False  # conditional: class-conditional BatchNorm in the generator (de Vries et al. 2017)
    disc_channels: list[int] | None = None  # default: channels
    disc_norm: Literal["auto", "batch", "instance", "layer", "none"] = "auto"  # auto: batch (bce), layer (wgan-gp)
    dropout: float = Field(0.3, ge=0, lt=1)
    minibatch_std: bool = False  # Karras et al.'s minibatch-std channel before the head (against mode collapse)
    projection: bool = False  # conditional: also a projection term in the discriminator (Miyato & Koyama)
    aux_weight: float = Field(0.0, ge=0)  # conditional: AC-GAN class head in the discriminator, this weight on its losses
    spectral_norm: bool = False  # spectral normalisation of the discriminator's conv and linear layers
    diffaugment: list[Literal["translation", "cutout", "brightness"]] = []  # DiffAugment policies
    r1_weight: float = Field(0.0, ge=0)  # R1 penalty (gamma / 2 * |grad D(x)|^2 on real images)
    mode_seeking: float = Field(0.0, ge=0)  # diversity term (MSGAN / DSGAN) capped at the real within-class spread: weight
    # the generator's output reaches exactly 0 below this margin (see gan_networks.Generator): real
    # slices are 0 outside the head, and a sigmoid's faint haze there is what texture features read
    floor_margin: float = Field(0.0, ge=0, lt=1)
    gp_weight: float = Field(10.0, ge=0)
    n_critic: int | None = Field(None, ge=1)  # default 5 for wgan-gp, 1 for bce
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)  # one-sided: real target 1 - s (bce)
    betas: tuple[float, float] | None = None  # Adam; default (0.5, 0.999) bce, (0.5, 0.9) wgan-gp
    disc_lr: float | None = Field(None, gt=0)  # default train.lr
    warn_patience: int = Field(50, ge=1)  # steps a failure must persist before the warning
    diverge_threshold: float = Field(1000.0, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.loss == "wgan-gp" and self.disc_norm == "batch":
            raise ValueError("disc_norm: batch is not valid with loss: wgan-gp (the gradient penalty is per sample; "
                             "use layer, instance or none, as Gulrajani et al. advise)")
        if self.aux_weight > 0 and not self.conditional:
            raise ValueError("aux_weight (the AC-GAN class head) needs conditional: true")
        if self.cond_norm and not self.conditional:
            raise ValueError("cond_norm (class-conditional BatchNorm) needs conditional: true")
        return self


class GAN(LatentPriorModel):
    autocasts = False  # its steps train in fp32 (no ctx.autocast), on a GPU too
    Params = GANParams

    def __init__(self, params: GANParams, info):
        super().__init__(params, info)
        p = params
        ncls = info.num_classes if self.conditional else 0
        norm = p.disc_norm if p.disc_norm != "auto" else ("layer" if p.loss == "wgan-gp" else "batch")
        self.generator = Generator(info.spatial_dims, info.channels, info.size, p.latent_dim, p.channels, ncls,
                                   p.embed_dim, p.upsample, p.levels, p.cond_norm, p.floor_margin)
        self.discriminator = Discriminator(info.spatial_dims, info.channels, info.size, p.disc_channels or p.channels,
                                           ncls, norm, p.dropout, p.levels, p.minibatch_std, p.projection,
                                           aux_classes=ncls if p.aux_weight > 0 else 0,
                                           # an AC-GAN discriminator is not told the label: its class head could read it back
                                           label_map=p.aux_weight == 0)
        dcgan_init(self)
        if p.spectral_norm:
            _spectral_norm(self.discriminator)
        self.wgan = p.loss == "wgan-gp"
        self.n_critic = p.n_critic or (5 if self.wgan else 1)
        self.monitor = GANMonitor(p.warn_patience)

    @property
    def warnings(self) -> dict[str, str]:
        return dict(self.monitor.warnings)

    def notes(self) -> list[str]:
        kind = "WGAN-GP" if self.wgan else f"GAN ({'BCE' if self.params.loss == 'bce' else 'hinge'})"
        return [f"{'conditional ' if self.conditional else ''}{kind}: {len(self.generator.blocks)} levels, "
                f"{self.n_critic} discriminator step(s) per generator step"]

    def optimizers(self, stage, cfg):
        betas = tuple(self.params.betas) if self.params.betas else ((0.5, 0.9) if self.wgan else (0.5, 0.999))
        return {"generator": torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=self.params.disc_lr or cfg.lr,
                                                  betas=betas, weight_decay=cfg.weight_decay)}

    def ema_target(self, stage):
        return "generator"

    def _labels(self, batch):
        return batch["label"] if self.conditional else None

    # --- training -------------------------------------------------------------------------
    def _aug(self, x, ctx):
        return diff_augment(x, self.params.diffaugment, ctx) if self.params.diffaugment else x

    def training_step(self, batch, stage, ctx):
        x, y = batch["image"], self._labels(batch)
        p = self.params
        b = x.shape[0]
        D, G = self.discriminator, self.generator
        out: dict[str, float] = {}
        for _ in range(self.n_critic):
            with torch.no_grad():
                fake = G(ctx.randn((b, p.latent_dim)), y)
            x_seen = self._aug(x, ctx).requires_grad_(p.r1_weight > 0)
            _, d_real, cls_real = D.heads(x_seen, y)
            d_fake = D(self._aug(fake, ctx), y)
            if self.wgan:
                gp, gnorm = gradient_penalty(D, x, fake, y, ctx)
                d_loss = d_fake.mean() - d_real.mean() + p.gp_weight * gp
                out["wasserstein"] = float((d_real.mean() - d_fake.mean()).detach())
                out["grad_norm"] = float(gnorm)
            else:
                if p.loss == "hinge":
                    d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
                else:
                    d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.full_like(d_real, 1.0 - p.label_smoothing))
                              + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
                out["acc_real"] = float((d_real.detach() > 0).float().mean())
                out["acc_fake"] = float((d_fake.detach() < 0).float().mean())
            if p.r1_weight > 0:
                grad, = torch.autograd.grad(d_real.sum(), x_seen, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                d_loss = d_loss + 0.5 * p.r1_weight * r1
                out["r1"] = float(r1.detach())
            if cls_real is not None:
                # the class head learns from real images only: trained on generated ones too (Odena's
                # original) it can learn whatever marks the generator's classes, and stop teaching it
                cls_loss = F.cross_entropy(cls_real, y)
                d_loss = d_loss + p.aux_weight * cls_loss
                out["d_class_loss"] = float(cls_loss.detach())
            ctx.backward(d_loss, "discriminator")
        D.requires_grad_(False)  # the generator step needs gradients through D, not for it
        try:
            z = ctx.randn((b, p.latent_dim))
            pairs = p.mode_seeking > 0 and b >= 2
            if pairs and y is not None:  # the second half repeats the first half's labels: pairs (z1, z2) of one class
                h = b // 2
                y = torch.cat([y[:h], y[:h], y[2 * h:]])
            fake = G(z, y)
            _, logits, cls_fake = D.heads(self._aug(fake, ctx), y)
            g_loss = -logits.mean() if (self.wgan or p.loss == "hinge") else F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            if cls_fake is not None:  # the generator is rewarded when its images are named as the class asked for
                g_class = F.cross_entropy(cls_fake, y)
                g_loss = g_loss + p.aux_weight * g_class
                out["g_class_loss"] = float(g_class.detach())
            spread = real_spread(x, self._labels(batch)) if pairs else None  # the real batch's own labels
            if spread is not None and spread > 0:
                ms = mode_seeking_loss(fake, spread)
                g_loss = g_loss + p.mode_seeking * ms
                out["mode_seeking"] = float(ms.detach())
            ctx.backward(g_loss, "generator")
        finally:
            D.requires_grad_(True)
        result = {"g_loss": float(g_loss.detach()), "d_loss": float(d_loss.detach()), **out}
        return {**result, **self._warnings(result, x, fake, y)}

    def _warnings(self, losses: dict, real, fake, labels) -> dict[str, float]:
        m = self.monitor
        flags = {}
        if not self.wgan:
            acc = 0.5 * (losses["acc_real"] + losses["acc_fake"])
            flags["warn_d_wins"] = m.check("d_wins", losses["d_loss"] < 0.05 and acc > 0.99,
                                           f"the discriminator wins outright (loss < 0.05, accuracy ~1) for {m.patience} steps: "
                                           "the generator gets almost no gradient (S004's non-convergence); try a lower "
                                           "discriminator lr (model.disc_lr), dropout, label_smoothing or loss: wgan-gp")
        flags["warn_diverging"] = m.diverging({"g_loss": losses["g_loss"], "d_loss": losses["d_loss"]}, self.params.diverge_threshold)
        flags["warn_mode_collapse"] = m.collapse(real, fake, labels)
        return flags

    @torch.no_grad()
    def validation_step(self, batch, stage):
        x, y = batch["image"], self._labels(batch)
        gen = torch.Generator(device="cpu").manual_seed(1234)  # the same z every validation
        z = torch.randn((x.shape[0], self.params.latent_dim), generator=gen).to(x.device)
        fake = self.generator(z, y)
        # Wasserstein-1 distance between the pixel-value distributions (sorted values): lower is closer
        w1 = (x.flatten().sort().values - fake.flatten().sort().values).abs().mean()
        out = {"intensity_w1": float(w1)}
        _, d_real, _ = self.discriminator.heads(x, y)
        _, d_fake, cls_fake = self.discriminator.heads(fake, y)
        if cls_fake is not None:  # how often the class head names a generated image's class as asked
            out["class_acc_fake"] = float((cls_fake.argmax(1) == y).float().mean())
        if self.wgan:
            out["wasserstein"] = float(d_real.mean() - d_fake.mean())
        else:
            out["acc_real"] = float((d_real > 0).float().mean())
            out["acc_fake"] = float((d_fake < 0).float().mean())
        return out

    # --- inference ------------------------------------------------------------------------
    def from_latent(self, z, labels):
        return self.generator(z, labels)
