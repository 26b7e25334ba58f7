"""The model protocol every family implements, so the engine, sampling, evaluation and anomaly
detection never switch on the family.

A family is a ``torch.nn.Module`` subclass of ``GenerativeModel`` with:
- ``Params``: a pydantic schema of its config keys (``model:`` section minus family/spatial_dims);
- ``stages``: training stages in order (LDM: autoencoder then diffusion; most: one);
- ``optimizers(stage, train_cfg)`` -> named optimisers for that stage;
- ``training_step(batch, stage, ctx)`` -> dict of float losses; it calls ``ctx.backward(loss, name)``
  once per optimiser step (a GAN calls it for the discriminator and the generator);
- ``validation_step(batch, stage)`` -> dict of float metrics (the first key is the one tracked
  for "best" and early stopping);
- ``sample(n, labels, steps, generator, ...)`` -> images in the data's [0, 1] range (unless
  ``can_sample`` is False: an autoencoder kept for anomaly detection);
- optionally ``reconstruct(x)`` and ``anomaly_map(x)``;
- ``init_from_families`` / ``on_init_from(source)``: a family that only makes sense on top of another
  trained run (a ControlNet steering a frozen DDPM) names the families ``--init-from`` must give and
  checks the source run once its weights are loaded.
Batches are dicts: ``image`` (B, C, *spatial) float in [0, 1], ``label`` (B,) long, maybe ``mask``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from medgen.errors import UserError


class FamilyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def sampler_drives(self) -> tuple[str, str] | None:
        """What the family's network predicts, for the registered samplers' ``drives`` (and the config
        key that decides it, for messages); None for a family without iterative samplers."""
        return None


@dataclass
class DataInfo:
    """What a model needs to know about its data to build itself."""

    spatial_dims: int
    channels: int
    size: tuple[int, ...]
    labels: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict:
        return {"spatial_dims": self.spatial_dims, "channels": self.channels, "size": list(self.size), "labels": list(self.labels)}

    @classmethod
    def from_json(cls, d: dict) -> "DataInfo":
        return cls(int(d["spatial_dims"]), int(d["channels"]), tuple(d["size"]), list(d.get("labels", [])))


@dataclass
class InitSource:
    """The run ``--init-from`` named, as a new run's ``on_init_from`` sees it: its family, its validated
    model parameters, spatial dims and data (None where only a checkpoint folder or file was given), and
    the load report (``loaded``, ``skipped``, ``not_initialised`` tensor names)."""

    folder: str
    family: str | None
    params: FamilyParams | None
    spatial_dims: int | None
    info: DataInfo | None
    report: dict


class GenerativeModel(torch.nn.Module):
    Params: ClassVar[type[FamilyParams]] = FamilyParams
    stages: ClassVar[tuple[str, ...]] = ("main",)
    autocasts: ClassVar[bool] = True  # whether training_step runs its forward passes in ctx.autocast()

    # --- declared capabilities: callers ask these, never probe a model's attributes ----------
    # iterative samplers ``sample(sampler=...)`` accepts (names from medgen.samplers' registry);
    # () for families that sample in one forward pass (GANs, VAEs)
    samplers: ClassVar[tuple[str, ...]] = ()
    can_sample: ClassVar[bool] = True       # sample(n, ...); False for a family that only reconstructs
    can_reconstruct: ClassVar[bool] = False  # reconstruct(x)
    can_score: ClassVar[bool] = False        # anomaly_map(x) of its own
    can_encode: ClassVar[bool] = False       # encode(x) / decode(z) through a latent space (interpolation)
    needs_masks: ClassVar[bool] = False      # sample(..., masks=label maps) is required (mask-conditioned families)
    # RePaint inpainting (medgen.inpaint): a ``denoiser`` plus to_diffusion_space(x) / from_diffusion_space(z)
    can_inpaint: ClassVar[bool] = False
    # anomaly detectors (names in medgen.anomaly's registry) that apply to this family, preferred first
    detectors: ClassVar[tuple[str, ...]] = ()
    # families whose trained runs a new run of this family must start from (``--init-from``); () when
    # starting from another run is optional (any run whose tensors fit)
    init_from_families: ClassVar[tuple[str, ...]] = ()

    def check_sampler(self, sampler: str) -> None:
        """A UserError when ``sampler`` is not one this model walks (a family that knows why says so)."""
        if self.samplers and sampler not in self.samplers:
            raise UserError(f"bad sampler '{sampler}': this model samples with {', '.join(self.samplers)}")

    @property
    def num_timesteps(self) -> int | None:
        """Training timesteps of a diffusion family (the default and the maximum step count); None otherwise."""
        return None

    def describe(self) -> dict:
        """Facts about this model worth recording beside its results (e.g. which pretrained weights it used)."""
        return {}

    def notes(self) -> list[str]:
        """One-line remarks about the built model for the training log (layout, missing optional weights)."""
        return []

    def on_init_from(self, source: "InitSource") -> None:
        """Called once in a new run after the ``--init-from`` weights are loaded; a UserError when the
        source run does not fit (only families with ``init_from_families`` need more than the tensors)."""

    def __init__(self, params: FamilyParams, info: DataInfo):
        super().__init__()
        self.params = params
        self.info = info

    @property
    def conditional(self) -> bool:
        return bool(getattr(self.params, "conditional", False)) and self.info.num_classes > 1

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- training -------------------------------------------------------------------------
    def optimizers(self, stage: str, train_cfg) -> dict[str, torch.optim.Optimizer]:
        return {"main": torch.optim.Adam(self.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)}

    def on_stage_start(self, stage: str, ctx) -> None:
        """Called before a stage's first epoch (and again on resume)."""

    def on_epoch_start(self, stage: str, epoch: int) -> None:
        """Called before every epoch (e.g. to unfreeze layers on schedule)."""

    def training_step(self, batch: dict, stage: str, ctx) -> dict[str, float]:
        raise NotImplementedError

    def validation_step(self, batch: dict, stage: str) -> dict[str, float]:
        raise NotImplementedError

    def ema_target(self, stage: str) -> str | None:
        """Name of the submodule whose weights get an exponential moving average in ``stage``."""
        return None

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, steps: int | None = None,
               generator: torch.Generator | None = None, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not reconstruct images")

    @torch.no_grad()
    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel anomaly scores (B, 1, *spatial); default: absolute reconstruction error."""
        return (x - self.reconstruct(x)).abs().mean(dim=1, keepdim=True)


class LatentPriorModel(GenerativeModel):
    """A family that samples in one forward pass: z ~ N(0, I) of ``params.latent_dim`` through
    ``from_latent(z, labels)`` (a GAN's generator, a VAE's decoder)."""

    def from_latent(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n, labels=None, steps=None, generator=None, progress=None, **kwargs):
        dev = generator.device if generator is not None else self.device
        z = torch.randn((n, self.params.latent_dim), generator=generator, device=dev).to(self.device)
        x = self.from_latent(z, sample_labels(self, n, labels, self.device)).clamp(0, 1)
        if progress is not None:
            progress()
        return x


def sample_labels(model: GenerativeModel, n: int, labels: torch.Tensor | None, device) -> torch.Tensor | None:
    """Label ids for n samples: the given ones, or classes in turn when conditional."""
    if not model.conditional:
        return None
    if labels is None:
        return torch.arange(n, device=device) % model.info.num_classes
    return labels.to(device)


def build_model(cfg, info: DataInfo) -> GenerativeModel:
    from medgen.models.registry import family_class

    cls = family_class(cfg.model.family)
    params = cls.Params.model_validate(cfg.model.params())
    info = DataInfo(cfg.model.spatial_dims, info.channels, info.size, info.labels)
    return cls(params, info)
