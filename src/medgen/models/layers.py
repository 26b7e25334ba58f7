"""Dimension-agnostic layers and the depth layout shared by the GAN, VAE and VAE-GAN networks.

``spatial_dims`` 2 or 3 picks Conv2d/Conv3d, ... as in MONAI. Depth follows the image size: each
resolution level halves every spatial axis that is still larger than 4 and even (``level_strides``),
so 16x16 gets 2 levels, 128x128 gets 5 and an 8x64x64 volume gets 4 levels whose first one also
halves the depth. Upsampling paths mirror the strides exactly, so the output size always equals the
input size. ``batch_std``: Karras et al.'s minibatch standard deviation (discriminator input and
the GAN monitor's collapse check).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from medgen.errors import UserError

# --- dimension-agnostic layers --------------------------------------------------------------


def conv_cls(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def conv_transpose_cls(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]


def max_pool_cls(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]


def norm_layer(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    """``batch``, ``instance`` (affine), ``layer`` (over channels and space, per sample: GroupNorm with
    one group, what the WGAN-GP paper means for a critic), ``group`` (up to 8 groups) or ``none``."""
    if kind == "batch":
        return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if kind == "instance":
        return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, affine=True)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{kind}'")


def act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=False)


# --- geometry -------------------------------------------------------------------------------


def level_strides(size: Sequence[int], levels: int | None = None, min_size: int = 4) -> list[tuple[int, ...]]:
    """Per-level strides: each level halves the axes still larger than ``min_size`` and even.

    ``levels`` caps the number of levels (a shallower network with a larger bottom)."""
    cur = list(size)
    out: list[tuple[int, ...]] = []
    while levels is None or len(out) < levels:
        s = tuple(2 if (d > min_size and d % 2 == 0) else 1 for d in cur)
        if all(v == 1 for v in s):
            break
        out.append(s)
        cur = [d // v for d, v in zip(cur, s)]
    if not out:
        raise UserError(f"image size {tuple(size)} is too small to down-sample: use at least 8 pixels per side")
    return out


def bottom_size(size: Sequence[int], strides: list[tuple[int, ...]]) -> tuple[int, ...]:
    cur = list(size)
    for s in strides:
        cur = [d // v for d, v in zip(cur, s)]
    return tuple(cur)


def per_level(values: Sequence[int], levels: int, name: str) -> list[int]:
    """A per-level list of exactly ``levels`` entries: longer lists are cut, shorter ones repeat their last value."""
    values = list(values)
    if not values:
        raise UserError(f"model.{name} must not be empty")
    if len(values) >= levels:
        return values[:levels]
    return values + [values[-1]] * (levels - len(values))


# S004's 13/16/19-block encoders, VGG-style: 13 and 16 are the convolutional parts of VGG16 and
# VGG19; 19 continues the pattern (our choice, S004 gives only the count).
VGG_LAYOUTS = {13: [2, 2, 3, 3, 3], 16: [2, 2, 4, 4, 4], 19: [3, 3, 4, 4, 5]}


def blocks_layout(blocks_per_level: Sequence[int] | None, vgg: int | None, levels: int) -> list[int]:
    """Conv blocks per level. A VGG layout with more levels than the image allows folds the extra
    blocks into the deepest level, so the total (the variant's name) stays the same."""
    if vgg is not None:
        layout = list(VGG_LAYOUTS[vgg])
        if len(layout) > levels:
            layout = layout[:levels - 1] + [sum(layout[levels - 1:])]
        return per_level(layout, levels, "vgg")
    return per_level(blocks_per_level or [1], levels, "blocks_per_level")


def updown_kernel(stride: tuple[int, ...]) -> tuple[int, ...]:
    # kernel 4 / stride 2 / padding 1 exactly halves (or doubles); kernel 3 / stride 1 / padding 1 keeps
    return tuple(4 if s == 2 else 3 for s in stride)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.'s initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)):
            if getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


def batch_std(h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Karras et al. 2018's minibatch standard deviation as one more channel: the spread of the batch's
    features, so the discriminator can see a batch of near-identical samples (mode collapse). With
    labels it is measured within each class (mean over classes with 2+ samples): a generator that
    collapses to one image per class would otherwise hide behind the differences between classes."""
    b = h.shape[0]
    if b < 2:
        std = h.new_zeros(())
    elif labels is None:
        std = h.float().std(dim=0, unbiased=False).mean()
    else:
        parts = [h[labels == c].float().std(dim=0, unbiased=False).mean() for c in labels.unique() if int((labels == c).sum()) > 1]
        std = torch.stack(parts).mean() if parts else h.new_zeros(())
    return std.to(h.dtype).expand(b, 1, *h.shape[2:])
