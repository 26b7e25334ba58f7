"""Denoising diffusion shared by the pixel DDPM and the latent diffusion model.

Networks and noise schedules come from MONAI (``DiffusionModelUNet``; the schedule registry
behind ``DDPMScheduler``). The samplers (``ddpm``: the respaced ancestral step; ``ddim``) are in
``medgen.samplers``, one module each, all walking the same respaced timestep list.

The network's target (``scheduler.prediction_type``): the added noise (``epsilon``, Ho et al.) or
the velocity v = sqrt(abar) eps - sqrt(1 - abar) x_0 (``v_prediction``, Salimans & Ho 2022);
``eps()`` always returns the noise, so the samplers and the anomaly detector do not care which.
min-SNR-gamma loss weighting (``scheduler.snr_gamma``, Hang et al. 2023): the per-timestep loss is
weighted by min(SNR, gamma) / SNR (epsilon) or min(SNR, gamma) / (SNR + 1) (v), so the nearly
noise-free timesteps stop dominating the gradient; off (uniform weights) by default.

Classifier-free guidance (Ho & Salimans 2022): labels are dropped to a "null" class with
  probability ``cond_drop_prob`` during training; sampling mixes
  eps = eps_null + g * (eps_label - eps_null).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from medgen import samplers as sampler_registry
from medgen.models.base import FamilyParams, GenerativeModel
from medgen.samplers.base import respaced_timesteps


class SchedulerParams(FamilyParams):
    num_train_timesteps: int = Field(1000, ge=2)
    schedule: Literal["linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine"] = "linear_beta"
    beta_start: float = Field(1e-4, gt=0)
    beta_end: float = Field(0.02, gt=0, lt=1)
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    snr_gamma: float | None = Field(None, gt=0)  # min-SNR-gamma weighting (5 in Hang et al.); None: uniform


class UNetParams(FamilyParams):
    channels: list[int] = [32, 64, 64]
    attention_levels: list[bool] = [False, True, True]
    num_res_blocks: int = Field(1, ge=1)
    num_head_channels: int | list[int] = 32
    norm_num_groups: int = Field(8, ge=1)
    resblock_updown: bool = False


def build_unet(p: UNetParams, spatial_dims: int, channels: int, num_class_embeds: int | None):
    from monai.networks.nets import DiffusionModelUNet

    if len(p.channels) != len(p.attention_levels):
        raise ValueError("unet.channels and unet.attention_levels must have the same length")
    return DiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=channels, out_channels=channels, channels=tuple(p.channels),
        attention_levels=tuple(p.attention_levels), num_res_blocks=p.num_res_blocks,
        num_head_channels=p.num_head_channels if isinstance(p.num_head_channels, int) else tuple(p.num_head_channels),
        norm_num_groups=p.norm_num_groups, resblock_updown=p.resblock_updown, num_class_embeds=num_class_embeds,
    )


def make_schedule(p: SchedulerParams) -> torch.Tensor:
    """alphas_cumprod of the training schedule (MONAI's schedule registry)."""
    from monai.networks.schedulers import DDPMScheduler

    kwargs = {} if p.schedule == "cosine" else {"beta_start": p.beta_start, "beta_end": p.beta_end}
    return DDPMScheduler(num_train_timesteps=p.num_train_timesteps, schedule=p.schedule, **kwargs).alphas_cumprod.clone()


class Denoiser(torch.nn.Module):
    """A U-Net noise predictor with its schedule, conditioning and samplers."""

    def __init__(self, unet_params: UNetParams, sched: SchedulerParams, spatial_dims: int, channels: int,
                 num_classes: int, conditional: bool, cond_drop_prob: float, loss: str = "mse"):
        super().__init__()
        self.conditional = conditional and num_classes > 1
        self.num_classes = num_classes
        self.null_label = num_classes  # the extra class embedding used for "no label"
        self.cond_drop_prob = cond_drop_prob
        self.loss_type = loss
        self.sched = sched
        self.unet = build_unet(unet_params, spatial_dims, channels, num_classes + 1 if self.conditional else None)
        self.register_buffer("alphas_cumprod", make_schedule(sched), persistent=False)

    @property
    def T(self) -> int:
        return self.sched.num_train_timesteps

    def net(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.unet(x, t, class_labels=labels if self.conditional else None)

    def _abar_of(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t].view(-1, *([1] * (like.dim() - 1)))

    def eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The predicted noise at x_t, whatever the network's target."""
        out = self.net(x, t, labels)
        if self.sched.prediction_type == "v_prediction":  # eps = sqrt(abar) v + sqrt(1 - abar) x_t
            abar = self._abar_of(t, x).to(out.dtype)
            return abar.sqrt() * out + (1 - abar).sqrt() * x
        return out

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.sched.prediction_type == "v_prediction":
            abar = self._abar_of(t, x0)
            return abar.sqrt() * noise - (1 - abar).sqrt() * x0
        return noise

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-sample min-SNR-gamma weights (None: uniform)."""
        if self.sched.snr_gamma is None:
            return None
        abar = self.alphas_cumprod[t]
        snr = abar / (1 - abar)
        clipped = snr.clamp(max=self.sched.snr_gamma)
        return clipped / (snr + 1) if self.sched.prediction_type == "v_prediction" else clipped / snr

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process, Ho et al. eq. 4: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        abar = self._abar_of(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def training_loss(self, x0: torch.Tensor, labels: torch.Tensor | None, ctx) -> torch.Tensor:
        """Simple loss (Ho et al. eq. 14): predict the added noise (or v); MSE by default, L1 as S002
        suggests; weighted per timestep when ``snr_gamma`` is set."""
        noise = ctx.randn(x0.shape)
        t = ctx.randint(self.T, (x0.shape[0],))
        if self.conditional:
            drop = ctx.rand((x0.shape[0],)) < self.cond_drop_prob
            labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)
        with ctx.autocast():
            pred = self.net(self.q_sample(x0, t, noise), t, labels)
        pred, target = pred.float(), self.target(x0, noise, t)
        err = (pred - target).abs() if self.loss_type == "l1" else (pred - target) ** 2
        weights = self.loss_weights(t)
        if weights is None:
            return err.mean()
        return (err.flatten(1).mean(1) * weights).mean()

    @torch.no_grad()
    def validation_loss(self, x0: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        t = torch.randint(0, self.T, (x0.shape[0],), generator=generator, device=generator.device).to(x0.device)
        pred = self.net(self.q_sample(x0, t, noise), t, labels)
        return F.mse_loss(pred, self.target(x0, noise, t))

    def guided_eps(self, x: torch.Tensor, t: int, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if not self.conditional or labels is None:
            return self.eps(x, tt, None if not self.conditional else torch.full((x.shape[0],), self.null_label, device=x.device))
        if guidance == 1.0:
            return self.eps(x, tt, labels)
        null = torch.full_like(labels, self.null_label)
        both = self.eps(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def timesteps(self, steps: int | None) -> list[int]:
        return respaced_timesteps(self.T, steps)

    @torch.no_grad()
    def sample(self, shape: tuple[int, ...], labels: torch.Tensor | None, sampler: str = "ddim", steps: int | None = None,
               guidance: float = 1.0, generator: torch.Generator | None = None, clip: tuple[float, float] | None = (-1.0, 1.0),
               progress=None) -> torch.Tensor:
        """Images (in the denoiser's [-1, 1] or latent space) from pure noise, by the registered ``sampler``."""
        device = self.alphas_cumprod.device
        if steps is not None and steps > self.T:
            raise ValueError(f"{steps} sampling steps exceed the {self.T} timesteps this model was trained with")
        walker = sampler_registry.get(sampler)
        x = torch.randn(shape, generator=generator, device=generator.device if generator is not None else device).to(device)
        return walker.run(self, x, self.timesteps(steps), labels, guidance, generator, clip, progress)


class DiffusionFamily(GenerativeModel):
    """A family that samples by walking a ``Denoiser`` (``self.denoiser``) from noise: it takes every
    registered sampler that drives a noise predictor, so a new sampler needs no change here."""

    @property
    def samplers(self) -> tuple[str, ...]:
        return tuple(sampler_registry.names(drives="noise"))

    @property
    def num_timesteps(self) -> int:
        return self.denoiser.T

    @property
    def conditional(self) -> bool:
        return self.denoiser.conditional
