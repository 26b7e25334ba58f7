"""Feature-based detectors: coreset and nearest neighbours against brute force, PatchCore and
PaDiM finding a planted lesion, the patch-features family (trained encoder; VGG16 only from a
local file), and the graded brain-lesions tiers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_greedy_coreset_covers_every_cluster():
    from medgen.anomaly.features import greedy_coreset

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    x = torch.cat([c + 0.1 * torch.randn(200, 2, generator=g) for c in centres])
    idx = greedy_coreset(x, 4)
    assert sorted((idx // 200).tolist()) == [0, 1, 2, 3]  # one patch from each cluster, not 4 random ones
    assert len(greedy_coreset(x, 2000)) == len(x)


def test_knn_distance_equals_brute_force():
    from medgen.anomaly.features import knn_distance

    g = torch.Generator().manual_seed(1)
    q, m = torch.randn(50, 8, generator=g), torch.randn(30, 8, generator=g)
    d = torch.cdist(q, m)
    torch.testing.assert_close(knn_distance(q, m, 1, chunk=7), d.min(dim=1).values)
    torch.testing.assert_close(knn_distance(q, m, 3), d.sort(dim=1).values[:, :3].mean(dim=1))


def _model(**params):
    from medgen.models.base import DataInfo
    from medgen.models.patch_features import PatchFeatureParams, PatchFeatures

    torch.manual_seed(0)
    return PatchFeatures(PatchFeatureParams(channels=[4, 8], **params), DataInfo(2, 1, (32, 32))).eval()


def _normals(n, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    base = (((yy - 16) ** 2 + (xx - 16) ** 2) < 12 ** 2) * 0.6
    return np.stack([base + rng.normal(0, 0.02, (32, 32)) for _ in range(n)])[:, None].astype(np.float32)


@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_feature_detectors_find_a_planted_lesion(name):
    from medgen.anomaly.detectors import detector_class
    from medgen.anomaly.detectors.base import Settings

    model = _model(feature_stride=1)
    det = detector_class(name)(model, Settings(memory=256))
    det.fit(_normals(12), echo=lambda *_: None)
    test = _normals(2, seed=5)
    test[1, 0, 10:14, 18:22] = 1.0  # a bright 4x4 lesion inside the disc
    maps = det.run(test, 0, "test").maps
    assert maps.shape == (2, 1, 32, 32)
    peak = np.unravel_index(np.argmax(maps[1, 0]), (32, 32))
    assert 9 <= peak[0] <= 14 and 17 <= peak[1] <= 22
    assert maps[1].max() > 2 * maps[0].max()
    assert det.record()


def test_patch_features_shape_and_no_sampling():
    from medgen.errors import UserError

    model = _model()
    f = model.patch_features(torch.rand(2, 1, 32, 32))
    assert f.shape == (2, 4 + 8 + 1, 16, 16)
    assert model.detectors == ("patchcore", "padim") and not model.can_reconstruct
    with pytest.raises(UserError, match="does not generate"):
        model.sample(1)


def test_vgg16_features_need_the_local_file(tmp_path, monkeypatch):
    from medgen.errors import UserError

    monkeypatch.setenv("MEDGEN_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="vgg16-397923af.pth"):
        _model(encoder="vgg16", encoder_weights="auto")
    with pytest.raises(UserError, match="not found"):
        _model(encoder="vgg16", encoder_weights=str(tmp_path / "missing.pth"))


def test_patchcore_detect_end_to_end(tmp_path):
    from medgen.anomaly import detect
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.training import train

    data = tmp_path / "bl"
    prepare("builtin:brain-lesions-large", data, PrepareOptions(size=(32, 32), workers=1, split=(0.5, 0.25, 0.25),
                                                                source=SourceOptions(n=48)))
    run = tmp_path / "pc"
    train("brain-patchcore-anomaly", data, run, profile="tiny", subset=["label=none"], echo=lambda *_: None)
    lines = []
    r = detect(run, echo=lines.append, memory=64)
    assert r["settings"]["detector"] == "patchcore" and r["settings"]["memory"] == 64
    assert 0 <= r["image"]["auroc"] <= 1 and 0 <= r["pixel_foreground"]["auroc"] <= 1
    assert any("memory bank: 64 of" in line for line in lines)
    tuned = r["settings"]["tuning"]  # feature detectors choose their scoring on normals + synthetic lesions
    assert tuned["applied"] and r["settings"]["edge_margin"] == tuned["chosen"]["edge_margin"]
    assert any("scoring chosen on normal validation images" in line for line in lines)
    p = detect(run, out=tmp_path / "padim", echo=lambda *_: None, detector="padim")
    assert p["settings"]["detector"] == "padim" and "map" not in p["settings"]


def test_graded_tiers():
    from medgen.data.builtin import get_builtin
    from medgen.errors import UserError

    small, large = get_builtin("brain-lesions-small-subtle"), get_builtin("brain-lesions-large")
    assert large.name == "brain-lesions-large-strong" and small.labels == ("lesion", "none")
    a, b = small.item(1, 3, (64, 64)), large.item(1, 3, (64, 64))
    assert a.label == "none" and np.array_equal(a.image, b.image) and not a.mask.any()  # the same normals
    diameters, polarity = [], set()
    for i in range(0, 24, 2):
        s = small.item(i, 3, (64, 64))
        assert s.label == "lesion" and s.extra["tier"] == "small-subtle"
        diameters.append(2 * np.sqrt(s.mask.sum() / np.pi))
        polarity.add(s.extra["polarity"])
    assert 2 <= min(diameters) and max(diameters) <= 6.5 and polarity == {"bright", "dark"}
    for bad in ("brain-lesions-tiny", "brain-lesions-small-loud", "brain-lesions-small-strong-x"):
        with pytest.raises(UserError, match="unknown brain-lesions tier"):
            get_builtin(bad)
