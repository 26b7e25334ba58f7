"""``brain-lesions``: real MNI152 axial slices with simulated brain tumours (exact masks).

Each item is an axial slice of the MNI152 T1 template made exactly like an ``mni152`` axial item
(same crop, rotation/scale/elastic and gamma/bias augmentation, see
:mod:`medgen.data.builtin.mni152`), with a lesion drawn into it before the intensity augmentation.
Intensities are in [0, 1] (template white matter ~0.86, grey matter ~0.65, CSF ~0.27). The look
imitates contrast-enhanced T1 images of a brain-tumour MRI classification study:

* ``glioma`` -- intra-axial: centred inside the parenchyma, away from the brain edge and mostly off
  the midline; an irregular enhancing rim (brighter than white matter) around a dark necrotic
  core, surrounded by a wider irregular zone of T1-hypointense oedema limited to brain tissue,
  and a mild mass effect (nearby tissue pushed outwards). Mask = rim + core (oedema excluded).
* ``meningioma`` -- extra-axial: a well-circumscribed, homogeneous bright mass with a broad base on
  the brain's outer surface (the dura; the mass is cut flat there), pushing the cortex inwards
  with a thin dark CSF cleft between mass and brain. Mask = the mass.
* ``pituitary`` -- a small-to-medium bright, smoothly lobulated mass on the midline in the
  suprasellar region (anterior to the midbrain/pons, between the temporal lobes); these items use
  low axial slices (MNI z -32..-20 mm), and compress the tissue around them. Mask = the mass.
* ``none`` -- no lesion; mask all zeros. A quarter of these use the same low slices as
  ``pituitary`` so that slice level alone does not give the class away.

Label = ``labels[index % 4]``; every other choice (slice, augmentation, lesion size 4-16 % of the
field of view (at least 2-3 px), elongation, boundary irregularity from random low-order harmonics, position,
intensities, mass effect) comes from ``np.random.default_rng([seed, index])``. All lesions lie
inside the intracranial region (the brain outline with sulci, fissures and cisterns closed);
:func:`generate` also returns that region. 2D sizes only.

Graded tiers (``brain-lesions-SIZE[-CONTRAST]``, e.g. ``builtin:brain-lesions-small-subtle``), the
anomaly-detection benchmark: labels ``lesion`` / ``none`` alternating; the normal items are the
same slices in every tier (the same seed gives the same normals), and each lesion item has one
focal, homogeneous lesion with an irregular outline anywhere in the brain tissue, BRIGHTER or
DARKER than the tissue around it (a coin flip, turned over where the brighter or darker value
would leave [0.05, 1]):

| size   | diameter (fraction of the field of view) | at 64 px  |
|--------|------------------------------------------|-----------|
| large  | 0.16-0.28                                | 10-18 px  |
| medium | 0.09-0.14                                | 6-9 px    |
| small  | 0.045-0.08                               | 3-5 px    |

contrast ``strong`` (default): the lesion differs from the local tissue mean by 0.25-0.40 (white
matter is ~0.86, grey matter ~0.65); ``subtle``: by 0.10-0.18. Index columns ``tier`` and
``polarity`` (bright/dark) say which.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from medgen.data.builtin import BuiltinSample
from medgen.data.builtin import mni152
from medgen.errors import UserError

LABELS = ("glioma", "meningioma", "pituitary", "none")
PITUITARY_SLICES = (134.0, 146.0)  # axial indices of the (z, y, x) template: MNI z -18..-30 mm
BRAIN_THRESHOLD = 0.05
GLIOMA_LOWEST = 132.0  # gliomas use axial slices lo..132 (MNI z >= -16 mm), above the cerebellum


@lru_cache(maxsize=1)
def _sella_rows() -> dict[int, float]:
    """Row (anterior-posterior) of the midline suprasellar cistern per low axial slice."""
    t = mni152.load_template()
    mid = t.midline
    rows: dict[int, float] = {}
    z_lo, z_hi = int(PITUITARY_SLICES[0]) - 1, int(PITUITARY_SLICES[1]) + 2
    for z in range(z_lo, z_hi + 1):
        b = t.brain[z]
        closed = ndi.binary_fill_holes(ndi.binary_closing(np.pad(b, 15), structure=_disk(12)))[15:-15, 15:-15]
        hole = closed & ~b
        hole[:, : mid - 12] = False
        hole[:, mid + 13:] = False
        hole[:70] = False
        hole[130:] = False
        if hole.sum() >= 10:
            rows[z] = float(ndi.center_of_mass(hole)[0])
    if not rows:  # not expected for the bundled template
        rows = {z: 97.0 for z in range(z_lo, z_hi + 1)}
    return rows


def _sella_row(z: float) -> float:
    rows = _sella_rows()
    keys = np.array(sorted(rows))
    return float(np.interp(z, keys, [rows[k] for k in keys]))


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy * yy + xx * xx) <= radius * radius + 1e-6


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the background components that do not touch the border (faster than binary_fill_holes)."""
    lab, n = ndi.label(~mask)
    if n == 0:
        return mask.copy()
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    keep = np.zeros(n + 1, dtype=bool)
    keep[edge] = True
    keep[0] = True
    return mask | ~keep[lab]


