"""Built-in datasets: determinism, shapes, labels, masks, cohorts and texture statistics."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from medgen.data.builtin import builtin_names, get_builtin
from medgen.data.builtin import breast_phantom, lesions, mni152
from medgen.errors import UserError

NAMES = ["mni152", "brain-lesions", "breast-phantom"]


def _same(a, b) -> bool:
    if a.label != b.label or a.extra != b.extra:
        return False
    if (a.mask is None) != (b.mask is None):
        return False
    return np.array_equal(a.image, b.image) and (a.mask is None or np.array_equal(a.mask, b.mask))


def test_registry_and_protocol_attributes():
    assert sorted(builtin_names()) == sorted(NAMES)
    for name in NAMES:
        b = get_builtin(name)
        assert b.name == name
        assert isinstance(b.description, str) and b.description
        assert isinstance(b.labels, tuple) and len(set(b.labels)) == len(b.labels) >= 3
        assert b.default_size == (64, 64)
        assert b.default_n > 0
    assert get_builtin("mni152").simulated is False and get_builtin("mni152").supports_3d is True
    assert get_builtin("brain-lesions").simulated is True and get_builtin("brain-lesions").supports_3d is False
    assert get_builtin("breast-phantom").simulated is True and get_builtin("breast-phantom").supports_3d is False
    assert get_builtin("brain-lesions").labels == ("glioma", "meningioma", "pituitary", "none")
    assert get_builtin("breast-phantom").labels == ("normal", "mass", "calcification")
    assert get_builtin("mni152").labels == ("axial", "coronal", "sagittal")


def test_unknown_builtin_is_user_error():
    with pytest.raises(UserError, match="unknown built-in"):
        get_builtin("no-such-dataset")


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_order_independent(name):
    b = get_builtin(name)
    first = [b.item(i, 7, (64, 64)) for i in (0, 1, 2, 5)]
    # generate in another order, with other items in between: each item depends on (seed, index) only
    b.item(11, 3, (64, 64))
    again = [b.item(i, 7, (64, 64)) for i in (5, 2, 1, 0)][::-1]
    for a, c in zip(first, again):
        assert _same(a, c)
    assert not np.array_equal(first[0].image, first[1].image)
    assert not np.array_equal(b.item(0, 8, (64, 64)).image, first[0].image)  # other seed, other item


@pytest.mark.parametrize("size", [(64, 64), (32, 48)])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_ranges_labels(name, size):
    b = get_builtin(name)
    seen = set()
    for i in range(8):
        s = b.item(i, 0, size)
        assert s.image.dtype == np.float32 and s.image.shape == size
        assert np.isfinite(s.image).all()
        assert s.image.min() >= 0.0 and s.image.max() <= 1.0
        assert s.image.std() > 0.05  # real content, not a blank frame
        assert s.label in b.labels
        seen.add(s.label)
        if name == "mni152":
            assert s.mask is None
        else:
            assert s.mask is not None and s.mask.dtype == np.uint8 and s.mask.shape == size
            assert set(np.unique(s.mask)) <= {0, 1}
        if name != "breast-phantom":
            assert s.label == b.labels[i % len(b.labels)]
    assert seen == set(b.labels)


def test_mni152_brain_fills_the_frame_in_every_orientation():
    b = get_builtin("mni152")
    for i in range(9):
        s = b.item(i, 1, (64, 64))
        brain = s.image > 0.05
        frac = brain.mean()
        assert 0.25 < frac < 0.9, (s.label, frac)
        # centred: the brain's centroid is near the middle; cropped with a margin: the border is mostly background
        cy, cx = ndi.center_of_mass(brain)
        assert abs(cy - 31.5) < 8 and abs(cx - 31.5) < 8
        border = np.concatenate([brain[0], brain[-1], brain[:, 0], brain[:, -1]])
        assert border.mean() < 0.25


def test_mni152_layout_matches_read_nifti():
    """The template uses medgen's NIfTI convention: vol[k] axial anterior-up, superior slices first."""
    from medgen.data.io import read_nifti

    t = mni152.load_template()
    ref = read_nifti(mni152.template_path())[0]
    assert ref.shape == t.vol.shape
    assert np.allclose(t.vol, np.clip(ref / 255.0, 0, 1), atol=1e-6)
    # superior first: the lowest brain voxels (brainstem) lie at the end of the z axis, below the cerebrum
    z = np.flatnonzero(t.brain.any(axis=(1, 2)))
    assert t.brain[z[-1]].sum() < 0.05 * t.brain[(z[0] + z[-1]) // 2].sum()
    mid = (z[0] + z[-1]) // 2
    area = t.brain.sum(axis=(1, 2))
    assert area[z[0] : mid].sum() > area[mid : z[-1] + 1].sum()  # the cerebrum is above the brainstem


@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal"])
def test_mni152_slices_are_not_flipped(orientation):
    """Without augmentation an item is the plane of the template, cropped and resized, in the same
    orientation (superior or anterior at the top); the flipped plane matches much worse."""
    t = mni152.load_template()
    lo, hi = t.ranges[orientation]
    pos = t.midline + 20 if orientation == "sagittal" else (lo + hi) // 2
    view = mni152.plan_view(np.random.default_rng(0), orientation, (64, 64), position=pos, augment=False)
    img = mni152.render(view)[0]
    plane = np.moveaxis(t.vol, "axial coronal sagittal".split().index(orientation), 0)[pos]
    rows, cols = np.flatnonzero(plane.any(1)), np.flatnonzero(plane.any(0))
    crop = plane[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(crop.shape)
    square = np.zeros((side, side), np.float32)
    r0, c0 = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]] = crop
    small = ndi.zoom(square, 64 * (1 - 2 * mni152.MARGIN) / side, order=1)
    p = (64 - small.shape[0]) // 2
    inner = img[p : p + small.shape[0], p : p + small.shape[1]]
    def detail(a):  # compare anatomy (sulci, ventricles), not the roughly symmetric outline
        return (a - ndi.gaussian_filter(a, 2.0)).ravel()

    same = np.corrcoef(detail(inner), detail(small))[0, 1]
    flipped = np.corrcoef(detail(inner), detail(small[::-1]))[0, 1]
    assert same > 0.45 and same > flipped + 0.25, (same, flipped)  # measured: same ~0.62, flipped <= 0.25


