"""The conv-ae family (S003): VGG16 encoder from a LOCAL weights file (or from scratch, said so),
a missing file refused clearly, and a frozen encoder that training leaves untouched."""
from __future__ import annotations

import pytest
import torch

from medgen.errors import UserError
from medgen.models.base import DataInfo
from medgen.models.conv_ae import (VGG16_CFG, ConvAEParams, ConvAutoencoder, restoring_from_checkpoint, vgg16_cut,
                                   vgg16_features)

INFO = DataInfo(2, 1, (32, 32), ["none", "tumour"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vgg16_state_file(path, fmt="pth"):
    """A random-init VGG16 state dict laid out like torchvision's (features.* + classifier.*)."""
    torch.manual_seed(0)
    feats = vgg16_features()
    state = {f"features.{k}": v.clone() for k, v in feats.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(8, 4)  # extra keys of the full model are ignored
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


def test_vgg16_layer_list_is_torchvisions():
    feats = vgg16_features(torchvision_ok=False)
    convs = [m.out_channels for m in feats if isinstance(m, torch.nn.Conv2d)]
    assert convs == [v for v in VGG16_CFG if v != "M"] and len(feats) == 31
    assert vgg16_cut(3) == (17, 256) and vgg16_cut(5) == (31, 512) and vgg16_cut(1) == (5, 64)
    from medgen.compat import import_torchvision

    try:
        tv = import_torchvision()
    except Exception:
        tv = None
    if tv is not None:  # same parameter names and shapes, so torchvision's weight files load into either
        ref = tv.models.vgg16(weights=None).features.state_dict()
        assert {k: v.shape for k, v in ref.items()} == {k: v.shape for k, v in feats.state_dict().items()}


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_vgg16_encoder_loads_local_weights_and_freezes(tmp_path, fmt):
    path = tmp_path / f"vgg16.{fmt}"
    state = _vgg16_state_file(path, fmt)
    model = ConvAutoencoder(ConvAEParams(encoder="vgg16", encoder_layers=2, encoder_weights=str(path)), INFO)
    enc = model.encoder.features.state_dict()
    assert len(enc) == 8  # 4 convs in blocks 1-2
    for k, v in enc.items():
        assert torch.equal(v, state[f"features.{k}"])
    assert model.frozen and not any(p.requires_grad for p in model.encoder.parameters())
    assert float(model.encoder_pretrained) == 1.0
    assert model.describe()["encoder_weights"] == "imagenet" and model.describe()["encoder_frozen"]
    assert any(str(path) in n for n in model.notes())
    # only the trainable decoder goes to the optimiser
    opt = model.optimizers("autoencoder", type("T", (), {"lr": 1e-3, "weight_decay": 0.0})())["main"]
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.decoder.parameters())
    y = model.reconstruct(torch.rand(2, 1, 32, 32))
    assert y.shape == (2, 1, 32, 32) and 0 <= float(y.min()) and float(y.max()) <= 1


def test_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16-397923af.pth"
    with pytest.raises(UserError, match="VGG16 encoder weights not found") as err:
        ConvAutoencoder(ConvAEParams(encoder="vgg16", encoder_layers=2, encoder_weights=str(missing)), INFO)
    assert str(missing) in str(err.value) and "medgen weights" in str(err.value)
    # a run being loaded for detection does not need the file: its checkpoint holds the encoder
    with restoring_from_checkpoint():
        m = ConvAutoencoder(ConvAEParams(encoder="vgg16", encoder_layers=2, encoder_weights=str(missing)), INFO)
    assert m.encoder is not None


def test_wrong_weights_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"features.0.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(UserError, match="not a VGG16 weights file"):
        ConvAutoencoder(ConvAEParams(encoder="vgg16", encoder_layers=1, encoder_weights=str(path)), INFO)


def test_without_weights_the_run_says_it_trains_from_scratch():
    model = ConvAutoencoder(ConvAEParams(encoder="vgg16", encoder_layers=2), INFO)
    notes = " ".join(model.notes())
    assert "NO ImageNet weights" in notes and "trained from scratch" in notes
    assert not model.frozen and all(p.requires_grad for p in model.encoder.parameters())
    assert model.describe()["encoder_weights"] == "none (trained from scratch)"
    small = ConvAutoencoder(ConvAEParams(encoder="small", channels=[4, 8], latent_channels=2), DataInfo(3, 1, (8, 16, 16)))
    assert small.reconstruct(torch.rand(1, 1, 8, 16, 16)).shape == (1, 1, 8, 16, 16)  # 3D with the small encoder
    with pytest.raises(UserError, match="2D"):
        ConvAutoencoder(ConvAEParams(encoder="vgg16"), DataInfo(3, 1, (8, 16, 16)))
    with pytest.raises(UserError, match="divisible"):
        ConvAutoencoder(ConvAEParams(encoder="small", channels=[4, 8, 8]), DataInfo(2, 1, (20, 20)))
    with pytest.raises(UserError, match="does not generate"):
        model.sample(2)


def test_frozen_encoder_does_not_change_during_training(tmp_path):
    from medgen.config import resolve
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.engine.checkpoint import load_checkpoint
    from medgen.training import train

    data = tmp_path / "data"
    prepare("builtin:brain-lesions", data, PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=24)))
    weights = tmp_path / "vgg16.pth"
    state = _vgg16_state_file(weights)
    cfg = resolve("brain-ae-anomaly", "tiny", ["model.encoder=vgg16", "model.encoder_layers=1", f"model.encoder_weights={weights}",
                                               "train.max_steps=3", "train.lr=0.01"])
    train(cfg, data, tmp_path / "run", echo=lambda *_: None)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "final")["model"]
    enc = {k.removeprefix("encoder.features."): v for k, v in ckpt.items() if k.startswith("encoder.features.")}
    assert enc and all(torch.equal(v, state[f"features.{k}"]) for k, v in enc.items())
    assert float(ckpt["encoder_pretrained"]) == 1.0
    # the decoder did train: compare with the initial weights (training seeds before building the model)
    from medgen.data.dataset import PreparedDataset
    from medgen.engine.trainer import seed_everything
    from medgen.models.base import build_model

    ds = PreparedDataset(data)
    seed_everything(cfg.train.seed)
    init = build_model(cfg, DataInfo(ds.spatial_dims, ds.channels, ds.size, ds.labels)).state_dict()
    changed = [k for k, v in init.items() if k.startswith("decoder.") and not torch.equal(v, ckpt[k])]
    assert changed
