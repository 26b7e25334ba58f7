"""Differentiable augmentation for GANs on small data (DiffAugment, Zhao et al. NeurIPS 2020).

The same kind of random transform is applied to real and generated images every time the
discriminator sees them, in its own step and in the generator's, so the discriminator cannot
memorise the few real images and the generator still gets gradients through the transform.
Policies (each 2-D and 3-D):

* ``translation``: shift by up to 1/8 of each side, zero fill (nearest sampling: whole pixels);
* ``cutout``: zero a box of half each side at a random place;
* ``brightness``: add U(-0.5, 0.5) x 0.2 to the whole image (a mild form of the paper's colour).

Random draws come from the trainer context, so a run stays reproducible.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout", "brightness")


def _translation(x: torch.Tensor, ctx, ratio: float = 0.125) -> torch.Tensor:
    n, dims = x.shape[0], x.dim() - 2
    shift = (ctx.rand((n, dims)) * 2 - 1) * ratio  # fraction of each side
    sizes = torch.tensor(x.shape[2:][::-1], device=x.device, dtype=x.dtype)  # affine_grid's order: x, y(, z)
    offsets = torch.round(shift.flip(1).to(x.dtype) * sizes) * 2 / sizes  # whole pixels, in [-1, 1] units
    theta = torch.zeros(n, dims, dims + 1, device=x.device, dtype=x.dtype)
    theta[:, :, :dims] = torch.eye(dims, device=x.device, dtype=x.dtype)
    theta[:, :, dims] = offsets
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, ctx, ratio: float = 0.5) -> torch.Tensor:
    n, spatial = x.shape[0], x.shape[2:]
    centres = ctx.rand((n, len(spatial)))
    inside = torch.ones((n, *spatial), dtype=torch.bool, device=x.device)
    for d, size in enumerate(spatial):
        coord = torch.arange(size, device=x.device).view(1, *[size if i == d else 1 for i in range(len(spatial))])
        centre = (centres[:, d] * size).view(n, *[1] * len(spatial))
        inside &= (coord - centre).abs() < ratio * size / 2
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _brightness(x: torch.Tensor, ctx, amount: float = 0.2) -> torch.Tensor:
    return x + (ctx.rand((x.shape[0], *[1] * (x.dim() - 1))) - 0.5) * amount


_OPS = {"translation": _translation, "cutout": _cutout, "brightness": _brightness}


def diff_augment(x: torch.Tensor, policies: Sequence[str], ctx) -> torch.Tensor:
    for name in policies:
        x = _OPS[name](x, ctx)
    return x