def test_mni152_3d_slab():
    b = get_builtin("mni152")
    for i in range(3):
        s = b.item(i, 0, (8, 32, 32))
        assert s.image.shape == (8, 32, 32) and s.image.dtype == np.float32
        assert s.image.min() >= 0 and s.image.max() <= 1 and s.mask is None
        assert s.label == b.labels[i]
        vol = s.image
        # a slab of distinct but continuous slices
        adjacent = np.mean([np.abs(vol[k + 1] - vol[k]).mean() for k in range(7)])
        assert adjacent > 1e-3
        assert adjacent < np.abs(vol[-1] - vol[0]).mean()
        assert all((vol[k] > 0.05).mean() > 0.05 for k in range(8))
    assert _same(b.item(4, 0, (8, 32, 32)), b.item(4, 0, (8, 32, 32)))


@pytest.mark.parametrize("name", ["brain-lesions", "breast-phantom"])
def test_2d_only_builtins_refuse_3d(name):
    with pytest.raises(UserError, match="2D"):
        get_builtin(name).item(0, 0, (8, 32, 32))


def test_lesion_masks_match_classes_and_lie_inside_the_brain():
    for i in range(16):
        s, region = lesions.generate(i, 3, (64, 64))
        assert region.dtype == bool and region.shape == (64, 64)
        m = s.mask.astype(bool)
        if s.label == "none":
            assert not m.any()
            continue
        assert m.sum() >= 8, (i, s.label, m.sum())
        assert not (m & ~region).any()
        assert m.mean() < 0.15
        img = s.image
        tissue = img[region & ~ndi.binary_dilation(m, iterations=3) & (img > 0.05)]
        inside = img[m]
        if s.label in ("meningioma", "pituitary"):  # bright, homogeneous (away from its anti-aliased edge)
            assert np.median(inside) > np.percentile(tissue, 75), (i, s.label)
            core = ndi.binary_erosion(m)
            assert img[core if core.any() else m].std() < 0.08
        else:  # glioma: bright enhancing rim and dark necrotic core
            assert inside.max() > np.percentile(tissue, 90)
            assert inside.min() < np.percentile(tissue, 10)


def test_lesion_locations_by_class():
    for i in range(24):
        s, region = lesions.generate(i, 5, (64, 64))
        m = s.mask.astype(bool)
        if s.label == "none":
            continue
        cy, cx = ndi.center_of_mass(m)
        outside = ~region
        if s.label == "meningioma":  # extra-axial: attached to the outer surface
            assert (ndi.binary_dilation(m, iterations=2) & outside).any(), i
        elif s.label == "glioma":  # intra-axial: mostly away from the outer surface
            assert (ndi.binary_dilation(m, iterations=1) & outside).sum() < 0.1 * m.sum()
        elif s.label == "pituitary":  # midline, anterior half of the axial slice
            assert abs(cx - 31.5) < 0.15 * 64, (i, cx)
            rows = np.flatnonzero(region.any(1))
            assert cy < rows[0] + 0.6 * (rows[-1] - rows[0]), (i, cy)