def intracranial(brain: np.ndarray) -> np.ndarray:
    """Brain outline with sulci, fissures, ventricles and basal cisterns filled (disk closing + hole fill)."""
    h, w = brain.shape
    rad = max(2.0, 0.07 * max(h, w))
    p = int(np.ceil(rad)) + 2
    padded = np.pad(brain, p)
    dilated = ndi.distance_transform_edt(~padded) <= rad
    closed = ndi.distance_transform_edt(np.pad(dilated, 1, constant_values=True))[1:-1, 1:-1] > rad
    return fill_holes(closed[p:-p, p:-p] | brain)


def _polar(shape: tuple[int, int], center: tuple[float, float], radius: float, aspect: float, angle: float,
           irregularity: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised distance d (d < 1 inside) of an ellipse whose radius varies with angle (harmonics 2-6)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dy + s * dx, (-s * dy + c * dx) / aspect
    rho = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    r_phi = np.ones_like(phi)
    for k in range(2, 7):
        r_phi += irregularity * rng.normal(0, 1) / k * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    r_phi = np.clip(r_phi, 0.5, 1.6)
    return rho / (radius * r_phi)


def _soft(d: np.ndarray, radius: float, edge_px: float = 0.8) -> np.ndarray:
    """Anti-aliased inside-weight of ``d < 1`` with an edge about ``edge_px`` pixels wide (0.5 at d = 1)."""
    return np.clip((1.0 - d) * radius / edge_px + 0.5, 0.0, 1.0).astype(np.float32)


def _soft_region(region: np.ndarray) -> np.ndarray:
    """Anti-aliased version of a bool region (about 1 at its edge pixels, fading out just outside)."""
    return np.clip(ndi.gaussian_filter(region.astype(np.float32), 0.7) * 2.0, 0.0, 1.0)


def _push(shape: tuple[int, int], center: tuple[float, float], radius: float, amount: float) -> np.ndarray:
    """Output-pixel offsets (2, H, W) of a radial mass effect: tissue is pushed away from ``center``.

    Pixel p samples ``c + (p - c) * f`` with ``f = 1 - amount * exp(-(rho / 1.5r)^2)``; monotone for amount < 1.
    """
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    dy, dx = yy - center[0], xx - center[1]
    f = 1.0 - amount * np.exp(-(dy * dy + dx * dx) / (1.5 * radius) ** 2)
    return np.stack([dy * (f - 1), dx * (f - 1)]).astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple[int, int], std: float) -> np.ndarray:
    n = ndi.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), max(1.0, min(shape) / 64))
    return 1.0 + std * n / (n.std() + 1e-6)


def _pick(rng: np.random.Generator, ok: np.ndarray, fallback: np.ndarray) -> tuple[float, float]:
    idx = np.argwhere(ok)
    if len(idx) == 0:
        r, c = np.unravel_index(np.argmax(fallback), fallback.shape)
        return float(r), float(c)
    r, c = idx[rng.integers(len(idx))]
    return float(r) + rng.uniform(-0.5, 0.5), float(c) + rng.uniform(-0.5, 0.5)


def _midline_distance(view: mni152.View, shape: tuple[int, int]) -> np.ndarray:
    """Distance (output pixels) of each pixel from the template's midline as drawn in this view."""
    mid = mni152.load_template().midline
    p1 = np.array(view.to_output(40.0, mid))
    p2 = np.array(view.to_output(190.0, mid))
    d = (p2 - p1) / np.linalg.norm(p2 - p1)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return np.abs((yy - p1[0]) * d[1] - (xx - p1[1]) * d[0])


