"""``breast-phantom``: fully simulated mammography ROIs (power-law texture, masses, calcifications).

Texture: white Gaussian noise filtered in Fourier space by the amplitude ``f^(-beta/2)``, so its
power spectrum falls as ``1/f^beta`` (the classic model of mammographic parenchyma, beta ~ 3). It is
made on a canvas twice the ROI size and a random window is cut out (no wrap-around seams), then
mapped through a gentle sigmoid into [0.1, 0.9]: ``0.1 + 0.8 * sigmoid(k * (z - z0))`` with the
threshold ``z0`` set by the dense (fibroglandular) fraction, so fatty breasts are mostly dark and
dense breasts mostly bright. A little white quantum noise (sd 0.006) is added; images lie in [0, 1].

Labels and lesions (mask = the lesion, uint8; all zeros for ``normal``):

* ``normal`` -- texture only.
* ``mass`` -- a dense mass added to the texture as projected thickness ``sqrt(1 - d^2)`` (so the
  tissue shows through it): round, lobulated (strong low-order boundary harmonics) or spiculated
  (a roundish body with 6-14 thin tapering spicules). Radius 8-17 % of the ROI. Mask = the body
  (spicules excluded).
* ``calcification`` -- a cluster of 3-15 small bright specks (Gaussian dots, sd 0.5-0.9 px at
  64 px, blended towards 1.0 so they outshine dense tissue) in a small elliptical region
  (radius 5-12 % of the ROI). Mask = the specks, dilated by 1 px.

Extra column ``cohort`` (rule, deterministic from ``index`` alone): ``"beta"`` when
``index % 20`` is 3, 10 or 17 (exactly 15 % of each 20 consecutive items), else ``"class0"``.

* ``class0`` (85 %): label ``("normal", "mass", "calcification")[index % 3]`` (balanced over every
  60 items), beta ~ U(2.6, 3.4), dense fraction ~ U(0.15, 0.85) (fatty to dense).
* ``beta`` (15 %, a small related domain for fine-tuning): smoother and denser tissue -- beta ~
  U(3.3, 3.9), dense fraction ~ U(0.6, 0.9), higher texture contrast -- and mostly lesions: label
  drawn from the item's rng with P(normal, mass, calcification) = (0.1, 0.5, 0.4).

Every other random choice comes from ``np.random.default_rng([seed, index])``; :func:`describe`
returns the drawn texture parameters of an item. 2D sizes only.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.special import ndtri

from medgen.data.builtin import BuiltinSample
from medgen.errors import UserError

LABELS = ("normal", "mass", "calcification")
BETA_COHORT_RESIDUES = (3, 10, 17)  # index % 20 in these -> cohort "beta"
QUANTUM_NOISE = 0.006


def cohort_of(index: int) -> str:
    return "beta" if int(index) % 20 in BETA_COHORT_RESIDUES else "class0"


def _draw(index: int, seed: int) -> tuple[dict, np.random.Generator]:
    rng = np.random.default_rng([int(seed), int(index)])
    cohort = cohort_of(index)
    if cohort == "class0":
        label = LABELS[int(index) % 3]
        beta = rng.uniform(2.6, 3.4)
        density = rng.uniform(0.15, 0.85)
        steepness = rng.uniform(0.9, 1.5)
    else:
        label = LABELS[int(rng.choice(3, p=[0.1, 0.5, 0.4]))]
        beta = rng.uniform(3.3, 3.9)
        density = rng.uniform(0.6, 0.9)
        steepness = rng.uniform(1.3, 1.9)
    params = {"cohort": cohort, "label": label, "beta": float(beta), "density": float(density),
              "steepness": float(steepness)}
    return params, rng


def describe(index: int, seed: int) -> dict:
    """The cohort, label and texture parameters (beta, density, steepness) item ``index`` uses."""
    return _draw(index, seed)[0]


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian noise whose power spectrum falls as ``1/f^beta`` (periodic on ``shape``)."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    white = np.fft.rfft2(rng.normal(0.0, 1.0, shape))
    field = np.fft.irfft2(white * amp, s=shape)
    field -= field.mean()
    return (field / (field.std() + 1e-12)).astype(np.float32)


def texture(rng: np.random.Generator, size: tuple[int, int], beta: float, density: float,
            steepness: float) -> np.ndarray:
    """Breast parenchyma ROI in [0.1, 0.9]: a window of a 2x canvas of power-law noise through a sigmoid."""
    h, w = size
    canvas = power_law_noise(rng, (2 * h, 2 * w), beta)
    r0, c0 = rng.integers(0, h + 1), rng.integers(0, w + 1)
    z = canvas[r0 : r0 + h, c0 : c0 + w]
    z = (z - z.mean()) / (z.std() + 1e-6)
    z0 = float(ndtri(1.0 - density))  # P(z > z0) = dense fraction
    return (0.1 + 0.8 / (1.0 + np.exp(-steepness * (z - z0)))).astype(np.float32)


def _mass(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(added density, mask) of one mass."""
    h, w = size
    s = float(min(h, w))
    px = s / 64.0  # pixel scale relative to a 64 px ROI
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    radius = rng.uniform(0.08, 0.17) * s
    kind = ("round", "lobulated", "spiculated")[int(rng.integers(3))]
    irr = rng.uniform(*{"round": (0.03, 0.08), "lobulated": (0.3, 0.45), "spiculated": (0.05, 0.12)}[kind])
    aspect, angle = rng.uniform(0.75, 1.0), rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    c, si = np.cos(angle), np.sin(angle)
    u, v = c * dy + si * dx, (-si * dy + c * dx) / aspect
    phi = np.arctan2(v, u)
    r_phi = np.ones_like(phi)
    top = 4 if kind == "lobulated" else 6
    for k in range(2, top + 1):
        r_phi += irr * rng.normal(0, 1) / (k - 1) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    r_phi = np.clip(r_phi, 0.55, 1.6)
    d = np.sqrt(u * u + v * v) / (radius * r_phi)
    thick = np.sqrt(np.clip(1.0 - d * d, 0.0, 1.0))
    thick = ndi.gaussian_filter(thick, 0.6 * px)
    amplitude = rng.uniform(0.8, 1.3)  # attenuation (optical depth) at the mass centre
    added = amplitude * thick
    if kind == "spiculated":
        n = int(rng.integers(6, 15))
        for a in rng.uniform(0, 2 * np.pi, size=n):
            length = rng.uniform(0.6, 1.5) * radius
            width = rng.uniform(0.5, 0.9) * px
            start = 0.75 * radius
            ey, ex = np.cos(a), np.sin(a)
            along = dy * ey + dx * ex - start
            across = -dy * ex + dx * ey
            taper = np.clip(1.0 - along / length, 0.0, 1.0) * np.clip(1.0 + along / (0.25 * radius), 0.0, 1.0)
            added += amplitude * 0.45 * taper * np.exp(-((across / width) ** 2))
    return added.astype(np.float32), (d < 1.0).astype(np.uint8)


