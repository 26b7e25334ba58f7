"""VAE and conditional VAE (S004; the survey S001's VAE).

Encoder: per level conv blocks + max-pooling, flatten, [label one-hot], dense -> mu, log-variance;
decoder: z [+ label one-hot] -> dense -> reshape -> transposed convs -> sigmoid (S004's CVAE).
Loss: reconstruction summed over pixels (``recon_loss``: bce as S004's Keras model, l1 or mse)
+ ``kl_weight`` * KL(q(z|x) || N(0, I)), per image, averaged over the batch. ``class_prior: true``
(conditional): the prior is N(m_y, I) with a learned mean per class, and samples are drawn there.

S004's variants: ``blocks_per_level`` (conv blocks per level) or ``vgg: 13|16|19`` (13/16/19 conv
blocks laid out VGG-style, see ``layers.VGG_LAYOUTS``); ``block: plain|skip|residual``;
``input_noise``: Gaussian noise of that std added to the encoder input while training (denoising VAE).

Transfer (S004): ``freeze: [encoder.convs, decoder.convs]`` + ``freeze_epochs: 30`` keeps the conv
layers fixed for 30 epochs, then trains everything. With ``medgen train ... --init-from VAE_RUN`` an
unconditional VAE's conv layers (and the mu/log-variance heads) load into the CVAE: only the two
dense layers that take the label change shape and start fresh.

A CVAE needs a label to encode and decode. ``reconstruct(x)`` without labels (anomaly maps)
reconstructs under every class and keeps, per image, the class that reconstructs it best.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from medgen.models.base import FamilyParams, LatentPriorModel
from medgen.models.freeze import FreezeSchedule
from medgen.models.layers import blocks_layout, level_strides
from medgen.models.losses import kl_divergence, reconstruction_loss
from medgen.models.vae_networks import Decoder, Encoder


class VAEParams(FamilyParams):
    conditional: bool = False
    latent_dim: int = Field(128, ge=1)  # S004: 2 to 512
    channels: list[int] = [32, 64, 128, 256]  # per level, shallow to deep
    levels: int | None = Field(None, ge=1)  # None: down to 4x4 from the image size
    blocks_per_level: list[int] | None = None  # conv blocks per level (default 1 each)
    vgg: Literal[13, 16, 19] | None = None  # S004's 13/16/19-block variants (instead of blocks_per_level)
    block: Literal["plain", "skip", "residual"] = "plain"
    norm: Literal["batch", "group", "none"] = "batch"
    hidden_dim: int | None = Field(256, ge=1)  # encoder dense layer before mu/log-variance (None: none)
    recon_loss: Literal["bce", "l1", "mse"] = "bce"
    kl_weight: float = Field(1.0, ge=0)
    # conditional: a learned prior mean per class, KL(q(z|x,y) || N(m_y, I)), and samples drawn around m_y
    class_prior: bool = False
    input_noise: float = Field(0.0, ge=0)  # std of the denoising VAE's input noise (training only)
    freeze: list[str] = []  # parameter name prefixes frozen while epoch < freeze_epochs
    freeze_epochs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.vgg is not None and self.blocks_per_level is not None:
            raise ValueError("give either vgg or blocks_per_level, not both")
        if self.blocks_per_level is not None and any(b < 1 for b in self.blocks_per_level):
            raise ValueError("blocks_per_level entries must be >= 1")
        if self.class_prior and not self.conditional:
            raise ValueError("class_prior (a prior mean per class) needs conditional: true")
        return self


class VAE(LatentPriorModel):
    Params = VAEParams
    can_reconstruct = True
    can_score = True
    can_encode = True
    detectors = ("reconstruct", "model")

    def __init__(self, params: VAEParams, info):
        super().__init__(params, info)
        self.encoder, self.decoder = build_vae_networks(params, info, self.num_label_inputs)
        # class_prior: where each class's codes sit in z is learned; sampling N(0, I) alone would mix
        # the classes wherever the encoder put class information into z besides the label input
        self.prior_mean = torch.nn.Embedding(info.num_classes, params.latent_dim) if params.class_prior else None
        if self.prior_mean is not None:
            torch.nn.init.zeros_(self.prior_mean.weight)
        self.freezer = FreezeSchedule(self, params.freeze, params.freeze_epochs)

    @property
    def num_label_inputs(self) -> int:
        return self.info.num_classes if self.conditional else 0

    def notes(self) -> list[str]:
        p = self.params
        out = [f"{'conditional ' if self.conditional else ''}VAE: {len(self.encoder.convs)} levels, conv blocks per level "
               f"{describe_layout(p, self.info)}, {p.block} blocks, latent {p.latent_dim}"]
        if p.freeze and p.freeze_epochs:
            out.append(f"{', '.join(p.freeze)} frozen for the first {p.freeze_epochs} epochs")
        return out

    # --- encoder / decoder ----------------------------------------------------------------
    def _y(self, labels):
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError("a conditional VAE needs labels to encode and decode")
        return labels.to(self.device)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log-variance) of q(z | x[, label])."""
        return self.encoder(x, self._y(labels))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] from latents."""
        return torch.sigmoid(self.decoder(z, self._y(labels)))

    def from_latent(self, z, labels):  # the prior's samples (z ~ N(0, I), moved to the class's mean) go through the decoder
        return self.decode(z if self.prior_mean is None else z + self.prior_mean(self._y(labels)), labels)

    def _kl(self, mu, logvar, labels):
        """KL(q(z|x[,y]) || prior): N(0, I), or N(m_y, I) with ``class_prior``."""
        centre = mu if self.prior_mean is None else mu - self.prior_mean(self._y(labels)).to(mu.dtype)
        return kl_divergence(centre, logvar)

    # --- training -------------------------------------------------------------------------
    def on_epoch_start(self, stage, epoch):
        self.freezer.on_epoch_start(epoch)

    def training_step(self, batch, stage, ctx):
        self.freezer.before_step()
        x = batch["image"]
        y = batch["label"] if self.conditional else None
        p = self.params
        x_in = x + p.input_noise * ctx.randn(x.shape) if p.input_noise > 0 else x
        with ctx.autocast():
            mu, logvar = self.encoder(x_in, y)
            z = mu + torch.exp(0.5 * logvar) * ctx.randn(mu.shape)
            logits = self.decoder(z, y)
        recon = reconstruction_loss(logits.float(), x, p.recon_loss)
        kl = self._kl(mu.float(), logvar.float(), y)
        loss = recon + p.kl_weight * kl
        ctx.backward(loss)
        return {"loss": float(loss.detach()), "recon": float(recon.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def validation_step(self, batch, stage):
        x = batch["image"]
        y = batch["label"] if self.conditional else None
        gen = torch.Generator(device="cpu").manual_seed(1234)  # the same noise every validation
        mu, logvar = self.encoder(x, y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen).to(mu.device)
        logits = self.decoder(z, y)
        recon = reconstruction_loss(logits, x, self.params.recon_loss)
        kl = self._kl(mu, logvar, y)
        mae = F.l1_loss(torch.sigmoid(self.decoder(mu, y)), x)
        return {"loss": float(recon + self.params.kl_weight * kl), "recon": float(recon), "kl": float(kl), "mae": float(mae)}

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x, labels=None):
        return reconstruct_best(self, x, labels)


def build_vae_networks(p, info, num_classes: int) -> tuple[Encoder, Decoder]:
    n_levels = len(level_strides(info.size, p.levels))
    blocks = blocks_layout(p.blocks_per_level, p.vgg, n_levels)
    enc = Encoder(info.spatial_dims, info.channels, info.size, p.latent_dim, p.channels, blocks, num_classes,
                  p.hidden_dim, p.norm, p.block, p.levels)
    dec = Decoder(info.spatial_dims, info.channels, info.size, p.latent_dim, p.channels, blocks, num_classes,
                  p.norm, p.block, p.levels)
    return enc, dec


def describe_layout(p, info) -> list[int]:
    return blocks_layout(p.blocks_per_level, p.vgg, len(level_strides(info.size, p.levels)))


@torch.no_grad()
def reconstruct_best(model, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """decode(mu). A conditional model without labels tries every class and keeps, per image, the
    reconstruction with the smallest mean absolute error."""
    if not model.conditional or labels is not None:
        mu, _ = model.encode(x, labels)
        return model.decode(mu, labels)
    best, best_err = None, None
    for c in range(model.info.num_classes):
        y = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
        mu, _ = model.encode(x, y)
        r = model.decode(mu, y)
        err = (r - x).abs().flatten(1).mean(dim=1)
        if best is None:
            best, best_err = r, err
        else:
            better = err < best_err
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), r, best)
            best_err = torch.minimum(err, best_err)
    return best