def generate(index: int, seed: int, size: tuple[int, ...]) -> tuple[BuiltinSample, np.ndarray]:
    """The item and its intracranial region (bool, same shape), which contains the lesion mask."""
    size = mni152.check_size(size, "brain-lesions", allow_3d=False)
    if len(size) != 2:  # check_size already refuses; kept for clarity
        raise UserError("brain-lesions makes 2D slices only")
    h, w = size
    rng = np.random.default_rng([int(seed), int(index)])
    label = LABELS[int(index) % len(LABELS)]
    lo, hi = mni152.load_template().ranges["axial"]
    if label == "pituitary" or (label == "none" and rng.random() < 0.25):
        position = rng.uniform(*PITUITARY_SLICES)
    elif label == "glioma":  # supratentorial slices (above the posterior fossa)
        position = rng.uniform(lo, GLIOMA_LOWEST)
    else:
        position = rng.uniform(lo, hi)
    view = mni152.plan_view(rng, "axial", size, position=position)
    base = mni152.render(view)[0]
    brain = fill_holes(base > BRAIN_THRESHOLD)
    ic = intracranial(brain)
    s = float(min(h, w))
    mask = np.zeros((h, w), dtype=np.uint8)

    if label == "none":
        img = base
    elif label == "glioma":
        img, weight = _glioma(rng, view, base, brain, ic, s)
        mask = ((weight > 0.5) & ic).astype(np.uint8)
    elif label == "meningioma":
        img, weight = _meningioma(rng, view, base, ic, s)
        mask = ((weight > 0.5) & ic).astype(np.uint8)
    else:
        img, weight = _pituitary(rng, view, position, ic, s)
        mask = ((weight > 0.5) & ic).astype(np.uint8)
    img = mni152.intensity_augment(img, rng)
    return BuiltinSample(image=np.ascontiguousarray(img, dtype=np.float32), label=label, mask=mask), ic


def _glioma(rng, view, base, brain, ic, s):
    shape = base.shape
    radius = max(3.0, s * rng.uniform(0.07, 0.15))  # >= 3 px so rim and core are resolved
    dist = ndi.distance_transform_edt(brain)
    mid = _midline_distance(view, shape)
    for shrink in (1.0, 0.85, 0.7, 0.55):
        r = radius * shrink
        ok = (dist >= 1.2 * r + 1) & (mid >= 0.5 * r)
        if ok.any():
            radius = r
            break
    center = _pick(rng, ok, dist)
    aspect, angle = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    extra = _push(shape, center, radius, rng.uniform(0.2, 0.45))
    tissue = mni152.render(view, extra)[0]
    tissue_brain = tissue > BRAIN_THRESHOLD
    d = _polar(shape, center, radius, aspect, angle, rng.uniform(0.15, 0.35), rng)
    tumour = _soft(d, radius, 1.1) * ic
    d_core = _polar(shape, center, radius * rng.uniform(0.4, 0.65), aspect, angle, rng.uniform(0.25, 0.5), rng)
    core = _soft(d_core, radius * 0.5, 1.0) * tumour
    d_oed = _polar(shape, center, radius * rng.uniform(1.6, 2.4), aspect * rng.uniform(0.75, 1.0),
                   angle + rng.uniform(-0.5, 0.5), rng.uniform(0.35, 0.6), rng)
    oedema = ndi.gaussian_filter(np.clip((1.0 - d_oed) * 2.5, 0, 1).astype(np.float32), 1.0)
    # vasogenic oedema spreads along white matter (bright on T1): weight it by tissue brightness
    oedema *= tissue_brain * np.clip((tissue - 0.45) / 0.35, 0.3, 1.0)
    img = tissue * (1.0 - rng.uniform(0.3, 0.45) * oedema)
    rim_val = rng.uniform(0.86, 0.97) * _texture(rng, shape, 0.07)
    core_val = rng.uniform(0.18, 0.36) * _texture(rng, shape, 0.15)
    lesion = rim_val * (1 - core) + core_val * core
    img = img * (1 - tumour) + lesion * tumour
    return img, tumour