def test_breast_masks_match_classes():
    b = get_builtin("breast-phantom")
    n_calc = 0
    contrasts = []
    for i in range(30):
        s = b.item(i, 1, (64, 64))
        m = s.mask.astype(bool)
        if s.label == "normal":
            assert not m.any()
        else:
            assert m.any()
            assert m.mean() < 0.2
        if s.label == "calcification":
            n_calc += 1
            _, comps = ndi.label(m)
            assert 1 <= comps <= 15
            ring = ndi.binary_dilation(m, iterations=3) & ~m
            assert s.image[m].max() - np.median(s.image[ring]) > 0.08  # bright specks (measured min ~0.09)
            contrasts.append(s.image[m].max() - np.median(s.image[ring]))
        if s.label == "mass":
            assert m.sum() > 15
    assert n_calc >= 5
    assert np.median(contrasts) > 0.25


def test_breast_cohorts():
    b = get_builtin("breast-phantom")
    items = [b.item(i, 0, (32, 32)) for i in range(200)]
    cohorts = [s.extra["cohort"] for s in items]
    assert set(cohorts) == {"class0", "beta"}
    assert cohorts.count("beta") == 30  # exactly 15 %: index % 20 in (3, 10, 17)
    assert all(c == breast_phantom.cohort_of(i) for i, c in enumerate(cohorts))
    # class0 has all three labels, balanced; beta is mostly lesions
    c0 = [s.label for s in items if s.extra["cohort"] == "class0"]
    assert {c0.count(lab) for lab in b.labels} <= set(range(50, 64))
    beta = [s.label for s in items if s.extra["cohort"] == "beta"]
    assert beta.count("normal") <= 8
    params = [breast_phantom.describe(i, 0) for i in range(200)]
    b0 = np.mean([p["beta"] for p in params if p["cohort"] == "class0"])
    b1 = np.mean([p["beta"] for p in params if p["cohort"] == "beta"])
    d0 = np.mean([p["density"] for p in params if p["cohort"] == "class0"])
    d1 = np.mean([p["density"] for p in params if p["cohort"] == "beta"])
    assert b1 > b0 + 0.3 and d1 > d0 + 0.1
    # the beta cohort is visibly denser (brighter) on average
    m0 = np.mean([s.image.mean() for s in items if s.extra["cohort"] == "class0"])
    m1 = np.mean([s.image.mean() for s in items if s.extra["cohort"] == "beta"])
    assert m1 > m0 + 0.05


def _spectrum_slope(img: np.ndarray) -> float:
    """Slope of log radial power vs log frequency (Hann-windowed), fitted on 3/N .. 0.25 cycles/px."""
    h, w = img.shape
    x = (img - img.mean()) * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(x)) ** 2
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    sel = (f >= 3 / min(h, w)) & (f <= 0.25)
    return float(np.polyfit(np.log(f[sel]), np.log(power[sel]), 1)[0])


def test_breast_texture_power_spectrum_slope():
    """Lesion-free items: measured spectral slope ~ -beta. Over 600 normal items of 128 px the
    error had sd 0.12 and max 0.33, so +-0.6 per item is a safe honest bound; at 64 px single
    estimates are noisier (sd 0.28) so only their mean is checked."""
    b = get_builtin("breast-phantom")
    normal = [i for i in range(120) if breast_phantom.describe(i, 0)["label"] == "normal"]
    errors = []
    for i in normal[:12]:
        s = b.item(i, 0, (128, 128))
        assert s.label == "normal"
        beta = breast_phantom.describe(i, 0)["beta"]
        err = _spectrum_slope(s.image) + beta
        assert abs(err) < 0.6, (i, beta, err)
        errors.append(err)
    assert abs(np.mean(errors)) < 0.25
    small = [_spectrum_slope(b.item(i, 0, (64, 64)).image) + breast_phantom.describe(i, 0)["beta"] for i in normal[:20]]
    assert abs(np.mean(small)) < 0.3
    # a raw power-law field has exactly the requested slope
    rng = np.random.default_rng(0)
    raw = np.mean([_spectrum_slope(breast_phantom.power_law_noise(rng, (128, 128), 3.0)) for _ in range(5)])
    assert abs(raw + 3.0) < 0.3


def test_item_speed():
    """Well under 50 ms per 64x64 item on one core (template load excluded; lenient bound for busy CI)."""
    for name in NAMES:
        b = get_builtin(name)
        b.item(0, 0, (64, 64))
        t0 = time.perf_counter()
        for i in range(1, 9):
            b.item(i, 0, (64, 64))
        per_item = (time.perf_counter() - t0) / 8
        assert per_item < 0.15, (name, per_item)
