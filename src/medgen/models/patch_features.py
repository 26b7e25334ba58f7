"""``patch-features``: an encoder whose per-pixel features feed the feature-based anomaly detectors
(``patchcore``: nearest-neighbour patch memory; ``padim``: per-position Gaussians; see
:mod:`medgen.anomaly.detectors`). It does not generate images.

Encoders (``encoder``):
- ``trained`` (default, offline): a small 2-level conv encoder trained here, self-supervised, on
  the run's normal images as the encoder of a denoising autoencoder (coarse Gaussian noise of std
  ``input_noise`` drawn at ``noise_resolution`` and upsampled, as in ``conv-ae``): to undo the
  noise it has to learn what normal anatomy looks like around each pixel. The light decoder is
  used only for that training.
- ``vgg16``: the first two conv blocks of ImageNet VGG16 from a LOCAL file (``encoder_weights``:
  PATH or ``auto``, see ``medgen weights``), frozen. A missing file is an error naming it, never a
  silent switch to random weights. Only the (unused) decoder trains, so one epoch is enough.

``patch_features(x)``: level-1 features (full resolution), level-2 features upsampled, and the
input itself, averaged over 3x3 neighbourhoods (PatchCore's local aggregation), taken every
``feature_stride`` pixels: (B, D, H / stride, W / stride).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from medgen.errors import UserError
from medgen.models.base import FamilyParams, GenerativeModel

VGG16_BLOCK_ENDS = (3, 8)  # indices of the ReLUs that end VGG16's first and second conv blocks


class PatchFeatureParams(FamilyParams):
    encoder: Literal["trained", "vgg16"] = "trained"
    encoder_weights: str | None = None  # vgg16: a local ImageNet file, or "auto" (medgen weights' places)
    channels: list[int] = [32, 64]      # trained encoder: widths of its two levels
    input_noise: float = Field(0.2, ge=0)
    noise_resolution: int | None = Field(16, ge=1)
    feature_stride: int = Field(2, ge=1, le=4)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class TwoLevelEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: list[int]):
        super().__init__()
        self.level1 = _block(in_channels, channels[0])
        self.level2 = _block(channels[0], channels[1])
        self.widths = (channels[0], channels[1])

    def forward(self, x):
        f1 = self.level1(x)
        return f1, self.level2(F.max_pool2d(f1, 2))


class FrozenVGG16(nn.Module):
    def __init__(self, in_channels: int, spec: str | None, restoring: bool = False):
        from medgen.models.conv_ae import VGG16_WEIGHTS_FILE, VGG16Encoder, load_vgg16_weights, resolve_encoder_weights

        super().__init__()
        path = None if restoring else resolve_encoder_weights(spec)  # restoring: the checkpoint, loaded next, has them
        if path is None and not restoring:
            raise UserError(f"model.encoder=vgg16 needs the local ImageNet file {VGG16_WEIGHTS_FILE}: give "
                            "model.encoder_weights=PATH, or put it where `medgen weights` looks and use auto; "
                            "or use model.encoder=trained (offline)")
        self.net = VGG16Encoder(in_channels, 2)
        self.widths = (64, 128)
        self.loaded_from = str(path) if path else "the run's checkpoint"
        if path is not None:
            load_vgg16_weights(self.net.features, path)
        self.requires_grad_(False)

    def forward(self, x):
        if self.net.in_channels == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        h = (x - self.net.mean) / self.net.std
        out = []
        for i, layer in enumerate(self.net.features):
            h = layer(h)
            if i in VGG16_BLOCK_ENDS:
                out.append(h)
            if i == VGG16_BLOCK_ENDS[-1]:
                break
        return tuple(out)


class PatchFeatures(GenerativeModel):
    Params = PatchFeatureParams
    stages = ("encoder",)
    can_sample = False  # an encoder for the feature detectors: training ends without a sample grid
    detectors = ("patchcore", "padim")

    def __init__(self, params: PatchFeatureParams, info):
        super().__init__(params, info)
        from medgen.models.conv_ae import _RESTORING

        if info.spatial_dims != 2:
            raise UserError("patch-features is 2D only")
        if len(params.channels) != 2 or min(params.channels) < 1:
            raise UserError(f"model.channels needs two positive widths, got {params.channels}")
        if any(s % 2 for s in info.size):
            raise UserError(f"image size {tuple(info.size)} must be even (the encoder halves it once)")
        if params.encoder == "vgg16":
            self.encoder = FrozenVGG16(info.channels, params.encoder_weights, restoring=_RESTORING.get())
        else:
            self.encoder = TwoLevelEncoder(info.channels, params.channels)
        w1, w2 = self.encoder.widths
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w2, w1, 3, padding=1),
                                     nn.ReLU(inplace=True), nn.Conv2d(w1, info.channels, 3, padding=1))

    def notes(self) -> list[str]:
        if self.params.encoder == "vgg16":
            return [f"encoder: VGG16 blocks 1-2, frozen ImageNet weights from {self.encoder.loaded_from}"]
        return [f"encoder: 2-level conv encoder {self.params.channels}, trained here as a denoising autoencoder"]

    def describe(self) -> dict:
        p = self.params
        return {"encoder": p.encoder, "encoder_weights": "imagenet" if p.encoder == "vgg16" else "trained on the run's normals",
                "feature_channels": sum(self.encoder.widths) + self.info.channels, "feature_stride": p.feature_stride}

    def optimizers(self, stage, cfg):
        params = [q for q in self.parameters() if q.requires_grad]
        return {"main": torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)}

    def _noisy(self, x, ctx):
        p = self.params
        if p.input_noise <= 0:
            return x
        if p.noise_resolution:
            n = ctx.randn((x.shape[0], x.shape[1], p.noise_resolution, p.noise_resolution))
            n = F.interpolate(n, size=x.shape[2:], mode="bilinear", align_corners=False)
        else:
            n = ctx.randn(x.shape)
        return x + p.input_noise * n

    def forward(self, x):
        return torch.sigmoid(self.decoder(self.encoder(x)[-1]))

    def training_step(self, batch, stage, ctx):
        x = batch["image"]
        with ctx.autocast():
            recon = self(self._noisy(x, ctx))
        loss = F.l1_loss(recon.float(), x)
        ctx.backward(loss)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def validation_step(self, batch, stage):
        x = batch["image"]
        return {"mae": float(F.l1_loss(self(x), x))}

    @torch.no_grad()
    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2 = self.encoder(x)
        f2 = F.interpolate(f2, size=f1.shape[2:], mode="bilinear", align_corners=False)
        f = F.avg_pool2d(torch.cat([f1, f2, x], dim=1), 3, stride=1, padding=1, count_include_pad=False)
        s = self.params.feature_stride
        return f[:, :, s // 2::s, s // 2::s] if s > 1 else f

    @torch.no_grad()
    def sample(self, n, labels=None, steps=None, generator=None, **kwargs):
        raise UserError("patch-features is an encoder for anomaly detection: it does not generate images "
                        "(use `medgen detect RUN`)")

