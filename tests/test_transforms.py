import numpy as np
import pytest

from medgen.data.split import assign_splits, parse_fractions
from medgen.data.transforms import Normalizer, resize
from medgen.errors import UserError


def test_resize_keep_aspect_pads_and_stretch():
    img = np.ones((1, 20, 40), np.float32)
    out = resize(img, (32, 32), keep_aspect=True)
    assert out.shape == (1, 32, 32)
    # a 20x40 image scaled to 16x32 and padded with its min (1.0 here, so all ones)
    assert np.allclose(out, 1.0, atol=1e-3)
    img2 = np.zeros((1, 20, 40), np.float32) + 5
    img2[0, 0, 0] = 0
    out2 = resize(img2, (32, 32), keep_aspect=True)
    assert out2[0, 0, 16] == pytest.approx(0, abs=1e-5) and out2[0, 16, 16] == pytest.approx(5, abs=0.2)
    stretched = resize(np.ones((1, 20, 40), np.float32) * 3, (32, 32), keep_aspect=False)
    assert stretched.shape == (1, 32, 32) and np.allclose(stretched, 3, atol=1e-4)


def test_resize_3d_and_nearest_mask():
    vol = np.random.default_rng(0).random((1, 10, 30, 30)).astype(np.float32)
    assert resize(vol, (8, 16, 16), keep_aspect=False).shape == (1, 8, 16, 16)
    mask = np.zeros((1, 30, 30), np.float32)
    mask[0, 10:20, 10:20] = 1
    small = resize(mask, (15, 15), nearest=True)
    assert set(np.unique(small)) <= {0.0, 1.0} and small.sum() == 25


@pytest.mark.parametrize("tracking", [True, False])
def test_resize_gives_monais_values_without_metadata_and_leaves_tracking_as_it_was(tracking):
    from monai.data import get_track_meta, set_track_meta
    from monai.transforms import Resize

    img = np.random.default_rng(0).random((1, 50, 40)).astype(np.float32)
    expected = np.asarray(Resize((32, 32), mode="bilinear", anti_aliasing=True)(img))  # with MetaTensors
    set_track_meta(tracking)
    try:
        out = resize(img, (32, 32), keep_aspect=False)
        assert get_track_meta() is tracking
    finally:
        set_track_meta(True)
    assert type(out) is np.ndarray and np.array_equal(out, expected)


@pytest.mark.parametrize("spec,x,expected", [
    ("minmax", [2.0, 4.0, 6.0], [0, 0.5, 1]),
    ("window:40,400", [-1000.0, 40.0, 240.0, 1000.0], [0, 0.5, 1, 1]),
    ("zscore", [1.0, 3.0], [-1, 1]),
    ("none", [7.0, -2.0], [7, -2]),
])
def test_normalizers(spec, x, expected):
    out = Normalizer.parse(spec)(np.array(x, np.float32))
    assert np.allclose(out, expected, atol=1e-6)


def test_percentile_clips():
    x = np.arange(1001, dtype=np.float32)
    out = Normalizer.parse("percentile:10,90")(x)
    assert out[0] == 0 and out[-1] == 1 and out[500] == pytest.approx(0.5)


def test_train_max_uses_training_value_and_roundtrips():
    n = Normalizer.parse("train-max").fit(200.0)
    assert np.allclose(n(np.array([100.0, 300.0])), [0.5, 1.5])  # not clipped: val/test may exceed
    again = Normalizer.from_json(n.to_json())
    assert again == n
    with pytest.raises(UserError):
        Normalizer.parse("train-max").fit(0.0)


@pytest.mark.parametrize("spec", ["bogus", "window:40", "percentile:90,10", "minmax:3"])
def test_bad_normalize_spec(spec):
    with pytest.raises(UserError):
        Normalizer.parse(spec)


def test_split_stratified_seeded_and_grouped():
    labels = ["a"] * 80 + ["b"] * 20
    groups = [str(i // 2) for i in range(100)]  # pairs share a group
    s1 = assign_splits(labels, groups, [None] * 100, (0.8, 0.1, 0.1), seed=3)
    s2 = assign_splits(labels, groups, [None] * 100, (0.8, 0.1, 0.1), seed=3)
    s3 = assign_splits(labels, groups, [None] * 100, (0.8, 0.1, 0.1), seed=4)
    assert s1 == s2 and s1 != s3
    for lab, n in (("a", 80), ("b", 20)):
        got = [s for s, l in zip(s1, labels) if l == lab]
        assert got.count("train") == pytest.approx(0.8 * n, abs=2)
        assert got.count("val") >= 1 and got.count("test") >= 1
    for g in set(groups):
        assert len({s for s, gg in zip(s1, groups) if gg == g}) == 1


def test_split_respects_fixed_and_tiny_classes():
    labels = ["a", "a", "a", "b"]
    out = assign_splits(labels, ["1", "2", "3", "4"], ["test", None, None, None], (0.8, 0.1, 0.1), 0)
    assert out[0] == "test" and len(out) == 4 and out[3] == "train"


@pytest.mark.parametrize("text", ["0.8,0.2", "0.5,0.5,0.5", "a,b,c", "0,0.5,0.5"])
def test_bad_split_fractions(text):
    with pytest.raises(UserError):
        parse_fractions(text)
