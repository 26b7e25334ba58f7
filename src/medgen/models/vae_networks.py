"""The S004 VAE's networks, used by the VAE and the VAE-GAN: conv blocks (plain, skip or residual)
+ max-pool per level, flatten, [label one-hot], dense -> mu / log-variance; the decoder mirrors it
(dense -> reshape -> transposed convs)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medgen.models.layers import (act, bottom_size, conv_cls, conv_transpose_cls, level_strides, max_pool_cls, norm_layer,
                                  per_level, updown_kernel)


class ConvUnit(nn.Module):
    """Conv 3 + norm + LeakyReLU; ``residual`` adds the input (through a 1x1 conv when the width changes)."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, norm: str, residual: bool = False):
        super().__init__()
        Conv = conv_cls(spatial_dims)
        self.conv = Conv(c_in, c_out, 3, 1, 1, bias=norm == "none")
        self.norm = norm_layer(norm, c_out, spatial_dims)
        self.act = act()
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity() if c_in == c_out else Conv(c_in, c_out, 1, 1, 0, bias=False)

    def forward(self, x):
        h = self.norm(self.conv(x))
        if self.shortcut is not None:
            h = h + self.shortcut(x)
        return self.act(h)


class ConvStack(nn.Module):
    """``n`` conv units at one resolution. ``plain``: a chain; ``residual``: each unit has an identity
    shortcut (ResNet); ``skip``: the stack's input is concatenated to its output and fused by a 1x1
    conv (a skip connection around the level). Skips stay inside the encoder or the decoder: an
    encoder-to-decoder (U-Net) skip would let the decoder bypass the latent, and sampling from the
    prior would then have nothing to feed it."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, n: int, norm: str, block: str):
        super().__init__()
        units, c = [], c_in
        for _ in range(n):
            units.append(ConvUnit(spatial_dims, c, c_out, norm, residual=block == "residual"))
            c = c_out
        self.units = nn.Sequential(*units)
        self.fuse = None
        if block == "skip" and n > 0:
            self.fuse = nn.Sequential(conv_cls(spatial_dims)(c_in + c_out, c_out, 1, 1, 0, bias=norm == "none"),
                                      norm_layer(norm, c_out, spatial_dims), act())
        self.out_channels = c_out if n > 0 else c_in

    def forward(self, x):
        h = self.units(x)
        if self.fuse is not None:
            h = self.fuse(torch.cat([x, h], dim=1))
        return h


class Encoder(nn.Module):
    """S004's encoder: per level ``blocks`` conv units then max-pooling; flatten; [label one-hot];
    dense -> mu, log-variance. Parameter names (``convs.*``, ``dense``, ``mu``, ``logvar``) are the same
    with and without the label, so a VAE's conv layers load into a CVAE (``--init-from``)."""

    def __init__(self, spatial_dims: int, in_channels: int, size: Sequence[int], latent_dim: int,
                 channels: Sequence[int], blocks: Sequence[int], num_classes: int = 0, hidden_dim: int | None = 256,
                 norm: str = "batch", block: str = "plain", levels: int | None = None):
        super().__init__()
        self.strides = level_strides(size, levels)
        n = len(self.strides)
        chans, blocks = per_level(channels, n, "channels"), per_level(blocks, n, "blocks_per_level")
        self.num_classes = num_classes
        Pool = max_pool_cls(spatial_dims)
        convs, c = [], in_channels
        for stride, c_out, k in zip(self.strides, chans, blocks):
            stack = ConvStack(spatial_dims, c, c_out, max(k, 1), norm, block)
            convs.append(nn.Sequential(stack, Pool(stride, stride)))
            c = stack.out_channels
        self.convs = nn.ModuleList(convs)
        self.flat_dim = c * math.prod(bottom_size(size, self.strides))
        in_dim = self.flat_dim + num_classes
        if hidden_dim:
            self.dense = nn.Sequential(nn.Linear(in_dim, hidden_dim), act())
            in_dim = hidden_dim
        else:
            self.dense = nn.Identity()
        self.mu = nn.Linear(in_dim, latent_dim)
        self.logvar = nn.Linear(in_dim, latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for level in self.convs:
            h = level(h)
        h = h.flatten(1)
        if self.num_classes:
            if labels is None:
                raise ValueError("this encoder is conditional: give labels")
            h = torch.cat([h, F.one_hot(labels, self.num_classes).to(h.dtype)], dim=1)
        h = self.dense(h)
        return self.mu(h), self.logvar(h).clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """z [+ label one-hot] -> dense -> reshape -> per level transposed conv (up-sampling) + norm +
    LeakyReLU and ``blocks - 1`` more conv units -> conv to the image channels. Returns logits; the
    image is their sigmoid."""

    def __init__(self, spatial_dims: int, out_channels: int, size: Sequence[int], latent_dim: int,
                 channels: Sequence[int], blocks: Sequence[int], num_classes: int = 0, norm: str = "batch",
                 block: str = "plain", levels: int | None = None):
        super().__init__()
        self.strides = level_strides(size, levels)
        n = len(self.strides)
        chans = per_level(channels, n, "channels")[::-1]
        blocks = per_level(blocks, n, "blocks_per_level")[::-1]
        self.bottom = bottom_size(size, self.strides)
        self.num_classes = num_classes
        self.dense = nn.Sequential(nn.Linear(latent_dim + num_classes, chans[0] * math.prod(self.bottom)), act())
        self.c0 = chans[0]
        ConvT = conv_transpose_cls(spatial_dims)
        convs, c = [], chans[0]
        for i, (stride, k) in enumerate(zip(reversed(self.strides), blocks)):
            c_out = chans[i + 1] if i + 1 < n else chans[-1]
            up = nn.Sequential(ConvT(c, c_out, updown_kernel(stride), stride, 1, bias=norm == "none"),
                               norm_layer(norm, c_out, spatial_dims), act())
            stack = ConvStack(spatial_dims, c_out, c_out, k - 1, norm, block)
            convs.append(nn.Sequential(up, stack))
            c = stack.out_channels
        convs.append(conv_cls(spatial_dims)(c, out_channels, 3, 1, 1))
        self.convs = nn.ModuleList(convs)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if labels is None:
                raise ValueError("this decoder is conditional: give labels")
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        h = self.dense(z).view(z.shape[0], self.c0, *self.bottom)
        for layer in self.convs:
            h = layer(h)
        return h