def _meningioma(rng, view, base, ic, s):
    shape = base.shape
    radius = max(2.5, s * rng.uniform(0.06, 0.13))
    edge = ic & ~ndi.binary_erosion(ic, structure=np.ones((3, 3), bool), border_value=0)
    # keep attachment points away from the image border so the whole mass is visible
    border = np.zeros(shape, bool)
    b = int(np.ceil(radius)) + 1
    border[b:-b, b:-b] = True
    cand = edge & border
    point = _pick(rng, cand if cand.any() else edge, ic.astype(np.float32))
    smooth = ndi.gaussian_filter(ic.astype(np.float32), 2.0)
    gy, gx = ndi.sobel(smooth, 0), ndi.sobel(smooth, 1)
    pi, pj = int(round(np.clip(point[0], 0, shape[0] - 1))), int(round(np.clip(point[1], 0, shape[1] - 1)))
    inward = np.array([gy[pi, pj], gx[pi, pj]], dtype=np.float64)
    norm = np.linalg.norm(inward)
    inward = inward / norm if norm > 1e-6 else np.array([1.0, 0.0])
    depth = rng.uniform(0.3, 0.65) * radius
    center = (point[0] + inward[0] * depth, point[1] + inward[1] * depth)
    extra = _push(shape, center, radius, rng.uniform(0.35, 0.6))
    tissue = mni152.render(view, extra)[0] * np.clip(ndi.gaussian_filter(ic.astype(np.float32), 0.6) * 1.5, 0, 1)
    angle = np.arctan2(inward[1], inward[0])
    d = _polar(shape, center, radius, rng.uniform(0.8, 1.0), angle, rng.uniform(0.03, 0.1), rng)
    mass = _soft(d, radius) * _soft_region(ic)
    cleft = np.clip(1.0 - np.abs(d - 1.0 - 1.0 / radius) * radius / 0.9, 0, 1) * ic * (1 - mass)
    img = tissue * (1.0 - rng.uniform(0.35, 0.6) * cleft)
    val = rng.uniform(0.92, 1.0) * _texture(rng, shape, 0.025)
    img = img * (1 - mass) + val * mass
    return img, mass


def _pituitary(rng, view, position, ic, s):
    shape = view.size
    mid = mni152.load_template().midline
    row = _sella_row(position) + rng.uniform(-3, 3)
    col = mid + rng.uniform(-1.5, 1.5)
    center = view.to_output(row, col)
    # keep the centre inside the intracranial region
    ci = int(round(np.clip(center[0], 0, shape[0] - 1)))
    cj = int(round(np.clip(center[1], 0, shape[1] - 1)))
    if not ic[ci, cj]:
        _, (ri, rj) = ndi.distance_transform_edt(~ic, return_indices=True)
        center = (float(ri[ci, cj]), float(rj[ci, cj]))
    radius = max(2.2, s * rng.uniform(0.04, 0.085))
    extra = _push(shape, center, radius, rng.uniform(0.3, 0.5))
    tissue = mni152.render(view, extra)[0]
    angle = view.theta + rng.uniform(-0.3, 0.3)  # slightly wider left-right than front-back
    d = _polar(shape, center, radius, rng.uniform(1.0, 1.3), angle, rng.uniform(0.04, 0.12), rng)
    mass = _soft(d, radius) * _soft_region(ic)
    val = rng.uniform(0.86, 0.97) * _texture(rng, shape, 0.03)
    img = tissue * (1 - mass) + val * mass
    return img, mass


TIER_SIZES = {"large": (0.08, 0.14), "medium": (0.045, 0.07), "small": (0.0225, 0.04)}  # radius / field of view
TIER_CONTRASTS = {"strong": (0.25, 0.40), "subtle": (0.10, 0.18)}  # |lesion - local tissue mean|
TIER_LABELS = ("lesion", "none")


def generate_tier(index: int, seed: int, size: tuple[int, ...], lesion_size: str, contrast: str) -> BuiltinSample:
    """An item of a graded tier: ``none`` (odd indices: the same in every tier) or one focal lesion."""
    size = mni152.check_size(size, "brain-lesions", allow_3d=False)
    h, w = size
    rng = np.random.default_rng([int(seed), int(index)])
    label = TIER_LABELS[int(index) % 2]
    lo, hi = mni152.load_template().ranges["axial"]
    view = mni152.plan_view(rng, "axial", size, position=rng.uniform(lo, hi))
    base = mni152.render(view)[0]
    tier = f"{lesion_size}-{contrast}"
    if label == "none":
        img = mni152.intensity_augment(base, rng)
        return BuiltinSample(image=np.ascontiguousarray(img, dtype=np.float32), label=label,
                             mask=np.zeros((h, w), np.uint8), extra={"tier": tier, "polarity": ""})
    lesion_rng = np.random.default_rng([int(seed), int(index), 1])  # lesion draws apart from the slice's
    img, weight, polarity = focal_lesion(lesion_rng, base, float(min(h, w)), TIER_SIZES[lesion_size], TIER_CONTRASTS[contrast])
    img = mni152.intensity_augment(img, rng)
    return BuiltinSample(image=np.ascontiguousarray(img, dtype=np.float32), label=label,
                         mask=(weight > 0.5).astype(np.uint8), extra={"tier": tier, "polarity": polarity})


