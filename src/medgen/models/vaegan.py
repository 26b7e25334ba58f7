"""VAE-GAN (Larsen et al. 2016, "Autoencoding beyond pixels using a learned similarity metric"; the
hybrid the survey S001 describes): a VAE whose decoder is also a GAN generator, judged by a
discriminator, with the VAE's reconstruction error measured in the discriminator's feature space.

Losses (per step, batch x, label y when conditional), all per element so their weights do not
depend on the image size:
- ``kl``: KL(q(z|x) || N(0, I)) summed over latent dimensions and divided by the number of pixels
  (so ``kl_weight: 1`` weighs it against the per-pixel reconstruction terms as the ELBO does);
- ``feature_recon`` (Larsen's L_llike^Dis_l): mean squared difference between the discriminator's
  level-``feature_layer`` features of x and of its reconstruction x~ = Dec(z), z ~ q(z|x);
- ``pixel_l1``: optional pixel L1 between x and x~ (``pixel_weight``, 0 in Larsen);
- GAN (BCE): the discriminator tells x (real) from x~ and from x_p = Dec(z_p), z_p ~ N(0, I) (fake).

Three optimisers, as in Larsen's algorithm 1:
- ``encoder``: ``kl_weight`` * kl + ``feature_weight`` * feature_recon (+ pixel);
- ``decoder``: ``gamma`` * feature_recon + ``adv_weight`` * GAN loss on x~ and x_p (+ pixel);
- ``discriminator``: the GAN loss only (never the feature loss).
They step one after the other in one training step (encoder, decoder, discriminator), each on a
fresh forward pass, where Larsen computes all three gradients from one pass; the difference is one
optimiser step of staleness. Real and generated images go through the discriminator in one
batch, so its BatchNorm statistics are shared and the feature distance compares like with like.

Encoder/decoder are the VAE's (``medgen.models.vae_networks.Encoder``/``Decoder``, same options), the
discriminator the GAN's. Logs also the discriminator's accuracies and the GAN failure warnings.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from medgen.models.base import FamilyParams, LatentPriorModel
from medgen.models.gan_monitor import GANMonitor
from medgen.models.gan_networks import Discriminator
from medgen.models.layers import blocks_layout, dcgan_init, level_strides
from medgen.models.losses import kl_divergence
from medgen.models.vae import build_vae_networks, reconstruct_best


class VAEGANParams(FamilyParams):
    conditional: bool = False
    latent_dim: int = Field(128, ge=1)  # Larsen: 128
    channels: list[int] = [32, 64, 128, 256]
    levels: int | None = Field(None, ge=1)
    blocks_per_level: list[int] | None = None
    vgg: Literal[13, 16, 19] | None = None
    block: Literal["plain", "skip", "residual"] = "plain"
    norm: Literal["batch", "group", "none"] = "batch"
    hidden_dim: int | None = Field(256, ge=1)
    disc_channels: list[int] | None = None
    disc_norm: Literal["batch", "instance", "layer", "none"] = "batch"
    dropout: float = Field(0.0, ge=0, lt=1)
    feature_layer: int = -2  # which discriminator level's output is the learned similarity
    kl_weight: float = Field(1.0, ge=0)  # on KL per pixel
    feature_weight: float = Field(1.0, ge=0)
    gamma: float = Field(1.0, ge=0)  # Larsen's gamma: feature reconstruction vs GAN loss in the decoder
    adv_weight: float = Field(0.01, ge=0)
    pixel_weight: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    betas: tuple[float, float] = (0.5, 0.999)
    disc_lr: float | None = Field(None, gt=0)
    warn_patience: int = Field(50, ge=1)
    diverge_threshold: float = Field(1000.0, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.vgg is not None and self.blocks_per_level is not None:
            raise ValueError("give either vgg or blocks_per_level, not both")
        return self


class VAEGAN(LatentPriorModel):
    autocasts = False  # its steps train in fp32 (no ctx.autocast), on a GPU too
    Params = VAEGANParams
    can_reconstruct = True
    can_score = True
    can_encode = True
    detectors = ("reconstruct", "model")

    def __init__(self, params: VAEGANParams, info):
        super().__init__(params, info)
        p = params
        ncls = info.num_classes if self.conditional else 0
        self.encoder, self.decoder = build_vae_networks(p, info, ncls)
        self.discriminator = Discriminator(info.spatial_dims, info.channels, info.size, p.disc_channels or p.channels,
                                           ncls, p.disc_norm, p.dropout, p.levels)
        dcgan_init(self.discriminator)
        n = len(self.discriminator.blocks)
        if not -n <= p.feature_layer < n:
            from medgen.errors import UserError

            raise UserError(f"model.feature_layer {p.feature_layer}: the discriminator has {n} levels here (use 0..{n - 1} or -1..-{n})")
        self.monitor = GANMonitor(p.warn_patience)
        self.n_pixels = info.channels * math.prod(info.size)

    @property
    def warnings(self) -> dict[str, str]:
        return dict(self.monitor.warnings)

    def notes(self) -> list[str]:
        layout = blocks_layout(self.params.blocks_per_level, self.params.vgg, len(level_strides(self.info.size, self.params.levels)))
        return [f"{'conditional ' if self.conditional else ''}VAE-GAN: {len(self.encoder.convs)} levels, blocks {layout}, "
                f"similarity at discriminator level {self.params.feature_layer}; optimisers encoder, decoder, discriminator"]

    def optimizers(self, stage, cfg):
        b = tuple(self.params.betas)
        return {"encoder": torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr, betas=b, weight_decay=cfg.weight_decay),
                "decoder": torch.optim.Adam(self.decoder.parameters(), lr=cfg.lr, betas=b, weight_decay=cfg.weight_decay),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=self.params.disc_lr or cfg.lr, betas=b,
                                                  weight_decay=cfg.weight_decay)}

    # --- encoder / decoder ----------------------------------------------------------------
    def _y(self, labels):
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError("a conditional VAE-GAN needs labels to encode and decode")
        return labels.to(self.device)

    def encode(self, x, labels=None):
        return self.encoder(x, self._y(labels))

    def decode(self, z, labels=None):
        return torch.sigmoid(self.decoder(z, self._y(labels)))

    def from_latent(self, z, labels):  # the prior's samples go through the decoder
        return self.decode(z, labels)

    # --- training -------------------------------------------------------------------------
    def _disc(self, images: list[torch.Tensor], y):
        """Discriminator features at the similarity level and logits, for several batches in one pass."""
        ys = torch.cat([y] * len(images)) if y is not None else None
        feats, logits = self.discriminator.features(torch.cat(images), ys)
        return feats[self.params.feature_layer], logits

    def training_step(self, batch, stage, ctx):
        x = batch["image"]
        y = batch["label"] if self.conditional else None
        p = self.params
        b = x.shape[0]
        D = self.discriminator
        D.requires_grad_(False)
        try:
            # encoder: prior + learned similarity
            mu, logvar = self.encoder(x, y)
            z = mu + torch.exp(0.5 * logvar) * ctx.randn(mu.shape)
            x_rec = torch.sigmoid(self.decoder(z, y))
            f, _ = self._disc([x, x_rec], y)
            feature = ((f[b:] - f[:b].detach()) ** 2).mean()
            pixel = (x_rec - x).abs().mean()
            kl = kl_divergence(mu, logvar) / self.n_pixels
            enc_loss = p.kl_weight * kl + p.feature_weight * feature + p.pixel_weight * pixel
            ctx.backward(enc_loss, "encoder")
            # decoder: learned similarity + fool the discriminator with reconstructions and prior samples
            x_rec = torch.sigmoid(self.decoder(z.detach(), y))
            x_p = torch.sigmoid(self.decoder(ctx.randn(mu.shape), y))
            f, logits = self._disc([x, x_rec, x_p], y)
            feature_d = ((f[b:2 * b] - f[:b].detach()) ** 2).mean()
            g_adv = F.binary_cross_entropy_with_logits(logits[b:], torch.ones_like(logits[b:]))
            pixel_d = (x_rec - x).abs().mean()
            dec_loss = p.gamma * feature_d + p.adv_weight * g_adv + p.pixel_weight * pixel_d
            ctx.backward(dec_loss, "decoder")
        finally:
            D.requires_grad_(True)
        # discriminator: real vs reconstructed and prior samples
        _, logits = self._disc([x, x_rec.detach(), x_p.detach()], y)
        real, fake = logits[:b], logits[b:]
        d_loss = (F.binary_cross_entropy_with_logits(real, torch.full_like(real, 1.0 - p.label_smoothing))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        ctx.backward(d_loss, "discriminator")
        out = {"g_loss": float(g_adv.detach()), "d_loss": float(d_loss.detach()), "kl": float(kl.detach()),
               "feature_recon": float(feature.detach()), "pixel_l1": float(pixel.detach()),
               "acc_real": float((real.detach() > 0).float().mean()), "acc_fake": float((fake.detach() < 0).float().mean())}
        m = self.monitor
        acc = 0.5 * (out["acc_real"] + out["acc_fake"])
        out["warn_d_wins"] = m.check("d_wins", out["d_loss"] < 0.05 and acc > 0.99,
                                     f"the discriminator wins outright for {m.patience} steps: the decoder's adversarial "
                                     "gradient vanishes; try a lower model.disc_lr or adv_weight")
        out["warn_diverging"] = m.diverging({k: out[k] for k in ("g_loss", "d_loss", "kl", "feature_recon")}, p.diverge_threshold)
        out["warn_mode_collapse"] = m.collapse(x, x_p, y)
        return out

    @torch.no_grad()
    def validation_step(self, batch, stage):
        x = batch["image"]
        y = batch["label"] if self.conditional else None
        mu, logvar = self.encoder(x, y)
        mae = F.l1_loss(self.decode(mu, y), x)
        gen = torch.Generator(device="cpu").manual_seed(1234)
        z = torch.randn(mu.shape, generator=gen).to(mu.device)
        fake = self.decode(z, y)
        w1 = (x.flatten().sort().values - fake.flatten().sort().values).abs().mean()
        return {"mae": float(mae), "kl": float(kl_divergence(mu, logvar) / self.n_pixels), "intensity_w1": float(w1)}

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x, labels=None):
        return reconstruct_best(self, x, labels)
