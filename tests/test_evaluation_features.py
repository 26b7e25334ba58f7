"""Feature extractors: spec parsing, weights files (TorchScript, torchvision state dicts), radiomics
(FRD), z-scoring, and the cached, deterministic domain CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.errors import UserError
from medgen.evaluation.domain import DomainSettings, build_domain_extractor, load_domain_extractor
from medgen.evaluation.features import (
    RadiomicsExtractor,
    get_extractor,
    parse_feature_specs,
    standardise,
)
from medgen.metrics import fid_from_features


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny networks and matrices: one thread is faster, and immune to a busy machine's oversubscription."""
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)


def _blobs(n: int, size: int = 24, seed: int = 0, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Smooth grey images: class 0 a bright disc, class 1 a bright bar, random positions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, labels = [], []
    for i in range(n):
        c = i % classes
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        if c == 0:
            img = ((yy - cy) ** 2 + (xx - cx) ** 2 < (size / 5) ** 2).astype(np.float32)
        else:
            img = (np.abs(xx - cx) < size / 10).astype(np.float32)
        img = 0.2 + 0.6 * img + rng.normal(0, 0.03, img.shape)
        imgs.append(np.clip(img, 0, 1)[None].astype(np.float32))
        labels.append(c)
    return np.stack(imgs), np.array(labels)


# ---------------------------------------------------------------------------------------------- specs


def test_parse_feature_specs_names_and_paths():
    assert parse_feature_specs(None) == [("domain", None)]
    assert parse_feature_specs("inception:/w/pt.pth,radiomics") == [("inception", "/w/pt.pth"), ("radiomics", None)]
    assert parse_feature_specs(["resnet50:a.safetensors"]) == [("resnet50", "a.safetensors")]
    with pytest.raises(UserError, match="did you mean 'inception'"):
        parse_feature_specs("inceptoin")
    with pytest.raises(UserError, match="twice"):
        parse_feature_specs("domain,domain")


@pytest.mark.parametrize("name", ["inception", "resnet50", "radimagenet"])
def test_missing_weights_file_is_a_user_error_naming_it(tmp_path, name):
    missing = tmp_path / "nowhere" / f"{name}-weights.pth"
    with pytest.raises(UserError) as err:
        get_extractor(name, str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "not found" in msg
    assert "http" in msg or "github" in msg.lower()  # says where to get it


def test_no_weights_given_searches_the_hub_cache_then_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(UserError) as err:
        get_extractor("inception", None)
    assert "pt_inception-2015-12-05-6726825d.pth" in str(err.value)
    assert "domain" in str(err.value)  # points at the offline alternatives


# ---------------------------------------------------------------------------------------------- TorchScript


class _ProbeNet(torch.nn.Module):
    """Returns (N, 2048): input min, max and width in the first 3 columns, so tests see the preprocessing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        stats = torch.stack([x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), torch.full((n,), float(x.shape[-1]))], 1)
        return torch.cat([stats, x.mean(dim=(2, 3)), torch.zeros(n, 2042)], 1)


class _NvidiaProbe(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        n = x.shape[0]
        stats = torch.stack([x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), torch.full((n,), float(x.shape[-1]))], 1)
        return torch.cat([stats, torch.zeros(n, 2045)], 1)


def test_inception_torchscript_file_loads_and_gives_2048_features(tmp_path):
    path = tmp_path / "tiny-inception.pt"
    torch.jit.script(_ProbeNet()).save(str(path))
    ext = get_extractor("inception", str(path))
    images = np.linspace(0, 1, 3 * 20 * 20, dtype=np.float32).reshape(3, 1, 20, 20)
    f = ext(images)
    assert f.shape == (3, 2048)
    assert np.all(f[:, 2] == 299)  # resized to the Inception input size
    assert f[:, 0].min() >= -1.0 - 1e-5 and f[:, 1].max() <= 1.0 + 1e-5 and f[:, 0].min() < -0.5  # scaled to [-1, 1]
    assert np.allclose(f[:, 3], f[:, 4]) and np.allclose(f[:, 4], f[:, 5])  # grey replicated to 3 channels
    d = ext.describe()
    assert d["name"] == "inception" and d["weights"] == str(path) and len(d["weights_sha256"]) == 64


def test_nvidia_style_torchscript_gets_0_to_255_input(tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(_NvidiaProbe()).save(str(path))
    ext = get_extractor("inception", str(path))
    f = ext(np.ones((2, 1, 16, 16), dtype=np.float32))
    assert ext.variant == "nvidia" and f.shape == (2, 2048)
    assert np.allclose(f[:, 1], 255.0)


def test_resnet50_torchscript_gets_imagenet_normalised_224_input(tmp_path):
    path = tmp_path / "resnet50-scripted.pt"
    torch.jit.script(_ProbeNet()).save(str(path))
    ext = get_extractor("resnet50", str(path))
    f = ext(np.zeros((2, 1, 32, 32), dtype=np.float32))
    assert f.shape == (2, 2048) and np.all(f[:, 2] == 224)
    assert np.allclose(f[:, 0], -0.485 / 0.229, atol=1e-4)  # black -> ImageNet-normalised red channel


def test_volumes_average_slice_features(tmp_path):
    path = tmp_path / "probe.pt"
    torch.jit.script(_ProbeNet()).save(str(path))
    ext = get_extractor("resnet50", str(path))
    vol = np.zeros((2, 1, 4, 16, 16), dtype=np.float32)
    vol[:, :, :2] = 1.0  # half the slices white
    f = ext(vol)
    assert f.shape == (2, 2048)
    white = (1 - 0.485) / 0.229
    black = -0.485 / 0.229
    assert np.allclose(f[:, 3], (white + black) / 2, atol=1e-3)


def _torchvision():
    from medgen.compat import import_torchvision

    tv = import_torchvision()
    if tv is None:
        pytest.skip("torchvision is not installed (pip install --no-deps torchvision==0.28.0): state-dict paths untested")
    return tv


def test_resnet50_state_dict_gives_penultimate_2048_features(tmp_path):
    tv = _torchvision()
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = tv.models.resnet50(weights=None).eval()
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    st_path, pth_path = tmp_path / "resnet50-random.safetensors", tmp_path / "resnet50-random.pth"
    save_file(sd, str(st_path))
    torch.save(sd, str(pth_path))  # a plain pickled state dict: read with weights_only=True
    images = np.random.default_rng(0).random((2, 1, 32, 32)).astype(np.float32)
    x = torch.from_numpy(images).expand(-1, 3, -1, -1)
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        ref = net(x).numpy()
    for path in (st_path, pth_path):
        ext = get_extractor("resnet50", str(path))
        f = ext(images)
        assert f.shape == (2, 2048) and np.all(f >= 0)  # post-ReLU pooled features
        assert np.allclose(f, ref, rtol=1e-4, atol=1e-5)
        assert ext.describe()["name"] == "resnet50" and ext.describe()["weights"] == str(path)


def test_radimagenet_sequential_backbone_naming_is_mapped(tmp_path):
    tv = _torchvision()
    net = tv.models.resnet50(weights=None)
    backbone = torch.nn.Sequential(*list(net.children())[:-1])
    sd = {f"backbone.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    from safetensors.torch import save_file

    path = tmp_path / "RadImageNet-ResNet50.safetensors"
    save_file(sd, str(path))
    ext = get_extractor("radimagenet", str(path))
    assert ext(np.zeros((1, 1, 16, 16), dtype=np.float32)).shape == (1, 2048)
    assert ext.describe()["name"] == "radimagenet"


def test_wrong_state_dict_is_refused_with_the_keys(tmp_path):
    _torchvision()
    from safetensors.torch import save_file

    path = tmp_path / "not-a-resnet.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(path))
    with pytest.raises(UserError, match="do not fit"):
        get_extractor("resnet50", str(path))


def test_fid_inception_state_dict_path(tmp_path):
    tv = _torchvision()
    from medgen.evaluation.features.feature_extractor_inception import _fid_inception

    net = _fid_inception(tv, {})
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    assert sd["fc.weight"].shape[0] == 1008
    from safetensors.torch import save_file

    path = tmp_path / "pt_inception-random.safetensors"
    save_file(sd, str(path))
    ext = get_extractor("inception", str(path))
    f = ext(np.random.default_rng(0).random((2, 1, 24, 24)).astype(np.float32))
    assert f.shape == (2, 2048) and ext.variant == "fid-inception-2015-12-05"


# ---------------------------------------------------------------------------------------------- radiomics


def test_radiomics_runs_offline_and_frd_of_identical_sets_is_zero():
    images, _ = _blobs(10, 24)
    ext = RadiomicsExtractor()
    f = ext(images)
    assert f.shape[0] == 10 and f.shape[1] > 50
    for family in ("firstorder", "glcm", "glrlm", "glszm"):
        assert any(f"_{family}_" in n for n in ext.feature_names)
    (a, b), info = standardise(f, f.copy())
    assert info["n_features_used"] > 50
    assert fid_from_features(a, b) == pytest.approx(0.0, abs=1e-6)
    noisy = np.clip(images + np.random.default_rng(1).normal(0, 0.2, images.shape), 0, 1).astype(np.float32)
    (a, c), _ = standardise(f, ext(noisy))
    assert fid_from_features(a, c) > 10.0  # noise changes the texture features a lot
    # worker processes give the same rows, in the same order
    np.testing.assert_array_equal(RadiomicsExtractor(workers=2)(images), f)


def test_radiomics_foreground_mask_and_volumes():
    vols = np.random.default_rng(0).random((3, 1, 6, 12, 12)).astype(np.float32)
    ext = get_extractor("radiomics", "foreground")
    f = ext(vols)
    assert f.shape[0] == 3 and ext.describe()["mask"] == "foreground"
    with pytest.raises(UserError, match="whole"):
        get_extractor("radiomics", "bogus")


def test_standardise_uses_real_statistics_and_drops_non_finite():
    real = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 1.0], [5.0, 5.0, 2.0]])
    fake = np.array([[3.0, 6.0, 0.0], [np.inf, 5.0, 0.0]])
    (r, f), info = standardise(real, fake)
    assert r.shape == (3, 2) and info["n_features_dropped"] == 1
    assert np.allclose(r.mean(axis=0), 0) and f[0, 0] == pytest.approx(0.0)
    assert f[0, 1] == pytest.approx(1.0)  # constant real feature: std taken as 1
    assert f[1, 0] == pytest.approx(0.0) and info["non_finite_values_replaced"] == 1


# ---------------------------------------------------------------------------------------------- domain

FAST = DomainSettings(epochs=4, patience=4, batch_size=16)


def test_domain_extractor_is_deterministic_and_cached(tmp_path):
    x, y = _blobs(40, 20)
    xv, yv = _blobs(8, 20, seed=5)
    msgs: list[str] = []
    a = build_domain_extractor(x, y, tmp_path / "a", xv, yv, ["disc", "bar"], FAST, echo=msgs.append)
    b = build_domain_extractor(x, y, tmp_path / "b", xv, yv, ["disc", "bar"], FAST, echo=msgs.append)
    assert len(msgs) == 2 and "training" in msgs[0]
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same data -> same weights
    again = build_domain_extractor(x, y, tmp_path / "a", xv, yv, ["disc", "bar"], FAST, echo=msgs.append)
    assert len(msgs) == 2 and again.reused and again.weights == a.weights  # reused, not retrained
    assert a.weights.suffix == ".safetensors" and a.weights.parent == tmp_path / "a"
    fa, fb = a(x[:6]), again(x[:6])
    assert fa.shape == (6, 128) and np.allclose(fa, fb)
    d = again.describe()
    assert d["training"]["kind"] == "classifier" and d["training"]["reused_from_cache"] is True
    assert 0 <= d["training"]["val_accuracy"] <= 1 and d["training"]["chance_accuracy"] == pytest.approx(0.5)
    loaded = load_domain_extractor(a.weights)  # `--features domain:PATH`
    assert np.allclose(loaded(x[:6]), fa)
    other = build_domain_extractor(x, y, tmp_path / "a", xv, yv, ["disc", "bar"], DomainSettings(epochs=4, patience=4, seed=1),
                                   echo=msgs.append)
    assert other.weights != a.weights and len(msgs) == 3  # another seed is another extractor


def test_domain_extractor_is_an_autoencoder_for_one_label(tmp_path):
    x, _ = _blobs(24, 16)
    ext = build_domain_extractor(x, np.zeros(len(x), dtype=np.int64), tmp_path, settings=FAST, echo=lambda *_: None)
    assert ext.meta["kind"] == "autoencoder"
    assert ext(x[:3]).shape == (3, 128)
    tr = ext.describe()["training"]
    assert tr["val_reconstruction_mse"] > 0 and tr["mean_image_mse"] > 0
    with pytest.raises(UserError, match="at least 4"):
        build_domain_extractor(x[:3], None, tmp_path, settings=FAST, echo=lambda *_: None)
