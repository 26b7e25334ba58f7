"""Pixel-space DDPM (S002: 3D 8x64x64 breast tomosynthesis; 2D works the same way).

Images in [0, 1] are mapped to [-1, 1] for the diffusion process and back for output. With
``floor_margin`` m > 0, pixels at the floor (exactly 0: the background of skull-stripped MRI, a
mammogram's air after min-max scaling) are mapped to -1 - 2m instead, below every tissue value, and
the samplers clip to [-1 - 2m, 1]: the output's clamp to [0, 1] then turns a generated background
into exact zeros unless the network's error there exceeds m, instead of the grain of faint grey
that the last denoising steps leave on it (the latent models' ``floor_margin`` does the same in
their decoder).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from medgen import samplers as sampler_registry
from medgen.models.base import FamilyParams, sample_labels
from medgen.models.diffusion import Denoiser, DiffusionFamily, SchedulerParams, UNetParams


class DDPMParams(FamilyParams):
    unet: UNetParams = UNetParams()
    scheduler: SchedulerParams = SchedulerParams()
    loss: Literal["mse", "l1"] = "mse"
    conditional: bool = False
    cond_drop_prob: float = Field(0.1, ge=0, le=1)
    floor_margin: float = Field(0.0, ge=0, le=1)  # in [0, 1] image units; see the module's docstring

    def sampler_drives(self) -> tuple[str, str]:
        return self.scheduler.drives, f"model.scheduler.objective: {self.scheduler.objective}"


class PixelDiffusion(DiffusionFamily):
    Params = DDPMParams
    stages = ("diffusion",)
    detectors = ("diffusion",)
    inpaints = True

    def __init__(self, params: DDPMParams, info):
        super().__init__(params, info)
        self.denoiser = Denoiser(params.unet, params.scheduler, info.spatial_dims, info.channels, info.num_classes,
                                 params.conditional, params.cond_drop_prob, params.loss)

    def ema_target(self, stage):
        return "denoiser.unet"

    def training_step(self, batch, stage, ctx):
        x0 = self.to_diffusion_space(batch["image"])
        loss = self.denoiser.training_loss(x0, batch["label"], ctx)
        ctx.backward(loss)
        return {"loss": float(loss.detach())}

    def validation_step(self, batch, stage):
        gen = torch.Generator(device="cpu").manual_seed(1234)  # the same noise every validation
        labels = batch["label"] if self.conditional else None
        return {"mse": float(self.denoiser.validation_loss(self.to_diffusion_space(batch["image"]), labels, gen))}

    @torch.no_grad()
    def sample(self, n, labels=None, steps=None, generator=None, sampler="ddim", guidance=1.0, progress=None):
        shape = (n, self.info.channels, *self.info.size)
        y = sample_labels(self, n, labels, self.device)
        x = self.denoiser.sample(shape, y, sampler, steps, guidance, generator, clip=self.clip, progress=progress)
        return self.from_diffusion_space(x)

    @torch.no_grad()
    def partial_reconstruct(self, x: torch.Tensor, t_start: int, timesteps: list[int],
                            generator: torch.Generator | None, sampler: str) -> torch.Tensor:
        """Partial diffusion (AnoDDPM, medgen.anomaly.diffusion): jump to ``t_start`` with the training
        objective's forward process (q(x_t | x_0), Ho et al. eq. 4; for rflow the straight path at
        t_start / T), then walk ``timesteps`` (descending, from t_start to 0) back with the registered
        ``sampler``, the null class for a conditional model."""
        den = self.denoiser
        den.check_sampler(sampler)
        device = den.device
        x0 = self.to_diffusion_space(x.to(device).float())
        gdev = generator.device if generator is not None else device
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(device)
        xt = den.noised(x0, torch.full((x0.shape[0],), t_start, device=device, dtype=torch.long), noise)
        xt = sampler_registry.get(sampler).run(den, xt, timesteps, None, 1.0, generator, self.clip)
        return self.from_diffusion_space(xt)

    @property
    def clip(self) -> tuple[float, float]:
        """The samplers' range for the predicted clean image: the floor's value up to 1."""
        return (-1.0 - 2.0 * self.params.floor_margin, 1.0)

    def to_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        z = x * 2 - 1
        if self.params.floor_margin > 0:
            z = torch.where(x <= 0, torch.full_like(z, self.clip[0]), z)
        return z

    def from_diffusion_space(self, z: torch.Tensor) -> torch.Tensor:
        return ((z + 1) / 2).clamp(0, 1)
