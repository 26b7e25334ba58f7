"""``mni152``: real anatomy from the MNI152 2009c T1 template that nilearn bundles (no download).

The template (``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``, 1 mm, skull-stripped) is read
from nilearn's package folder, put in closest-canonical (RAS) orientation and laid out as
``(z, y, x)`` with z and y flipped, the same convention as :func:`medgen.data.io.read_nifti`:
``vol[k]`` is an axial slice shown anterior-up, ``vol[:, j]`` a coronal slice and ``vol[:, :, i]`` a
sagittal slice (anterior to the left), both shown superior-up. Intensities are the template's
divided by 255, so images lie in [0, 1].

Item ``index`` (from ``np.random.default_rng([seed, index])`` alone):

* label = ``("axial", "coronal", "sagittal")[index % 3]``: the slicing orientation;
* 2D sizes ``(H, W)``: one slice at a random (sub-voxel) position in the central part of the brain
  (slices whose brain area is at least 60 % of the largest slice in that orientation; sagittal
  slices skip the 4 mm next to the midline, where the template is mostly interhemispheric fissure);
* 3D sizes ``(D, H, W)``: a slab of ``D`` parallel slices in the label's orientation (so ``axial``
  items are axial slabs, ``vol[k]`` of the item is an axial slice), spaced about as far apart as
  the in-plane pixels (near-isotropic), centred in the same central range and kept inside the brain;
* the slice (or slab) is cropped to the brain's bounding box with an 8 % margin, padded to the
  output's aspect ratio and resampled (with anti-aliasing) to ``size``;
* mild augmentation: rotation +-10 deg, scale +-8-10 %, translation +-4 %, a smooth elastic
  deformation of about 1 % of the field of view, then gamma 0.8-1.25 and a smooth multiplicative
  bias field of about +-10 %.

No masks (``mask`` is None). :mod:`medgen.data.builtin.lesions` reuses :func:`plan_view`,
:func:`render` and :func:`intensity_augment` to draw lesions on axial slices.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from medgen.data.builtin import BuiltinSample
from medgen.errors import UserError

T1_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
ORIENTATIONS = ("axial", "coronal", "sagittal")
_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}  # normal axis of the plane in the (z, y, x) volume
CENTRAL_AREA_FRACTION = 0.6  # slices whose brain area is at least this fraction of the largest
MIDLINE_GAP = 4  # sagittal slices closer than this (voxels) to the midline are skipped
MARGIN = 0.08  # crop margin around the brain, as a fraction of its larger extent


def template_path() -> Path:
    """The bundled MNI152 T1 file inside the installed nilearn package (never downloads)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the mni152 built-ins need the 'nilearn' package (pip install nilearn)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / T1_FILE
    if not path.exists():
        raise UserError(f"nilearn is installed but its bundled MNI152 template is missing: {path}")
    return path


@dataclass(frozen=True)
class Template:
    vol: np.ndarray  # float32 (z, y, x) in [0, 1]
    brain: np.ndarray  # bool, same shape
    ranges: dict[str, tuple[int, int]]  # central slice range [lo, hi] per orientation
    extent: dict[str, tuple[int, int]]  # slices that contain any brain, per orientation
    midline: int  # x index of the midline (MNI x = 0)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Load (once per process) the template as a (z, y, x) volume scaled to [0, 1]."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(template_path())))
    data = np.asarray(img.dataobj, dtype=np.float32)
    vol = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[::-1, ::-1, :]) / np.float32(255.0)
    vol = np.clip(vol, 0.0, 1.0)
    brain = vol > 0.01
    # x index of MNI x = 0 (the x axis is not flipped in the layout)
    midline = int(round(-img.affine[0, 3] / img.affine[0, 0]))
    ranges, extent = {}, {}
    for name, axis in _AXIS.items():
        other = tuple(a for a in range(3) if a != axis)
        area = brain.sum(axis=other)
        ok = area >= CENTRAL_AREA_FRACTION * area.max()
        idx = np.flatnonzero(ok)
        ranges[name] = (int(idx[0]), int(idx[-1]))
        nz = np.flatnonzero(area > 0)
        extent[name] = (int(nz[0]), int(nz[-1]))
    return Template(vol=vol, brain=brain, ranges=ranges, extent=extent, midline=midline)


def _planes(volume: np.ndarray, orientation: str) -> np.ndarray:
    """View of the volume as (slice, row, col) for the orientation (rows superior/anterior first)."""
    return np.moveaxis(volume, _AXIS[orientation], 0)


def check_size(size: tuple[int, ...], name: str, allow_3d: bool) -> tuple[int, ...]:
    size = tuple(int(s) for s in size)
    if len(size) not in ((2, 3) if allow_3d else (2,)) or min(size) < 4:
        want = "(H, W) or (D, H, W)" if allow_3d else "(H, W); it makes 2D images only"
        raise UserError(f"built-in '{name}' cannot make size {size}: give {want} with every side >= 4")
    return size


