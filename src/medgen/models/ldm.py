"""Latent diffusion (S000): an AutoencoderKL, then a diffusion U-Net on its latents.

Stage ``autoencoder``: L1 reconstruction + KL + patch adversarial loss (PatchDiscriminator,
least squares, switched on after ``adv_start_epoch`` epochs, as S000 started its
generator/discriminator losses at epoch 4) + a perceptual loss when a local weights file is
given. Stage ``diffusion``: the autoencoder is frozen; the training latents are encoded once
(mean and std of q(z|x)) and a fresh latent is drawn from them every step, which is exactly
what encoding every step would give at a fraction of the cost. Latents are scaled by
1/std (Rombach et al.'s scale factor, measured on the training latents).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from medgen.errors import UserError
from medgen.models.base import FamilyParams, sample_labels
from medgen.models.diffusion import Denoiser, DiffusionFamily, SchedulerParams, UNetParams


class AEParams(FamilyParams):
    channels: list[int] = [32, 64]
    latent_channels: int = Field(3, ge=1)
    num_res_blocks: int = Field(1, ge=1)
    attention_levels: list[bool] = [False, False]
    norm_num_groups: int = Field(8, ge=1)
    with_nonlocal_attn: bool = False


class LDMParams(FamilyParams):
    autoencoder: AEParams = AEParams()
    unet: UNetParams = UNetParams()
    scheduler: SchedulerParams = SchedulerParams()
    kl_weight: float = Field(1e-6, ge=0)
    adv_weight: float = Field(0.01, ge=0)
    adv_start_epoch: int = Field(4, ge=0)
    disc_channels: int = Field(32, ge=1)
    disc_layers: int = Field(3, ge=1)
    perceptual_weight: float = Field(0.0, ge=0)
    # L1 between the spatial finite differences of reconstruction and image (the gradient difference
    # loss of Mathieu et al. 2016): pixel losses alone let the decoder average edges away (blur, lost
    # grey/white-matter boundaries); this term needs no pretrained network
    edge_weight: float = Field(0.0, ge=0)
    # Pixels at the data range's floor (0: a background of exact zeros, as skull-stripped MRI or a
    # mammogram's air after min-max scaling) are penalised only while their reconstruction lies above
    # -floor_margin. Sampling clips the decoder's output to [0, 1]; a decoder that keeps such a
    # background below the floor by this margin stays exactly 0 under the small latent errors of
    # generated latents, instead of a haze of faint grey that texture features read as noise.
    floor_margin: float = Field(0.0, ge=0, le=1)
    perceptual_network: Literal["alex", "resnet50", "radimagenet_resnet50"] = "alex"
    perceptual_weights: str | None = None  # local weights file for the perceptual network
    allow_missing_perceptual: bool = False  # continue without it when the file is missing
    loss: Literal["mse", "l1"] = "mse"
    conditional: bool = False
    cond_drop_prob: float = Field(0.1, ge=0, le=1)

    def sampler_drives(self) -> tuple[str, str]:
        return self.scheduler.drives, f"model.scheduler.objective: {self.scheduler.objective}"


def floor_margin_l1(recon: torch.Tensor, x: torch.Tensor, margin: float) -> torch.Tensor:
    """L1 reconstruction loss, except that a pixel whose target is at the floor (0) costs only its
    excess above -margin: sampling clips at 0, so anything below it decodes to exactly the floor."""
    if margin <= 0:
        return F.l1_loss(recon, x)
    at_floor = x <= 0
    return torch.where(at_floor, F.relu(recon + margin), (recon - x).abs()).mean()


def edge_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean L1 difference of the finite differences along every spatial axis (2-D or 3-D)."""
    terms = [F.l1_loss(torch.diff(recon, dim=d), torch.diff(x, dim=d)) for d in range(2, x.dim())]
    return torch.stack(terms).mean()