def _calcifications(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(opacity in [0, 1], mask) of a cluster of 3-15 specks."""
    h, w = size
    s = float(min(h, w))
    px = s / 64.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
    rc = max(2.5, rng.uniform(0.05, 0.12) * s)
    aspect, angle = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
    n = int(rng.integers(3, 16))
    added = np.zeros((h, w), dtype=np.float32)
    mask = np.zeros((h, w), dtype=bool)
    rad = np.sqrt(rng.uniform(0, 1, n)) * rc
    th = rng.uniform(0, 2 * np.pi, n)
    a_, b_ = rad * np.cos(th), rad * np.sin(th) * aspect
    c, si = np.cos(angle), np.sin(angle)
    for du, dv in zip(a_, b_):
        py, pxx = cy + c * du - si * dv, cx + si * du + c * dv
        sd = rng.uniform(0.5, 0.9) * px
        amp = rng.uniform(0.7, 1.0)  # opacity of the speck's centre
        g = np.exp(-((yy - py) ** 2 + (xx - pxx) ** 2) / (2 * sd * sd))
        added += amp * g
        spot = g > 0.3
        if not spot.any():  # a speck between pixel centres: mark its nearest pixel
            spot[int(np.clip(round(py), 0, h - 1)), int(np.clip(round(pxx), 0, w - 1))] = True
        mask |= spot
    mask = ndi.binary_dilation(mask, structure=ndi.generate_binary_structure(2, 1))
    return np.clip(added, 0.0, 1.0), mask.astype(np.uint8)


class BreastPhantom:
    name = "breast-phantom"
    description = ("Simulated mammography ROIs: 1/f^beta parenchyma texture with masses or calcification "
                   "clusters (exact masks); cohort column class0 (85 %) / beta (15 %, denser, smoother)")
    simulated = True
    default_size = (64, 64)
    default_n = 600
    labels = LABELS
    supports_3d = False

    def item(self, index: int, seed: int, size: tuple[int, ...]) -> BuiltinSample:
        size = tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 8:
            raise UserError(f"built-in 'breast-phantom' makes 2D ROIs only: give --size H W (each >= 8), not {size}")
        params, rng = _draw(index, seed)
        img = texture(rng, size, params["beta"], params["density"], params["steepness"])
        mask = np.zeros(size, dtype=np.uint8)
        if params["label"] == "mass":
            depth, mask = _mass(rng, size)
            img = 1.0 - (1.0 - img) * np.exp(-depth)  # extra attenuation: strong on fat, weaker on dense tissue
        elif params["label"] == "calcification":
            cover, mask = _calcifications(rng, size)
            img = img * (1.0 - cover) + cover  # calcium: brighter than any tissue
        img = img + rng.normal(0.0, QUANTUM_NOISE, size).astype(np.float32)
        img = np.clip(img, 0.0, 1.0).astype(np.float32)
        return BuiltinSample(image=img, label=params["label"], mask=mask, extra={"cohort": params["cohort"]})


BUILTIN = BreastPhantom()