@dataclass
class View:
    """Where and how one item samples the template (all randomness drawn by :func:`plan_view`)."""

    orientation: str
    positions: np.ndarray  # float positions of the planes along the orientation's normal axis
    size: tuple[int, int]  # output (H, W)
    center: np.ndarray  # (row, col) in plane voxels that maps to the output centre
    spacing: float  # plane voxels per output pixel (scale augmentation included)
    theta: float  # rotation (radians)
    elastic: np.ndarray  # (2, H, W) smooth displacement in output pixels
    z_sigma: float  # anti-alias sigma across planes (voxels); 0 for single slices

    def grid(self, extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Plane (row, col) coordinates sampled by each output pixel; ``extra`` adds output-pixel offsets."""
        h, w = self.size
        u = np.mgrid[0:h, 0:w].astype(np.float32)
        u[0] -= (h - 1) / 2
        u[1] -= (w - 1) / 2
        u += self.elastic
        if extra is not None:
            u += extra
        c, s = np.cos(self.theta), np.sin(self.theta)
        rows = self.center[0] + self.spacing * (c * u[0] - s * u[1])
        cols = self.center[1] + self.spacing * (s * u[0] + c * u[1])
        return rows, cols

    def to_output(self, row: float, col: float) -> tuple[float, float]:
        """Output pixel of a plane voxel (ignores the small elastic part)."""
        h, w = self.size
        dr, dc = (row - self.center[0]) / self.spacing, (col - self.center[1]) / self.spacing
        c, s = np.cos(self.theta), np.sin(self.theta)
        return c * dr + s * dc + (h - 1) / 2, -s * dr + c * dc + (w - 1) / 2


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], nodes: int, std: float) -> np.ndarray:
    """A smooth random field: Gaussian values on a coarse ``nodes``-per-axis grid, cubic-upsampled."""
    coarse = rng.normal(0.0, std, size=(nodes,) * len(shape)).astype(np.float32)
    return ndi.zoom(coarse, [s / nodes for s in shape], order=3, mode="nearest", grid_mode=True)[
        tuple(slice(0, s) for s in shape)
    ]


def plan_view(rng: np.random.Generator, orientation: str, size: tuple[int, ...],
              position: float | None = None, augment: bool = True) -> View:
    """Draw the slice position(s), crop and geometric augmentation of one item.

    ``size`` is (H, W) for one slice or (D, H, W) for a slab of D parallel slices.
    """
    t = load_template()
    h, w = size[-2:]
    n = size[0] if len(size) == 3 else 1
    lo, hi = t.ranges[orientation]
    e_lo, e_hi = t.extent[orientation]
    planes_mask = _planes(t.brain, orientation)

    if n == 1:
        if position is None:
            if orientation == "sagittal":  # skip the midline band, either hemisphere
                left, right = (lo, t.midline - MIDLINE_GAP), (t.midline + MIDLINE_GAP, hi)
                wl, wr = max(left[1] - left[0], 0), max(right[1] - right[0], 0)
                a, b = left if rng.random() * (wl + wr) < wl else right
                position = rng.uniform(a, b)
            else:
                position = rng.uniform(lo, hi)
        positions = np.array([float(position)])
        z_sigma = 0.0
        inplane_probe = [int(round(position))]
    else:
        # near-isotropic slab: slice spacing ~ in-plane pixel spacing of a whole-brain crop
        proj = planes_mask.any(axis=0)
        r_idx, c_idx = np.flatnonzero(proj.any(1)), np.flatnonzero(proj.any(0))
        ext = max((r_idx[-1] - r_idx[0]) / h, (c_idx[-1] - c_idx[0]) / w) * (1 + 2 * MARGIN)
        dz = ext * (rng.uniform(0.9, 1.1) if augment else 1.0)
        dz = min(dz, (e_hi - e_lo) / n)
        half = dz * (n - 1) / 2
        c_lo, c_hi = max(lo, e_lo + half), min(hi, e_hi - half)
        if position is None:
            position = rng.uniform(c_lo, c_hi) if c_hi > c_lo else (e_lo + e_hi) / 2
        positions = float(position) + dz * (np.arange(n) - (n - 1) / 2)
        z_sigma = max(0.0, (dz - 1) / 2)
        inplane_probe = np.unique(np.clip(np.round(positions), 0, planes_mask.shape[0] - 1).astype(int))

    union = planes_mask[inplane_probe].any(axis=0)
    if not union.any():  # cannot happen inside the brain ranges; fall back to the whole brain
        union = planes_mask.any(axis=0)
    r_idx, c_idx = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    r0, r1, c0, c1 = r_idx[0], r_idx[-1], c_idx[0], c_idx[-1]
    margin = MARGIN * max(r1 - r0, c1 - c0)
    spacing = max((r1 - r0 + 2 * margin) / h, (c1 - c0 + 2 * margin) / w)
    center = np.array([(r0 + r1) / 2, (c0 + c1) / 2], dtype=np.float64)

    theta = 0.0
    elastic = np.zeros((2, h, w), dtype=np.float32)
    if augment:
        theta = np.deg2rad(rng.uniform(-10, 10))
        spacing *= rng.uniform(0.92, 1.1)
        center += rng.uniform(-0.04, 0.04, size=2) * np.array([h, w]) * spacing
        amp = 0.012 * max(h, w)
        elastic = np.stack([smooth_field(rng, (h, w), 5, amp) for _ in range(2)])
    return View(orientation=orientation, positions=positions, size=(h, w), center=center,
                spacing=float(spacing), theta=float(theta), elastic=elastic, z_sigma=float(z_sigma))


def render(view: View, extra: np.ndarray | None = None, source: str = "t1") -> np.ndarray:
    """Sample the view's plane(s) as float32 (n, H, W); ``source`` is "t1" or "brain" (mask as 0..1).

    Anti-aliasing: the template block is Gaussian-filtered with sigma = (step - 1) / 2 voxels
    in each direction where the output step is larger than one voxel.
    """
    t = load_template()
    volume = t.vol if source == "t1" else t.brain
    planes = _planes(volume, view.orientation)
    rows, cols = view.grid(extra)
    sig = max(0.0, (view.spacing - 1) / 2)
    pad = int(np.ceil(3 * sig)) + 2
    zpad = int(np.ceil(3 * view.z_sigma)) + 1
    nz, nr, nc = planes.shape
    z0 = max(int(np.floor(view.positions.min())) - zpad, 0)
    z1 = min(int(np.ceil(view.positions.max())) + zpad + 1, nz)
    r0 = max(int(np.floor(rows.min())) - pad, 0)
    r1 = min(int(np.ceil(rows.max())) + pad + 1, nr)
    c0 = max(int(np.floor(cols.min())) - pad, 0)
    c1 = min(int(np.ceil(cols.max())) + pad + 1, nc)
    h, w = view.size
    n = len(view.positions)
    if r1 <= r0 or c1 <= c0 or z1 <= z0:
        return np.zeros((n, h, w), dtype=np.float32)
    block = np.asarray(planes[z0:z1, r0:r1, c0:c1], dtype=np.float32)
    if sig > 0 or view.z_sigma > 0:
        block = ndi.gaussian_filter(block, (view.z_sigma, sig, sig), mode="constant", truncate=3.0)
    zz = np.broadcast_to((view.positions - z0)[:, None, None], (n, h, w))
    rr = np.broadcast_to(rows - r0, (n, h, w))
    cc = np.broadcast_to(cols - c0, (n, h, w))
    out = ndi.map_coordinates(block, [zz, rr, cc], order=1, mode="constant", cval=0.0)
    return out.astype(np.float32, copy=False)


def intensity_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma 0.8-1.25 and a smooth multiplicative bias field of about +-10 %, clipped to [0, 1]."""
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    out = np.power(np.clip(img, 0.0, 1.0), gamma)
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in img.shape]
    grids = np.meshgrid(*axes, indexing="ij")
    log_bias = np.zeros(img.shape, dtype=np.float32)
    for g in grids[-2:]:  # in-plane linear + quadratic terms
        log_bias += rng.normal(0, 0.06) * g + rng.normal(0, 0.03) * g * g
    log_bias += rng.normal(0, 0.03) * grids[-2] * grids[-1]
    if img.ndim == 3 and img.shape[0] > 1:
        log_bias += rng.normal(0, 0.04) * grids[0]
    out = out * np.exp(log_bias)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class MNI152:
    name = "mni152"
    description = ("Real anatomy: slices (or slabs) of the MNI152 2009 T1 template bundled with nilearn, "
                   "in axial/coronal/sagittal orientation, with mild geometric and intensity augmentation")
    simulated = False
    default_size = (64, 64)
    default_n = 600
    labels = ORIENTATIONS
    supports_3d = True

    def item(self, index: int, seed: int, size: tuple[int, ...]) -> BuiltinSample:
        size = check_size(size, self.name, allow_3d=True)
        rng = np.random.default_rng([int(seed), int(index)])
        label = self.labels[int(index) % len(self.labels)]
        view = plan_view(rng, label, size)
        img = render(view)
        img = intensity_augment(img if len(size) == 3 else img[0], rng)
        return BuiltinSample(image=np.ascontiguousarray(img, dtype=np.float32), label=label, mask=None)


BUILTIN = MNI152()