class LatentDiffusion(DiffusionFamily):
    Params = LDMParams
    stages = ("autoencoder", "diffusion")
    can_reconstruct = True
    can_score = True
    detectors = ("reconstruct", "model")
    inpaints = True

    def __init__(self, params: LDMParams, info):
        super().__init__(params, info)
        from monai.networks.nets import AutoencoderKL, PatchDiscriminator

        a = params.autoencoder
        if len(a.channels) != len(a.attention_levels):
            raise UserError("model.autoencoder.channels and attention_levels must have the same length")
        self.autoencoder = AutoencoderKL(
            spatial_dims=info.spatial_dims, in_channels=info.channels, out_channels=info.channels,
            channels=tuple(a.channels), latent_channels=a.latent_channels, num_res_blocks=a.num_res_blocks,
            attention_levels=tuple(a.attention_levels), norm_num_groups=a.norm_num_groups,
            with_encoder_nonlocal_attn=a.with_nonlocal_attn, with_decoder_nonlocal_attn=a.with_nonlocal_attn,
        )
        # no adversary at all when its weight is 0: smaller checkpoints, no idle parameters
        self.discriminator = PatchDiscriminator(spatial_dims=info.spatial_dims, channels=params.disc_channels,
                                                in_channels=info.channels, num_layers_d=params.disc_layers) if params.adv_weight > 0 else None
        self.denoiser = Denoiser(params.unet, params.scheduler, info.spatial_dims, a.latent_channels, info.num_classes,
                                 params.conditional, params.cond_drop_prob, params.loss)
        self.register_buffer("scale_factor", torch.ones(()))
        self.down = 2 ** (len(a.channels) - 1)
        self._latents: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._perceptual = None
        self._notes: list[str] = []
        self._setup_perceptual()

    def notes(self) -> list[str]:
        return list(self._notes)

    def _setup_perceptual(self) -> None:
        p = self.params
        if p.perceptual_weight == 0:
            self._notes.append("perceptual loss off (perceptual_weight: 0, the offline default)")
            return
        path = Path(p.perceptual_weights).expanduser() if p.perceptual_weights else None
        if path is None or not path.exists():
            where = f"'{path}' does not exist" if path else "model.perceptual_weights is not set"
            msg = (f"perceptual loss ({p.perceptual_network}) needs a local weights file: {where}. "
                   "See `medgen weights` for where to get it, or set model.perceptual_weight=0")
            if not p.allow_missing_perceptual:
                raise UserError(msg)
            self._notes.append(msg + "; continuing WITHOUT the perceptual loss (allow_missing_perceptual)")
            return
        from medgen.models.perceptual import build_perceptual

        self._perceptual = build_perceptual(p.perceptual_network, path, self.info.spatial_dims)
        self._notes.append(f"perceptual loss: {p.perceptual_network} weights from {path}")

    # --- stages ---------------------------------------------------------------------------
    def optimizers(self, stage, cfg):
        if stage == "autoencoder":
            opts = {"autoencoder": torch.optim.Adam(self.autoencoder.parameters(), lr=cfg.lr)}
            if self.discriminator is not None:
                opts["discriminator"] = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr)
            return opts
        return {"main": torch.optim.Adam(self.denoiser.parameters(), lr=cfg.lr)}

    def ema_target(self, stage):
        return "denoiser.unet" if stage == "diffusion" else None

    def on_stage_start(self, stage, data):
        if stage != "diffusion":
            return
        self.autoencoder.eval().requires_grad_(False)
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)
        mus, sigmas, rows = [], [], []
        with torch.no_grad():
            for batch in data.train_batches():
                mu, sigma = self.autoencoder.encode(batch["image"])
                mus.append(mu)
                sigmas.append(sigma)
                rows.append(batch["index"])
        mu, sigma, rows = torch.cat(mus), torch.cat(sigmas), torch.cat(rows)
        lookup = torch.full((int(rows.max()) + 1,), -1, dtype=torch.long)
        lookup[rows] = torch.arange(len(rows))
        self._latents = (mu, sigma, lookup)
        if float(self.scale_factor) == 1.0:  # keep the factor of a model we fine-tune from
            z = mu + sigma * torch.randn(mu.shape, generator=data.generator).to(mu.device)
            self.scale_factor.fill_(1.0 / z.flatten().std().clamp(min=1e-6))

    def training_step(self, batch, stage, ctx):
        if stage == "autoencoder":
            return self._ae_step(batch, ctx)
        mu, sigma, lookup = self._latents
        rows = batch["index"]
        idx = lookup[rows.clamp(max=len(lookup) - 1)] if len(lookup) else rows
        if (rows >= len(lookup)).any() or (idx < 0).any():  # not in the cache: encode now
            with torch.no_grad():
                m, s = self.autoencoder.encode(batch["image"])
        else:
            m, s = mu[idx.to(mu.device)], sigma[idx.to(mu.device)]
        z = (m + s * ctx.randn(m.shape)) * self.scale_factor
        loss = self.denoiser.training_loss(z, batch["label"], ctx)
        ctx.backward(loss)
        return {"loss": float(loss.detach())}

    def _ae_step(self, batch, ctx):
        from monai.losses import PatchAdversarialLoss

        x = batch["image"]
        p = self.params
        adv_on = self.discriminator is not None and ctx.epoch >= p.adv_start_epoch
        with ctx.autocast():
            recon, z_mu, z_sigma = self.autoencoder(x)
        recon = recon.float()
        l1 = floor_margin_l1(recon, x, p.floor_margin)
        dims = list(range(1, z_mu.dim()))
        kl = 0.5 * torch.sum(z_mu.float() ** 2 + z_sigma.float() ** 2 - torch.log(z_sigma.float() ** 2 + 1e-12) - 1, dim=dims).mean()
        loss = l1 + p.kl_weight * kl
        out = {"l1": float(l1.detach()), "kl": float(kl.detach())}
        if p.edge_weight > 0:
            edge = edge_loss(recon, x)
            loss = loss + p.edge_weight * edge
            out["edge"] = float(edge.detach())
        if self._perceptual is not None:
            perc = self._perceptual(recon, x)
            loss = loss + p.perceptual_weight * perc
            out["perceptual"] = float(perc.detach())
        adv = PatchAdversarialLoss(criterion="least_squares")
        if adv_on:
            g_adv = adv(self.discriminator(recon.contiguous())[-1], target_is_real=True, for_discriminator=False)
            loss = loss + p.adv_weight * g_adv
            out["g_adv"] = float(g_adv.detach())
        ctx.backward(loss, "autoencoder")
        out["loss"] = float(loss.detach())
        if adv_on:
            fake = adv(self.discriminator(recon.detach().contiguous())[-1], target_is_real=False, for_discriminator=True)
            real = adv(self.discriminator(x.contiguous())[-1], target_is_real=True, for_discriminator=True)
            d_loss = p.adv_weight * 0.5 * (fake + real)
            ctx.backward(d_loss, "discriminator")
            out["d_loss"] = float(d_loss.detach())
        return out

    def validation_step(self, batch, stage):
        x = batch["image"]
        if stage == "autoencoder":
            return {"mae": float(F.l1_loss(self.reconstruct(x).clamp(0, 1), x))}  # as sampling clips it
        gen = torch.Generator(device="cpu").manual_seed(1234)
        mu, sigma = self.autoencoder.encode(x)
        z = mu * self.scale_factor
        labels = batch["label"] if self.conditional else None
        return {"mse": float(self.denoiser.validation_loss(z, labels, gen))}

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x):
        mu, _ = self.autoencoder.encode(x)
        return self.autoencoder.decode(mu)

    @torch.no_grad()
    def sample(self, n, labels=None, steps=None, generator=None, sampler="ddim", guidance=1.0, progress=None):
        latent_size = tuple(s // self.down for s in self.info.size)
        shape = (n, self.params.autoencoder.latent_channels, *latent_size)
        y = sample_labels(self, n, labels, self.device)
        z = self.denoiser.sample(shape, y, sampler, steps, guidance, generator, clip=None, progress=progress)
        return self.autoencoder.decode(z / self.scale_factor).clamp(0, 1)

    def to_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(x)[0] * self.scale_factor

    def from_diffusion_space(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z / self.scale_factor).clamp(0, 1)
