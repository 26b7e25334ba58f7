"""Mask conditioning by a ControlNet on a trained pixel DDPM (Zhang, Rao & Agrawala 2023), 2D and 3D.

The second route to "put a lesion here", beside ``mask-ddpm``'s SPADE U-Net: keep a trained ``ddpm``
run's U-Net frozen and train MONAI's ``ControlNet`` beside it. The ControlNet is a copy of the U-Net's
encoder that also reads the one-hot label map (background + ``mask_classes``) through a small
embedding at the image's resolution; its residuals enter the frozen U-Net's skip connections and
middle block through 1x1 convolutions initialised to zero, so before the first step the model is
exactly the base model, and training can only add the mask's influence. The forward pass makes the
calls MONAI's ``ControlNetDiffusionInferer`` makes (ControlNet -> down/mid residuals -> U-Net);
it is written into ``Denoiser.net`` instead of through the inferer so that medgen's samplers,
classifier-free guidance and RePaint inpainting walk it unchanged.

``medgen train PRESET --init-from DDPM_RUN`` is required: the base run gives the U-Net's weights and
must have been trained with the same U-Net, noise schedule, image size and classes (checked; a run
that does not fit stops with one line naming the setting). Only the ControlNet trains, and the EMA
averages only it. A checkpoint holds both networks, so sampling needs the ControlNet run alone.
Masks, pairs, inpainting and the segmentation utility are the mask family's (:mod:`medgen.masks`,
:mod:`medgen.mask_sampling`), reached through ``needs_masks``.
"""
from __future__ import annotations

import json

import torch
from pydantic import Field

from medgen.errors import UserError
from medgen.validation import flatten
from medgen.models.base import FamilyParams
from medgen.models.diffusion import Denoiser, UNetParams
from medgen.models.mask_diffusion import LabelMapConditioning, MaskDiffusion, MaskParams


class ControlNetParams(FamilyParams):
    # width of the label-map embedding; one level (MONAI's conditioning_embedding_num_channels=(c,)) keeps
    # it at the image's resolution, where it is added to the ControlNet's first feature map
    embedding_channels: int = Field(16, ge=1)
    scale: float = Field(1.0, ge=0)  # multiplies the ControlNet's residuals (MONAI's conditioning_scale)


class MaskControlNetParams(MaskParams):
    controlnet: ControlNetParams = ControlNetParams()


def build_controlnet(p: UNetParams, spatial_dims: int, channels: int, label_nc: int, num_class_embeds: int | None,
                     embedding_channels: int):
    """MONAI's ControlNet shaped like the U-Net built by ``medgen.models.diffusion.build_unet`` from the same ``p``."""
    from monai.networks.nets import ControlNet

    return ControlNet(
        spatial_dims=spatial_dims, in_channels=channels, channels=tuple(p.channels), attention_levels=tuple(p.attention_levels),
        num_res_blocks=p.num_res_blocks,
        num_head_channels=p.num_head_channels if isinstance(p.num_head_channels, int) else tuple(p.num_head_channels),
        norm_num_groups=p.norm_num_groups, resblock_updown=p.resblock_updown, num_class_embeds=num_class_embeds,
        conditioning_embedding_in_channels=label_nc, conditioning_embedding_num_channels=(embedding_channels,),
    )


class ControlNetDenoiser(LabelMapConditioning, Denoiser):
    """The shared denoiser (schedule, guidance, samplers) with a frozen plain U-Net (``unet``, named as in a
    ``ddpm`` run so its weights load by name) steered by a trainable ``controlnet``."""

    def __init__(self, p: MaskControlNetParams, spatial_dims: int, channels: int, num_classes: int):
        super().__init__(p.unet, p.scheduler, spatial_dims, channels, num_classes, p.conditional, p.cond_drop_prob, p.loss)
        self.mask_classes = p.mask_classes
        self.scale = p.controlnet.scale
        self.controlnet = build_controlnet(p.unet, spatial_dims, channels, p.mask_classes + 1,
                                           num_classes + 1 if self.conditional else None, p.controlnet.embedding_channels)
        self.unet.requires_grad_(False)

    def net(self, x, t, labels):
        y = labels if self.conditional else None
        down, mid = self.controlnet(x=x, timesteps=t, controlnet_cond=self.label_map(x.shape[0]),
                                    conditioning_scale=self.scale, class_labels=y)
        return self.unet(x=x, timesteps=t, class_labels=y, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid)

    def controlnet_from_unet(self) -> None:
        """Start the ControlNet's encoder as a copy of the U-Net's (the ControlNet paper's initialisation, as in
        MONAI's tutorials); its label-map embedding and zero convolutions keep their own initial weights."""
        self.controlnet.load_state_dict(self.unet.state_dict(), strict=False)


