"""The self-supervised anomaly segmenter (``selfsup-anomaly``): the synthetic anomalies it learns from
(in the foreground, exact masks, reproducible, 2D and 3D), a network that learns to find a planted
lesion it never saw, and ``medgen detect`` choosing its scoring on normals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _normals(n, seed=0, shape=(32, 32)):
    """Discs of 'tissue' (0.6) with a darker inner ring and noise, on a black background."""
    rng = np.random.default_rng(seed)
    grids = np.mgrid[tuple(slice(0, s) for s in shape)]
    r = np.sqrt(sum((g - s / 2) ** 2 for g, s in zip(grids, shape)))
    base = (r < 0.4 * min(shape)) * 0.6 - ((r > 5) & (r < 7)) * 0.25
    return np.stack([(base + rng.normal(0, 0.02, shape)) * (r < 0.4 * min(shape)) for _ in range(n)])[:, None].astype(np.float32)


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
def test_anomalies_lie_in_the_foreground_with_exact_masks(shape):
    from medgen.anomaly.corruptions import corrupt

    x = _normals(8, shape=shape)
    y, m = corrupt(x, np.random.default_rng(0), p=1.0, min_change=0.04)
    assert y.shape == x.shape and m.shape == (8, 1, *shape)
    background = x[:, 0] <= 0.05
    assert np.array_equal(y[:, 0][background], x[:, 0][background])  # nothing drawn outside the foreground
    assert (m.reshape(8, -1).sum(1) > 0).sum() >= 6                  # (almost) every image got one
    changed = np.abs(y - x)[:, 0]
    assert changed[m[:, 0] > 0].min() > 0.04                         # a masked pixel changed visibly
    y2, m2 = corrupt(x, np.random.default_rng(0), p=1.0)
    assert np.array_equal(y, y2) and np.array_equal(m, m2)            # reproducible from the seed
    y0, m0 = corrupt(x, np.random.default_rng(0), p=1e-9)
    assert np.array_equal(y0, x) and not m0.any()


def test_every_kind_draws_something():
    from medgen.anomaly.corruptions import KINDS, corrupt

    x = _normals(6)
    for kind in KINDS:
        _, m = corrupt(x, np.random.default_rng(1), p=1.0, kinds=(kind,), diameter=(0.2, 0.3))
        assert m.sum() > 0, kind


def _model(**params):
    from medgen.models.base import DataInfo
    from medgen.models.selfsup_anomaly import SelfSupAnomaly, SelfSupParams

    torch.manual_seed(0)
    params = {"channels": [8, 16, 32], "strides": [2, 2], **params}
    return SelfSupAnomaly(SelfSupParams(**params), DataInfo(2, 1, (32, 32)))


def test_the_segmenter_finds_a_lesion_it_never_saw():
    from medgen.engine.context import StepContext

    model = _model(gamma=0.0)
    ctx = StepContext(torch.device("cpu"), amp=False, grad_clip=None, generator=torch.Generator().manual_seed(0))
    ctx.optimizers = {"main": torch.optim.Adam(model.parameters(), lr=3e-3)}
    normals = torch.from_numpy(_normals(32))
    model.train()
    for step in range(250):
        idx = torch.randint(0, 32, (8,), generator=torch.Generator().manual_seed(step))
        model.training_step({"image": normals[idx]}, "segmenter", ctx)
    model.eval()
    test = _normals(2, seed=7)
    test[1, 0, 19:23, 9:13] = 0.95  # a bright 4x4 square: not one of the drawn shapes
    maps = model.anomaly_map(torch.from_numpy(test)).numpy()
    assert maps.shape == (2, 1, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    peak = np.unravel_index(np.argmax(maps[1, 0]), (32, 32))
    assert 18 <= peak[0] <= 23 and 8 <= peak[1] <= 13
    assert maps[1, 0, 19:23, 9:13].mean() > 0.5   # found
    assert maps[0].max() < 0.2                      # and the normal image stays quiet
    val = model.validation_step({"image": normals[:8]}, "segmenter")
    assert set(val) == {"loss", "dice"} and val == model.validation_step({"image": normals[:8]}, "segmenter")


def test_the_map_averages_the_mirror_views():
    x = torch.from_numpy(_normals(2))
    model = _model().eval()
    torch.testing.assert_close(model.anomaly_map(x.flip(-1)), model.anomaly_map(x).flip(-1))  # the same views either way
    plain = _model(test_flips=False).eval()
    assert not torch.allclose(plain.anomaly_map(x.flip(-1)), plain.anomaly_map(x).flip(-1))


def test_volumes_train_and_score():
    from medgen.engine.context import StepContext
    from medgen.models.base import DataInfo
    from medgen.models.selfsup_anomaly import SelfSupAnomaly, SelfSupParams

    model = SelfSupAnomaly(SelfSupParams(channels=[4, 8], strides=[2]), DataInfo(3, 1, (16, 16, 16)))
    ctx = StepContext(torch.device("cpu"), amp=False, grad_clip=None, generator=torch.Generator().manual_seed(0))
    ctx.optimizers = model.optimizers("segmenter", type("T", (), {"lr": 1e-3, "weight_decay": 0.0})())
    vols = torch.from_numpy(_normals(2, shape=(16, 16, 16)))
    assert np.isfinite(model.training_step({"image": vols}, "segmenter", ctx)["loss"])
    maps = model.eval().anomaly_map(vols)
    assert maps.shape == (2, 1, 16, 16, 16)
    torch.testing.assert_close(model.anomaly_map(vols.flip(2)), maps.flip(2))  # 8 mirror views in 3D


def test_bad_settings_and_no_sampling():
    from medgen.errors import UserError

    with pytest.raises(UserError, match="model.kinds"):
        _model(kinds=["pixelate"])
    with pytest.raises(UserError, match="one more entry"):
        _model(channels=[8, 16])
    model = _model()
    assert model.detectors[0] == "segmenter" and not model.can_sample
    with pytest.raises(UserError, match="does not generate"):
        model.sample(1)


def test_detect_scores_the_segmenter_by_its_own_scoring(tmp_path):
    from medgen.anomaly import detect
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.training import train

    data = tmp_path / "bl"
    prepare("builtin:brain-lesions", data, PrepareOptions(size=(32, 32), workers=1, split=(0.5, 0.3, 0.2),
                                                               source=SourceOptions(n=80)))
    run = tmp_path / "run"
    train("brain-selfsup-anomaly", data, run, profile="tiny", echo=lambda *_: None)
    r = detect(run, split="test", echo=lambda *_: None)
    s = r["settings"]
    assert s["detector"] == "segmenter" and (s["smooth"], s["score"], s["edge_margin"]) == (1.0, "max", 0.0)
    assert s["tuning"] == {"mode": "auto", "applied": False} and 0 <= r["image"]["auroc"] <= 1
    given = detect(run, split="test", echo=lambda *_: None, force=True, smooth=2.0, score="top-percentile")
    assert (given["settings"]["smooth"], given["settings"]["score"], given["settings"]["top_percent"]) == (2.0, "top-percentile", 5.0)
    tuned = detect(run, split="test", echo=lambda *_: None, force=True, tune="synthetic")["settings"]["tuning"]
    assert tuned["applied"] and tuned["chosen"]
