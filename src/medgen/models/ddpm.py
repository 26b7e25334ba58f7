"""Pixel-space DDPM (S002: 3D 8x64x64 breast tomosynthesis; 2D works the same way).

Images in [0, 1] are mapped to [-1, 1] for the diffusion process and back for output.
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
        x0 = batch["image"] * 2 - 1
        loss = self.denoiser.training_loss(x0, batch["label"], ctx)
        ctx.backward(loss)
        return {"loss": float(loss.detach())}

    def validation_step(self, batch, stage):
        gen = torch.Generator(device="cpu").manual_seed(1234)  # the same noise every validation
        labels = batch["label"] if self.conditional else None
        return {"mse": float(self.denoiser.validation_loss(batch["image"] * 2 - 1, labels, gen))}

    @torch.no_grad()
    def sample(self, n, labels=None, steps=None, generator=None, sampler="ddim", guidance=1.0, progress=None):
        shape = (n, self.info.channels, *self.info.size)
        y = sample_labels(self, n, labels, self.device)
        x = self.denoiser.sample(shape, y, sampler, steps, guidance, generator, clip=(-1.0, 1.0), progress=progress)
        return ((x + 1) / 2).clamp(0, 1)

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
        x0 = x.to(device).float() * 2 - 1
        gdev = generator.device if generator is not None else device
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(device)
        xt = den.noised(x0, torch.full((x0.shape[0],), t_start, device=device, dtype=torch.long), noise)
        xt = sampler_registry.get(sampler).run(den, xt, timesteps, None, 1.0, generator, (-1.0, 1.0))
        return ((xt + 1) / 2).clamp(0, 1)

    def to_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1

    def from_diffusion_space(self, z: torch.Tensor) -> torch.Tensor:
        return ((z + 1) / 2).clamp(0, 1)
