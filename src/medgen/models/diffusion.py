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

Two training objectives (``scheduler.objective``):
- ``diffusion`` (the default): the DDPM forward process above; its samplers (``drives="noise"``)
  walk the noise prediction.
- ``rflow``: rectified flow (Liu et al. 2022; Esser et al. 2024), through MONAI's
  ``RFlowScheduler``: x_t = (1 - t/T) x_0 + (t/T) eps on a straight line from the image (t = 0) to
  the noise (t = T), the network predicts the velocity v = x_0 - eps, and training times are drawn
  uniformly or logit-normally (``scheduler.time_sampling``; Esser et al.'s best: logit-normal(0, 1)).
  Its samplers (``drives="velocity"``: ``rflow``, ``rflow-heun``) integrate that ODE; the beta schedule,
  ``prediction_type`` and ``snr_gamma`` do not apply to it.

Classifier-free guidance (Ho & Salimans 2022): labels are dropped to a "null" class with
  probability ``cond_drop_prob`` during training; sampling mixes
  out = out_null + g * (out_label - out_null), on the noise or on the velocity.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from medgen import samplers as sampler_registry
from medgen.errors import UserError
from medgen.models.base import FamilyParams, GenerativeModel
from medgen.samplers.base import respaced_timesteps


class SchedulerParams(FamilyParams):
    num_train_timesteps: int = Field(1000, ge=2)
    schedule: Literal["linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine"] = "linear_beta"
    beta_start: float = Field(1e-4, gt=0)
    beta_end: float = Field(0.02, gt=0, lt=1)
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    snr_gamma: float | None = Field(None, gt=0)  # min-SNR-gamma weighting (5 in Hang et al.); None: uniform
    objective: Literal["diffusion", "rflow"] = "diffusion"  # rflow: rectified flow (MONAI's RFlowScheduler)
    # rflow only: how training times t/T are drawn (MONAI's sample_method); logit-normal(loc, scale)
    # puts more of them mid-way between image and noise, Esser et al. 2024's best choice
    time_sampling: Literal["uniform", "logit-normal"] = "logit-normal"
    logit_loc: float = 0.0
    logit_scale: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _rflow_predicts_velocity(self):
        if self.objective == "rflow" and (self.prediction_type != "epsilon" or self.snr_gamma is not None):
            raise ValueError("objective 'rflow' always predicts the velocity x_0 - noise: prediction_type "
                             "(v_prediction) and snr_gamma apply only to objective 'diffusion'")
        return self

    @property
    def drives(self) -> str:
        """What the network predicts, i.e. which registered samplers can walk it."""
        return "velocity" if self.objective == "rflow" else "noise"


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


def make_flow(p: SchedulerParams):
    """MONAI's rectified-flow scheduler for ``objective: rflow`` (discrete integer times 0..T)."""
    from monai.networks.schedulers import RFlowScheduler

    return RFlowScheduler(num_train_timesteps=p.num_train_timesteps, use_discrete_timesteps=True,
                          sample_method=p.time_sampling, loc=p.logit_loc, scale=p.logit_scale)


def flow_times(flow, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` training times drawn by MONAI's ``RFlowScheduler.sample_timesteps``, from ``generator``
    (the trainer's, so a resumed run draws the same times) instead of torch's global generator:
    MONAI draws from the global one, so its state is swapped in for the call and back out."""
    with torch.random.fork_rng(devices=[]):  # the global CPU state is restored on exit
        torch.set_rng_state(generator.get_state())
        t = flow.sample_timesteps(torch.empty(n, 1))  # MONAI reads only the batch size and device
        generator.set_state(torch.get_rng_state())
    return t


class Denoiser(torch.nn.Module):
    """A U-Net noise (``objective: diffusion``) or velocity (``objective: rflow``) predictor with its
    schedule, conditioning and samplers."""

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
        self.objective = sched.objective
        self.drives = sched.drives
        if self.objective == "rflow":
            # MONAI's schedulers subclass nn.Module without initialising it: kept out of the module
            # tree (it has no weights; nothing of it belongs in a checkpoint)
            self.__dict__["flow"] = make_flow(sched)
        else:
            self.register_buffer("alphas_cumprod", make_schedule(sched), persistent=False)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

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
        if self.objective == "rflow":  # the velocity of the straight path, as in MONAI's RFlowScheduler example
            return x0 - noise
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

    def noised(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t of the training objective: ``q_sample`` or the rectified-flow interpolation (MONAI's ``add_noise``)."""
        if self.objective == "rflow":
            return self.flow.add_noise(x0, noise, t)
        return self.q_sample(x0, t, noise)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process, Ho et al. eq. 4: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        abar = self._abar_of(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def training_loss(self, x0: torch.Tensor, labels: torch.Tensor | None, ctx) -> torch.Tensor:
        """Simple loss (Ho et al. eq. 14): predict the added noise (or v); MSE by default, L1 as S002
        suggests; weighted per timestep when ``snr_gamma`` is set."""
        noise = ctx.randn(x0.shape)
        if self.objective == "rflow":
            t = flow_times(self.flow, x0.shape[0], ctx.generator).to(x0.device)
        else:
            t = ctx.randint(self.T, (x0.shape[0],))
        if self.conditional:
            drop = ctx.rand((x0.shape[0],)) < self.cond_drop_prob
            labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)
        with ctx.autocast():
            pred = self.net(self.noised(x0, t, noise), t, labels)
        pred, target = pred.float(), self.target(x0, noise, t)
        err = (pred - target).abs() if self.loss_type == "l1" else (pred - target) ** 2
        weights = self.loss_weights(t)
        if weights is None:
            return err.mean()
        return (err.flatten(1).mean(1) * weights).mean()

    @torch.no_grad()
    def validation_loss(self, x0: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        if self.objective == "rflow":
            t = flow_times(self.flow, x0.shape[0], generator).to(x0.device)
        else:
            t = torch.randint(0, self.T, (x0.shape[0],), generator=generator, device=generator.device).to(x0.device)
        pred = self.net(self.noised(x0, t, noise), t, labels)
        return F.mse_loss(pred, self.target(x0, noise, t))

    def _guided(self, predict, x: torch.Tensor, t: int, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """``predict(x, t, labels)`` with classifier-free guidance: the null class for an unconditional
        call, out_null + g (out_label - out_null) otherwise."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if not self.conditional or labels is None:
            return predict(x, tt, None if not self.conditional else torch.full((x.shape[0],), self.null_label, device=x.device))
        if guidance == 1.0:
            return predict(x, tt, labels)
        null = torch.full_like(labels, self.null_label)
        both = predict(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def guided_eps(self, x: torch.Tensor, t: int, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """The (guided) noise prediction at timestep ``t``: what the ``drives="noise"`` samplers walk."""
        return self._guided(self.eps, x, t, labels, guidance)

    def guided_velocity(self, x: torch.Tensor, t: int, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """The (guided) velocity x_0 - noise at time ``t`` of an ``rflow`` model: what the
        ``drives="velocity"`` samplers walk."""
        return self._guided(self.net, x, t, labels, guidance)

    def timesteps(self, steps: int | None) -> list[int]:
        """The descending timesteps a sampler walks: respaced over training's (diffusion), or MONAI's
        ``RFlowScheduler.set_timesteps`` grid T, T (1 - 1/steps), ..., T / steps (rflow; the walk ends at 0)."""
        if self.objective == "rflow":
            self.flow.set_timesteps(min(steps or self.T, self.T))
            return [int(t) for t in self.flow.timesteps.tolist()]
        return respaced_timesteps(self.T, steps)

    def check_sampler(self, sampler: str) -> None:
        """A UserError naming the sampler and the objective when ``sampler`` cannot walk this network."""
        sampler_registry.check_name(sampler)
        fits = sampler_registry.names(drives=self.drives)
        if sampler not in fits:
            raise UserError(f"sampler '{sampler}' walks a {sampler_registry.SAMPLERS[sampler].drives} predictor, but this "
                            f"model was trained with objective '{self.objective}' (it predicts the {self.drives}): "
                            f"use {' or '.join(fits)}")

    @torch.no_grad()
    def sample(self, shape: tuple[int, ...], labels: torch.Tensor | None, sampler: str = "ddim", steps: int | None = None,
               guidance: float = 1.0, generator: torch.Generator | None = None, clip: tuple[float, float] | None = (-1.0, 1.0),
               progress=None) -> torch.Tensor:
        """Images (in the denoiser's [-1, 1] or latent space) from pure noise, by the registered ``sampler``."""
        device = self.device
        if steps is not None and steps > self.T:
            raise ValueError(f"{steps} sampling steps exceed the {self.T} timesteps this model was trained with")
        self.check_sampler(sampler)
        walker = sampler_registry.get(sampler)
        x = torch.randn(shape, generator=generator, device=generator.device if generator is not None else device).to(device)
        return walker.run(self, x, self.timesteps(steps), labels, guidance, generator, clip, progress)


class DiffusionFamily(GenerativeModel):
    """A family that samples by walking a ``Denoiser`` (``self.denoiser``) from noise: it takes every
    registered sampler that drives what its denoiser predicts (the noise, or the velocity of an
    ``rflow`` model), so a new sampler needs no change here."""

    inpaints: bool = False  # RePaint (medgen.inpaint) for a family whose denoiser predicts the noise

    @property
    def samplers(self) -> tuple[str, ...]:
        return tuple(sampler_registry.names(drives=self.denoiser.drives))

    @property
    def can_inpaint(self) -> bool:
        """RePaint's resampling walks the DDPM posterior (q(x_t | x_t') and its noise schedule), which a
        rectified-flow model does not have: only a noise-objective model inpaints."""
        return self.inpaints and self.denoiser.objective == "diffusion"

    def check_sampler(self, sampler: str) -> None:
        self.denoiser.check_sampler(sampler)

    @property
    def num_timesteps(self) -> int:
        return self.denoiser.T

    @property
    def conditional(self) -> bool:
        return self.denoiser.conditional