def focal_lesion(rng, base, s, radius_range, contrast_range, brain=None, tissue=None):
    """One homogeneous lesion in brain tissue, brighter or darker than the local tissue mean:
    (image, soft lesion weight, "bright" | "dark"). ``radius_range`` is a fraction of ``s`` (the
    field of view in pixels). ``brain`` / ``tissue`` default to the MNI152 slices' thresholds
    (foreground above 0.05; grey and white matter above 0.45); other images pass their own
    (``medgen.anomaly.synthetic`` does, for a user's normal images).

    A bright lesion goes where the tissue leaves room below 1 (grey matter, deep nuclei), a dark
    one anywhere in tissue, so both polarities stay in [0, 1] at every contrast."""
    brain = fill_holes(base > BRAIN_THRESHOLD) if brain is None else brain
    tissue = base > 0.45 if tissue is None else tissue
    radius = max(1.4, s * rng.uniform(*radius_range))
    delta = rng.uniform(*contrast_range)
    local = ndi.gaussian_filter(base, max(1.0, radius))  # the tissue mean around a candidate centre
    dist = ndi.distance_transform_edt(brain)
    ok = (dist >= radius + 1.5) & tissue  # in tissue, away from the brain edge
    bright = rng.random() < 0.5
    room = ok & (local + delta <= 1.0) if bright else ok & (local - delta >= 0.05)
    if not room.any():
        bright = not bright
        room = ok & (local + delta <= 1.0) if bright else ok & (local - delta >= 0.05)
    center = _pick(rng, room if room.any() else ok, dist)
    ci, cj = (int(round(np.clip(c, 0, n - 1))) for c, n in zip(center, base.shape))
    value = float(np.clip(local[ci, cj] + (delta if bright else -delta), 0.05, 1.0))
    d = _polar(base.shape, center, radius, rng.uniform(0.7, 1.0), rng.uniform(0, np.pi), rng.uniform(0.05, 0.2), rng)
    weight = _soft(d, radius, 0.6) * brain
    return base * (1 - weight) + value * _texture(rng, base.shape, 0.03) * weight, weight, "bright" if bright else "dark"


class BrainLesionTier:
    """``brain-lesions-SIZE[-CONTRAST]``: one graded tier of focal lesions (see the module's table)."""

    description = "Real MNI152 axial T1 slices, half with one focal simulated lesion of a graded size and contrast"
    simulated = True
    default_size = (64, 64)
    default_n = 400
    labels = TIER_LABELS
    supports_3d = False

    def __init__(self, lesion_size: str, contrast: str = "strong"):
        self.lesion_size, self.contrast = lesion_size, contrast
        self.name = f"brain-lesions-{lesion_size}-{contrast}"

    def item(self, index: int, seed: int, size: tuple[int, ...]) -> BuiltinSample:
        return generate_tier(index, seed, size, self.lesion_size, self.contrast)


def tier(name: str) -> BrainLesionTier:
    """``brain-lesions-medium`` or ``brain-lesions-small-subtle`` -> that tier; anything else: a UserError."""
    parts = name.removeprefix("brain-lesions-").split("-")
    if not name.startswith("brain-lesions-") or not 1 <= len(parts) <= 2 or parts[0] not in TIER_SIZES \
            or (len(parts) == 2 and parts[1] not in TIER_CONTRASTS):
        raise UserError(f"unknown brain-lesions tier '{name}': use brain-lesions-SIZE[-CONTRAST] with SIZE one of "
                        f"{', '.join(TIER_SIZES)} and CONTRAST one of {', '.join(TIER_CONTRASTS)}")
    return BrainLesionTier(parts[0], parts[1] if len(parts) == 2 else "strong")


class BrainLesions:
    name = "brain-lesions"
    description = ("Real MNI152 axial T1 slices with simulated tumours (glioma, meningioma, pituitary, none) "
                   "and exact lesion masks")
    simulated = True
    default_size = (64, 64)
    default_n = 800
    labels = LABELS
    supports_3d = False

    def item(self, index: int, seed: int, size: tuple[int, ...]) -> BuiltinSample:
        return generate(index, seed, size)[0]


BUILTIN = BrainLesions()
