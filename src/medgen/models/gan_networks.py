"""The GAN networks (S004), used by the GAN and (the discriminator) the VAE-GAN.

- ``Generator``: DCGAN generator (Linear -> reshape -> [ConvTranspose | Upsample+Conv] + BatchNorm +
  LeakyReLU per level -> conv -> sigmoid), optionally conditioned by a label embedding.
- ``Discriminator``: Conv + [norm] + LeakyReLU + [Dropout] per level -> [minibatch std] -> Linear logit;
  conditioned by a learned label map concatenated to the image as an extra channel; ``features``
  exposes the intermediate maps (the VAE-GAN's learned similarity).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from medgen.models.layers import (act, batch_std, bottom_size, conv_cls, conv_transpose_cls, level_strides, norm_layer,
                                  per_level, updown_kernel)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (de Vries et al. 2017; the generators of
    Miyato & Koyama 2018 and BigGAN): the label acts at every resolution, not only through the input
    vector, so class-specific structure (where a lesion sits, how bright it is) has a direct path.
    Starts as plain BatchNorm (scale 1, shift 0 for every class)."""

    def __init__(self, channels: int, num_classes: int, spatial_dims: int):
        super().__init__()
        self.bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        return self.bn(x) * self.scale(labels).view(shape) + self.shift(labels).view(shape)


class Generator(nn.Module):
    """z (+ label embedding) -> Linear -> (C, *bottom) -> per level up-sampling + BatchNorm + LeakyReLU
    -> conv -> sigmoid, so outputs lie in [0, 1] like the data. ``cond_norm``: class-conditional
    BatchNorm (:class:`ConditionalBatchNorm`) in place of every BatchNorm. ``floor_margin`` m > 0:
    relu((1 + m) sigmoid - m) instead, so an output reaches exactly 0 (the background of a
    skull-stripped slice) at a finite activation, where a sigmoid leaves a haze of faint grey."""

    def __init__(self, spatial_dims: int, out_channels: int, size: Sequence[int], latent_dim: int,
                 channels: Sequence[int], num_classes: int = 0, embed_dim: int = 32, upsample: str = "transpose",
                 levels: int | None = None, cond_norm: bool = False, floor_margin: float = 0.0):
        super().__init__()
        self.floor_margin = floor_margin
        if cond_norm and not num_classes:
            raise ValueError("cond_norm (class-conditional BatchNorm) needs a conditional generator")
        self.cond_norm = cond_norm

        def norm(c):
            return ConditionalBatchNorm(c, num_classes, spatial_dims) if cond_norm else norm_layer("batch", c, spatial_dims)

        self.strides = level_strides(size, levels)
        chans = per_level(channels, len(self.strides), "channels")[::-1]  # deepest first
        self.bottom = bottom_size(size, self.strides)
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        self.fc = nn.Linear(in_dim, chans[0] * math.prod(self.bottom))
        self.fc_norm = nn.Sequential(norm(chans[0]), act())
        Conv, ConvT = conv_cls(spatial_dims), conv_transpose_cls(spatial_dims)
        blocks = []
        c_in = chans[0]
        for i, stride in enumerate(reversed(self.strides)):
            c_out = chans[i + 1] if i + 1 < len(chans) else chans[-1]
            if upsample == "transpose":
                up = ConvT(c_in, c_out, updown_kernel(stride), stride, 1, bias=False)
            else:
                up = nn.Sequential(nn.Upsample(scale_factor=tuple(float(s) for s in stride), mode="nearest"),
                                   Conv(c_in, c_out, 3, 1, 1, bias=False))
            blocks.append(nn.Sequential(up, norm(c_out), act()))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out = Conv(c_in, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: give labels")
            z = torch.cat([z, self.embed(labels)], dim=1)
        h = self.fc(z).view(z.shape[0], -1, *self.bottom)
        for layers in (self.fc_norm, *self.blocks):  # the same (up, norm, act) modules either way: checkpoints keep their keys
            *pre, nrm, a = layers
            for m in pre:
                h = m(h)
            h = a(nrm(h, labels) if self.cond_norm else nrm(h))
        if self.floor_margin > 0:
            return torch.relu((1 + self.floor_margin) * torch.sigmoid(self.out(h)) - self.floor_margin)
        return torch.sigmoid(self.out(h))


class Discriminator(nn.Module):
    """Per level Conv (stride 2) + norm + LeakyReLU + Dropout, then Linear -> one logit (no sigmoid:
    the losses take logits, and a WGAN critic must not squash its output).

    S004's two discriminators are ``norm='none', dropout>0`` (Conv + LeakyReLU + Dropout) and
    ``norm='batch'`` (Conv + BatchNorm + LeakyReLU). The first level never has a norm (DCGAN).
    A conditional discriminator concatenates a learned per-class map to the image as one more channel."""

    def __init__(self, spatial_dims: int, in_channels: int, size: Sequence[int], channels: Sequence[int],
                 num_classes: int = 0, norm: str = "batch", dropout: float = 0.0, levels: int | None = None,
                 minibatch_std: bool = False, projection: bool = False, aux_classes: int = 0, label_map: bool = True):
        super().__init__()
        self.minibatch_std = minibatch_std
        self.strides = level_strides(size, levels)
        chans = per_level(channels, len(self.strides), "channels")
        self.size = tuple(size)
        self.num_classes = num_classes
        self.label_map = nn.Embedding(num_classes, math.prod(size)) if (num_classes and label_map) else None
        Conv = conv_cls(spatial_dims)
        blocks = []
        c_in = in_channels + (1 if self.label_map is not None else 0)
        for i, (stride, c_out) in enumerate(zip(self.strides, chans)):
            layers: list[nn.Module] = [Conv(c_in, c_out, updown_kernel(stride), stride, 1, bias=(i == 0 or norm == "none"))]
            if i > 0:
                layers.append(norm_layer(norm, c_out, spatial_dims))
            layers.append(act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear((c_in + int(minibatch_std)) * math.prod(bottom_size(size, self.strides)), 1)
        # projection discriminator (Miyato & Koyama 2018): logit += <embed(y), pooled features>
        self.projection = nn.Embedding(num_classes, c_in) if (projection and num_classes) else None
        # AC-GAN (Odena et al. 2017): a second head names the class of the image from the same features
        # (on the flattened features, like the real/fake head: pooling averages a small lesion away)
        self.classifier = nn.Linear(c_in * math.prod(bottom_size(size, self.strides)), aux_classes) if aux_classes else None

    def _input(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label_map is None:
            return x
        if labels is None:
            raise ValueError("this discriminator is conditional: give labels")
        return torch.cat([x, self.label_map(labels).view(x.shape[0], 1, *self.size)], dim=1)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(output of every level, logit)."""
        feats, logit, _ = self.heads(x, labels)
        return feats, logit

    def heads(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        """(output of every level, real/fake logit, class logits or None without the AC-GAN head)."""
        h = self._input(x, labels)
        feats = []
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        pooled = h.flatten(2).sum(2)
        classes = self.classifier(h.flatten(1)) if self.classifier is not None else None
        if self.minibatch_std:
            h = torch.cat([h, batch_std(h, labels if self.num_classes else None)], dim=1)
        logit = self.head(h.flatten(1)).squeeze(1)
        if self.projection is not None:
            logit = logit + (self.projection(labels) * pooled).sum(1)
        return feats, logit, classes

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(x, labels)[1]
