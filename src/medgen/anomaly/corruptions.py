"""Synthetic anomalies drawn into NORMAL images, as training targets for a self-supervised anomaly
segmenter (the ``selfsup-anomaly`` family): the network sees normal images, some with a drawn
anomaly and its exact mask, and learns to mark what does not belong. No real lesion is ever used.

Methods of this kind won the MICCAI Medical Out-of-Distribution challenges (Foreign Patch
Interpolation, Tan et al. 2020/2022; Natural Synthetic Anomalies, Schlueter et al. 2022; DRAEM,
Zavrtanik et al. 2021). What they learn is bounded by how varied the drawn anomalies are, so the
generator here mixes several kinds and wide ranges on purpose, rather than imitating one lesion
type (and not the test lesions of any benchmark):

* shape: an irregular blob (an ellipsoid whose radius is perturbed by smooth noise), diameter
  log-uniform over ``diameter`` (a fraction of the image side), with a soft or sharp rim;
* content, one of
  - ``intensity``: a homogeneous value brighter or darker than the local tissue mean by ``contrast``,
    with a little texture;
  - ``foreign``: the same region of ANOTHER image of the batch, shifted and blended in with a
    factor of 0.4-1 (foreign patch interpolation);
  - ``scale``: the tissue itself multiplied by a factor away from 1 (0.4-0.8 or 1.25-1.8);
  - ``texture``: the local mean plus smooth noise (the structure inside replaced);
* placement: centred in the foreground (the region ``medgen detect`` scores: the image above
  ``foreground`` in any channel, holes filled), the weight cut to it, so the background stays background.

The mask is where the drawn weight is above one half AND the image changed visibly (by more than
``min_change``): a foreign patch that happens to match its surroundings is not called anomalous.
Works on 2D and 3D images alike (N, C, *spatial).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from medgen.anomaly.scoring import foreground_mask

KINDS = ("intensity", "foreign", "scale", "texture")
DIAMETER = (0.04, 0.30)   # fraction of the image side, drawn log-uniformly
CONTRAST = (0.06, 0.50)   # |lesion - local mean| of the intensity kind, images in [0, 1]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise with structures about ``scale`` pixels across."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), max(scale, 0.5))
    return n / (n.std() + 1e-8)


def _blob(rng: np.random.Generator, shape: tuple[int, ...], centre: np.ndarray, radius: float) -> np.ndarray:
    """Soft weight in [0, 1] of an irregular ellipsoid of ``radius`` pixels around ``centre``."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    rot, _ = np.linalg.qr(rng.standard_normal((len(shape), len(shape))))  # a random orientation
    axes = radius * rng.uniform(0.6, 1.0, len(shape))
    offsets = np.stack([g - c for g, c in zip(grids, centre)], axis=-1) @ rot
    d = np.sqrt(((offsets / axes) ** 2).sum(-1))
    d = d + rng.uniform(0.0, 0.35) * _smooth_noise(rng, shape, max(1.0, radius / 2)) * np.clip(d, 0, 1.5)
    rim = rng.uniform(0.3, 2.0)  # pixels of soft edge: sharp to blurred borders
    return np.clip((1.0 - d) * radius / rim + 0.5, 0.0, 1.0).astype(np.float32)


def _local_mean(image: np.ndarray, radius: float) -> np.ndarray:
    """Each channel's mean around every pixel, over about ``radius`` pixels."""
    return ndi.gaussian_filter(image, (0, *[max(1.0, radius)] * (image.ndim - 1)))


def corrupt(images: np.ndarray, rng: np.random.Generator, p: float = 0.6, diameter=DIAMETER, contrast=CONTRAST,
            kinds=KINDS, foreground: float = 0.05, min_change: float = 0.04, max_anomalies: int = 2
            ) -> tuple[np.ndarray, np.ndarray]:
    """(copies of ``images`` (N, C, *spatial) in [0, 1] where each has an anomaly with probability
    ``p`` (1 to ``max_anomalies`` of them), masks (N, 1, *spatial) float32 0/1)."""
    images = np.asarray(images, dtype=np.float32)
    out = images.copy()
    masks = np.zeros((len(images), 1, *images.shape[2:]), dtype=np.float32)
    spatial = images.shape[2:]
    side = float(min(spatial))
    # the region `medgen detect` scores (input above the threshold, holes filled); all of an image
    # that is (almost) empty
    fgs = foreground_mask(images, foreground)[:, 0]
    for i in range(len(images)):
        if rng.random() >= p:
            continue
        fg = fgs[i] if fgs[i].sum() >= 8 else np.ones(spatial, dtype=bool)
        inside = np.argwhere(fg)
        for _ in range(int(rng.integers(1, max_anomalies + 1))):
            radius = max(1.0, 0.5 * side * float(np.exp(rng.uniform(np.log(diameter[0]), np.log(diameter[1])))))
            centre = inside[rng.integers(len(inside))] + rng.uniform(-0.5, 0.5, len(spatial))
            weight = _blob(rng, spatial, centre, radius) * fg
            if weight.max() <= 0.5:
                continue
            base = out[i]
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == "intensity":
                local = _local_mean(base, radius)
                delta = rng.uniform(*contrast) * (1 if rng.random() < 0.5 else -1)
                texture = 1 + rng.uniform(0, 0.08) * _smooth_noise(rng, spatial, 1.0)
                content = (local + delta) * texture
            elif kind == "foreign" and len(images) > 1:
                j = int(rng.choice([k for k in range(len(images)) if k != i]))
                shift = rng.integers(-int(side // 4), int(side // 4) + 1, len(spatial))
                other = np.roll(images[j], tuple(int(s) for s in shift), axis=tuple(range(1, 1 + len(spatial))))
                content = base + rng.uniform(0.4, 1.0) * (other - base)
            elif kind == "scale" or kind == "foreign":
                factor = rng.uniform(0.4, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.8)
                content = base * factor
            else:  # texture
                content = _local_mean(base, radius) + rng.uniform(0.05, 0.25) * _smooth_noise(rng, spatial, rng.uniform(0.7, 2.5))
            new = np.clip(base * (1 - weight) + content * weight, 0.0, 1.0)
            changed = np.abs(new - base).max(axis=0) > min_change
            out[i] = new
            masks[i, 0] = np.maximum(masks[i, 0], ((weight > 0.5) & changed).astype(np.float32))
    return out, masks
