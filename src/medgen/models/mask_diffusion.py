"""Mask-conditioned pixel diffusion: "put a lesion of this class here" (2D and 3D).

The noise predictor is MONAI's ``SPADEDiffusionModelUNet`` (Park et al. 2019's spatially-adaptive
normalisation inside the diffusion U-Net, as in MONAI's label-map-to-image tutorials): every
normalisation layer is modulated by the label map (one-hot: background + ``mask_classes``), resized
to that layer's resolution, so the layout of the image follows the mask at every scale. With
``conditional: true`` the image class (e.g. the lesion type) is a second condition through the
class embedding, with classifier-free guidance as in the other diffusion families.

Training needs a prepared dataset with masks (``masks.npy``: the built-in ``brain-lesions``, or a CSV
with a mask column). ``--init-from`` a plain ``ddpm`` run of the same U-Net size starts from its weights
(the SPADE layers, which the plain U-Net lacks, start fresh). Sampling takes the masks as an extra
argument; ``medgen sample RUN --masks SOURCE`` supplies them (see :mod:`medgen.masks`).
"""
from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from medgen.errors import UserError
from medgen.models.base import sample_labels
from medgen.models.ddpm import DDPMParams, PixelDiffusion
from medgen.models.diffusion import Denoiser, DiffusionFamily, UNetParams


class MaskParams(DDPMParams):
    """What every mask-conditioned pixel family shares (``mask-ddpm``, ``mask-controlnet``)."""
    mask_classes: int = Field(1, ge=1, le=254)  # label values 1..mask_classes; 0 is background


class MaskDDPMParams(MaskParams):
    spade_channels: int = Field(32, ge=4)       # hidden width of each SPADE modulation


def one_hot(masks: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, 1, *size) integer label map -> (B, classes + 1, *size) float."""
    m = masks.long().clamp(0, classes)[:, 0]
    return F.one_hot(m, classes + 1).movedim(-1, 1).float()


class LabelMapConditioning:
    """For a ``Denoiser`` whose network also reads a label map: the map in force is set with
    :meth:`conditioned_on`, so the inherited training, sampling and RePaint loops, which call
    ``net(x, t, labels)``, stay unchanged; ``net`` reads it with :meth:`label_map`."""

    mask_classes: int
    _seg: torch.Tensor | None = None

    @contextlib.contextmanager
    def conditioned_on(self, masks: torch.Tensor):
        self._seg = one_hot(masks, self.mask_classes)
        try:
            yield self
        finally:
            self._seg = None

    def label_map(self, batch: int) -> torch.Tensor:
        """The one-hot map for a batch of ``batch`` (classifier-free guidance doubles the batch)."""
        if self._seg is None:
            raise RuntimeError("a mask-conditioned denoiser needs a label map: call inside conditioned_on(masks)")
        seg = self._seg
        if seg.shape[0] != batch:
            seg = seg.repeat(batch // seg.shape[0], *([1] * (seg.dim() - 1)))
        return seg


class MaskDenoiser(LabelMapConditioning, Denoiser):
    """The shared denoiser (schedule, guidance, samplers) with a SPADE U-Net."""

    def __init__(self, p: MaskDDPMParams, spatial_dims: int, channels: int, num_classes: int):
        super().__init__(p.unet, p.scheduler, spatial_dims, channels, num_classes, p.conditional, p.cond_drop_prob, p.loss)
        self.mask_classes = p.mask_classes
        self.unet = build_spade_unet(p.unet, spatial_dims, channels, p.mask_classes + 1,
                                     num_classes + 1 if self.conditional else None, p.spade_channels)

    def net(self, x, t, labels):
        return self.unet(x, t, seg=self.label_map(x.shape[0]), class_labels=labels if self.conditional else None)


def build_spade_unet(p: UNetParams, spatial_dims: int, channels: int, label_nc: int, num_class_embeds: int | None,
                     spade_channels: int):
    from monai.networks.nets import SPADEDiffusionModelUNet

    if len(p.channels) != len(p.attention_levels):
        raise UserError("model.unet.channels and model.unet.attention_levels must have the same length")
    return SPADEDiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=channels, out_channels=channels, label_nc=label_nc,
        channels=tuple(p.channels), attention_levels=tuple(p.attention_levels), num_res_blocks=p.num_res_blocks,
        num_head_channels=p.num_head_channels if isinstance(p.num_head_channels, int) else tuple(p.num_head_channels),
        norm_num_groups=p.norm_num_groups, resblock_updown=p.resblock_updown, num_class_embeds=num_class_embeds,
        spade_intermediate_channels=spade_channels,
    )


class MaskDiffusion(DiffusionFamily):
    Params = MaskDDPMParams
    denoiser_class: ClassVar[type[Denoiser]] = MaskDenoiser  # built from (params, spatial_dims, channels, classes)
    stages = ("diffusion",)
    needs_masks = True
    inpaints = True

    @property
    def mask_classes(self) -> int:
        return self.params.mask_classes

    def __init__(self, params: MaskDDPMParams, info):
        super().__init__(params, info)
        self.denoiser = self.denoiser_class(params, info.spatial_dims, info.channels, info.num_classes)

    def ema_target(self, stage):
        return "denoiser.unet"

    def _masks(self, batch) -> torch.Tensor:
        if "mask" not in batch:
            raise UserError("a mask-conditioned model trains on image + mask pairs: the prepared dataset has no masks.npy "
                            "(use builtin:brain-lesions, or a CSV source with a mask column)")
        return batch["mask"]

    def training_step(self, batch, stage, ctx):
        with self.denoiser.conditioned_on(self._masks(batch)):
            loss = self.denoiser.training_loss(self.to_diffusion_space(batch["image"]), batch["label"], ctx)
        ctx.backward(loss)
        return {"loss": float(loss.detach())}

    def validation_step(self, batch, stage):
        gen = torch.Generator(device="cpu").manual_seed(1234)
        labels = batch["label"] if self.conditional else None
        with self.denoiser.conditioned_on(self._masks(batch)):
            return {"mse": float(self.denoiser.validation_loss(self.to_diffusion_space(batch["image"]), labels, gen))}

    @torch.no_grad()
    def sample(self, n, labels=None, steps=None, generator=None, sampler="ddim", guidance=1.0, progress=None, masks=None):
        if masks is None:
            raise UserError("this run is mask-conditioned: give label maps (medgen sample RUN --masks SOURCE)")
        if len(masks) != n:
            raise ValueError(f"{len(masks)} masks for {n} samples")
        shape = (n, self.info.channels, *self.info.size)
        y = sample_labels(self, n, labels, self.device)
        with self.denoiser.conditioned_on(masks.to(self.device)):
            x = self.denoiser.sample(shape, y, sampler, steps, guidance, generator, clip=self.clip, progress=progress)
        return self.from_diffusion_space(x)

    # the same [0, 1] <-> [-1, 1] map (and floor margin) as the plain pixel DDPM (also used by RePaint inpainting)
    clip = PixelDiffusion.clip
    to_diffusion_space = PixelDiffusion.to_diffusion_space
    from_diffusion_space = PixelDiffusion.from_diffusion_space