class MaskControlNet(MaskDiffusion):
    Params = MaskControlNetParams
    denoiser_class = ControlNetDenoiser
    init_from_families = ("ddpm", "mask-controlnet")  # a base DDPM, or a ControlNet run to train further

    def ema_target(self, stage):
        return "denoiser.controlnet"

    def optimizers(self, stage, train_cfg):
        return {"main": torch.optim.Adam(self.denoiser.controlnet.parameters(), lr=train_cfg.lr,
                                         weight_decay=train_cfg.weight_decay)}

    def notes(self):
        frozen = sum(p.numel() for p in self.denoiser.unet.parameters())
        trained = sum(p.numel() for p in self.denoiser.controlnet.parameters())
        return [f"base U-Net frozen ({frozen / 1e6:.2f} M parameters, from --init-from); ControlNet trains "
                f"({trained / 1e6:.2f} M parameters)"]

    def on_init_from(self, source) -> None:
        """The base run must be the U-Net this model steers: same U-Net, schedule, class conditioning, floor
        margin (the map of pixels to diffusion space), image size and channels, class names (when conditional). Then the ControlNet starts as a copy of its encoder."""
        where = source.folder
        if source.params is None:
            raise UserError("--init-from needs the base run's directory (its config.yaml holds the U-Net and noise "
                            "schedule the ControlNet must match), not a checkpoint file", where)
        mine, theirs = self.params.model_dump(mode="json"), source.params.model_dump(mode="json")
        for key in ("unet", "scheduler", "conditional", "floor_margin"):
            a, b = flatten({"model": {key: mine[key]}}), flatten({"model": {key: theirs[key]}})
            for name in a:
                if a[name] != b.get(name):
                    want = json.dumps(b.get(name), separators=(",", ":"))
                    raise UserError(f"--init-from: the base run's {name} is {want}, this config's "
                                    f"{json.dumps(a[name], separators=(',', ':'))}: the ControlNet steers the base U-Net "
                                    f"as it was trained, so use its settings (the same profile, or --set {name}={want})", where)
        if source.spatial_dims is not None and source.spatial_dims != self.info.spatial_dims:
            raise UserError(f"--init-from: the base run is {source.spatial_dims}D, this run {self.info.spatial_dims}D", where)
        if source.info is not None:
            if tuple(source.info.size) != tuple(self.info.size) or source.info.channels != self.info.channels:
                raise UserError(f"--init-from: the base run was trained on {source.info.channels}-channel images of size "
                                f"{tuple(source.info.size)}, this run's data is {self.info.channels}-channel "
                                f"{tuple(self.info.size)}: prepare the data at the base run's size", where)
            if self.conditional and list(source.info.labels) != list(self.info.labels):
                raise UserError(f"--init-from: the base run's classes ({', '.join(source.info.labels)}) are not this "
                                f"run's ({', '.join(self.info.labels)}): the class embedding would mean other classes", where)
        base_missing = [k for k in source.report["not_initialised"] if k.startswith("denoiser.unet.")]
        if base_missing:
            raise UserError(f"--init-from: {len(base_missing)} tensors of the base U-Net did not load (first: "
                            f"{base_missing[0]})", where)
        if any(k.startswith("denoiser.controlnet.") for k in source.report["not_initialised"]):
            self.denoiser.controlnet_from_unet()
            source.report["controlnet"] = "encoder copied from the base U-Net; zero convolutions at zero"
        else:
            source.report["controlnet"] = "loaded from the --init-from run"
