"""Inpainting a lesion into real images with any trained diffusion run: RePaint (Lugmayr et al. 2022).

At every reverse step the unknown region (the mask) takes the model's denoised sample and the known
region takes the original image diffused to the same noise level (RePaint eq. 8), so the model fills
the mask in a way that agrees with its surroundings; ``resample`` times per step the merged sample is
diffused back one step and denoised again (RePaint's resampling with jump length 1), which lets the
two regions harmonise instead of meeting at a visible seam. The reverse step is the stochastic DDPM
posterior on the model's respaced timesteps (RePaint needs the noise), whatever the run's sampler.

Latent models run this on the autoencoder's latents with the mask grown to every latent cell it
touches; decoding changes every pixel a little, so the result is blended back **in image space**:
outside the mask the output is exactly the original, and inside a ``feather``-pixel ramp from the
mask's edge (weight 1/feather at the edge, 1 deeper in) hides the seam. A mask-conditioned run
(``mask-ddpm``, ``mask-controlnet``) gets the mask as its label map as well. The lesion class is the run's ``--label``
(class-conditional runs).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from medgen.errors import UserError


def seam_weights(masks: np.ndarray, feather: float) -> np.ndarray:
    """(N, 1, *size) in [0, 1]: 0 outside the mask, rising to 1 within ``feather`` px of its edge."""
    out = np.zeros(masks.shape, dtype=np.float32)
    for i, m in enumerate(masks):
        inside = ndi.distance_transform_edt(m[0] > 0)
        out[i, 0] = np.clip(inside / max(feather, 1e-6), 0.0, 1.0) if feather > 0 else (m[0] > 0)
    return out


def to_space_mask(masks: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Binary unknown-region map at the diffusion space's resolution: a cell is unknown if any pixel it covers is."""
    m = (masks > 0).float()
    if tuple(m.shape[2:]) == tuple(shape):
        return m
    return (F.adaptive_max_pool2d(m, shape) if m.dim() == 4 else F.adaptive_max_pool3d(m, shape)).clamp(0, 1)


@torch.no_grad()
def merge_known(den, x_unknown: torch.Tensor, x0: torch.Tensor, unknown: torch.Tensor, t_prev: int,
                generator: torch.Generator | None) -> torch.Tensor:
    """RePaint eq. 8: the model's step inside ``unknown`` (1 = redraw), and outside it the original
    ``x0`` diffused to the step's noise level ``t_prev`` (the original itself after the last step)."""
    from medgen.samplers.base import noise_like

    if t_prev < 0:
        x_known = x0
    else:
        x_known = den.q_sample(x0, torch.full((x0.shape[0],), t_prev, device=x0.device, dtype=torch.long),
                               noise_like(x0, generator))
    return unknown * x_unknown + (1 - unknown) * x_known


def repaint(model, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor | None = None, steps: int | None = None,
            resample: int = 5, guidance: float = 1.0, feather: float = 2.0, generator: torch.Generator | None = None,
            progress=None) -> torch.Tensor:
    """``images`` (B, C, *size) in [0, 1] with a new content inside ``masks`` (B, 1, *size; > 0 = redraw)."""
    if not model.can_inpaint:
        raise UserError(f"{type(model).__name__} runs cannot inpaint: use a diffusion run (ddpm, ldm, mask-ddpm, mask-controlnet)")
    from medgen.samplers import get as get_sampler
    from medgen.samplers.base import abar, noise_like

    den = model.denoiser
    ddpm = get_sampler("ddpm")  # RePaint needs the stochastic posterior step
    device = den.alphas_cumprod.device
    images, masks = images.to(device), masks.to(device)
    cond = den.conditioned_on(masks) if model.needs_masks else contextlib.nullcontext()
    with cond:
        x0 = model.to_diffusion_space(images)
        unknown = to_space_mask(masks, tuple(x0.shape[2:]))
        ts = den.timesteps(steps)
        x = noise_like(x0, generator)
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            for u in range(resample):
                eps = den.guided_eps(x, t, labels, guidance).float()
                x_unknown = ddpm.step(den, x, eps, t, t_prev, None if _latent(model) else model.clip, generator)
                x = merge_known(den, x_unknown, x0, unknown, t_prev, generator)
                if u + 1 < resample and t_prev >= 0:  # back to step t: q(x_t | x_t'), then denoise again
                    ratio = abar(den, t) / abar(den, t_prev)
                    x = ratio.sqrt() * x + (1 - ratio).sqrt() * noise_like(x, generator)
            if progress:
                progress()
        generated = model.from_diffusion_space(x)
    w = torch.from_numpy(seam_weights(masks.cpu().numpy(), feather)).to(device)
    return (1 - w) * images + w * generated


def _latent(model) -> bool:
    return model.can_encode or model.can_reconstruct


def to_unit_range(img: np.ndarray) -> tuple[np.ndarray, dict]:
    """An image in [0, 1] and how it was scaled: whole-number 8- and 16-bit values by their type's range
    (so a PNG's unchanged pixels are written back with the same values), other values min-max."""
    lo, hi = float(img.min()), float(img.max())
    if lo >= 0 and hi <= 1:
        return img, {"scale": "as is"}
    if lo >= 0 and hi <= 65535 and np.array_equal(img, np.round(img)):
        top = 255.0 if hi <= 255 else 65535.0
        return img / top, {"scale": f"/{top:g}"}
    return (img - lo) / max(hi - lo, 1e-12), {"scale": "min-max", "min": lo, "max": hi}


def load_images(source: str, size: tuple[int, ...], channels: int) -> tuple[np.ndarray, list[str], list[dict]]:
    """Images to inpaint (N, C, *size) in [0, 1] from a file or folder, their file names and scalings."""
    from pathlib import Path

    from medgen.data.io import read_image
    from medgen.masks import image_files

    files = image_files(Path(source).expanduser(), "image", "--inpaint: no such image file or folder")
    out, scales = [], []
    for f in files:
        img = np.asarray(np.load(f) if f.suffix.lower() == ".npy" else read_image(f), dtype=np.float32)
        if img.ndim == len(size):
            img = img[None]
        if img.ndim != len(size) + 1 or tuple(img.shape[1:]) != tuple(size):
            raise UserError(f"image size {tuple(img.shape[1:])} does not match the model's {tuple(size)}", f)
        if img.shape[0] != channels:
            raise UserError(f"image has {img.shape[0]} channels, the model {channels}", f)
        img, how = to_unit_range(img)
        out.append(img)
        scales.append(how)
    return np.stack(out), [f.name for f in files], scales
