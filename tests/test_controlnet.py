"""The ControlNet route to mask conditioning (family ``mask-controlnet``, preset ``brain-lesion-controlnet``):
a frozen base ``ddpm`` U-Net from ``--init-from``, MONAI's ControlNet trained beside it, the mask
family's sampling, pairs and checks."""
import json

import numpy as np
import pytest
import torch

from medgen.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUIET = lambda *a, **k: None  # noqa: E731
PRESET = "brain-lesion-controlnet"
BASE = ["data.subset={}"]  # the base DDPM sees every slice, lesions included, as the preset's header says


@pytest.fixture(scope="module")
def base_run(mask_lesions, tmp_path_factory):
    """A finished tiny ``brain-ddpm-anomaly`` run (the preset's base) on the 32x32 lesion slices."""
    from medgen.training import train

    out = tmp_path_factory.mktemp("cn") / "base"
    train("brain-ddpm-anomaly", mask_lesions, out, profile="tiny", overrides=BASE, echo=QUIET)
    return out


@pytest.fixture(scope="module")
def cn_run(mask_lesions, base_run, tmp_path_factory):
    from medgen.training import train

    out = tmp_path_factory.mktemp("cn") / "controlnet"
    train(PRESET, mask_lesions, out, profile="tiny", init_from=base_run, echo=QUIET)
    return out


def _square_masks(n: int, size: int = 32) -> torch.Tensor:
    m = torch.zeros(n, 1, size, size, dtype=torch.long)
    m[:, :, 8:18, 10:20] = 1
    return m


def _fresh_controlnet(base_run):
    """The preset's tiny model after --init-from, before any training step."""
    from medgen.config import resolve
    from medgen.models.base import build_model
    from medgen.sampling import load_run_model
    from medgen.training import load_init_weights

    _, base, _ = load_run_model(base_run, device="cpu")
    model = build_model(resolve(PRESET, "tiny"), base.info)
    report = load_init_weights(model, base_run, "mask-controlnet")
    return base, model.eval(), report


def test_step_zero_reproduces_the_base_model_exactly(base_run):
    base, model, report = _fresh_controlnet(base_run)
    assert report["controlnet"].startswith("encoder copied")
    # the ControlNet's encoder is the base U-Net's; only its zero convolutions keep it silent
    assert torch.equal(model.denoiser.controlnet.conv_in.conv.weight, base.denoiser.unet.conv_in.conv.weight)
    assert all(float(p.detach().abs().max()) == 0 for p in model.denoiser.controlnet.controlnet_down_blocks.parameters())
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 17, 39])
    with torch.no_grad(), model.denoiser.conditioned_on(_square_masks(3)):
        ours = model.denoiser.eps(x, t, None)
    assert torch.equal(ours, base.denoiser.eps(x, t, None))
    a = model.sample(2, steps=4, generator=torch.Generator().manual_seed(3), masks=_square_masks(2))
    b = base.sample(2, steps=4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_training_changes_only_the_controlnet(base_run, cn_run):
    from medgen.sampling import load_run_model

    _, base, _ = load_run_model(base_run, device="cpu")
    _, model, _ = load_run_model(cn_run, device="cpu")
    _, start, _ = _fresh_controlnet(base_run)
    trained, before, base_sd = model.state_dict(), start.state_dict(), base.state_dict()
    unet = [k for k in trained if k.startswith("denoiser.unet.")]
    assert unet and all(torch.equal(trained[k], base_sd[k]) for k in unet)
    changed = [k for k in trained if k.startswith("denoiser.controlnet.") and not torch.equal(trained[k], before[k])]
    assert any("controlnet_down_blocks" in k for k in changed) and any("controlnet_cond_embedding" in k for k in changed)
    assert not [k for k in trained if not k.startswith(("denoiser.unet.", "denoiser.controlnet."))]
    # and the trained model now reads the mask: two layouts, two predictions
    x, t = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([20])
    other = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    other[..., 20:28, 4:12] = 1
    with torch.no_grad():
        with model.denoiser.conditioned_on(_square_masks(1)):
            e1 = model.denoiser.eps(x, t, None)
        with model.denoiser.conditioned_on(other):
            e2 = model.denoiser.eps(x, t, None)
    assert not torch.equal(e1, e2)


def test_sample_with_masks_writes_pairs(cn_run, tmp_path):
    from PIL import Image

    from medgen.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["sample", str(cn_run), "--masks", "random:glioma,size=2-8", "--n", "2", "--steps", "3", "--out", str(tmp_path / "p")])
    assert exit_.value.code == 0
    man = json.loads((tmp_path / "p/samples.json").read_text())
    assert man["mode"] == "mask-conditioned" and man["family"] == "mask-controlnet" and man["n"] == 2
    for f in man["files"]:
        assert f["mask_source"] == "random:glioma,size=2-8" and f["lesion_class"] == "glioma" and 2 <= f["mask_area_pct"] <= 8
        mask = np.asarray(Image.open(tmp_path / "p" / f["mask"]))
        assert mask.shape == (32, 32) and int((mask > 0).sum()) == f["mask_area_px"]
        assert np.asarray(Image.open(tmp_path / "p" / f["file"])).shape == (32, 32)
    assert (tmp_path / "p/pairs.png").exists()


def _exit_2_one_line(argv, capsys) -> str:
    from medgen.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_missing_or_unfit_init_from_is_exit_2_one_line(mask_lesions, base_run, mask_run, tmp_path, capsys):
    train = ["train", PRESET, "--profile", "tiny", "--data", mask_lesions, "--out", tmp_path / "r"]
    assert "give it with --init-from RUN" in _exit_2_one_line(train, capsys)
    err = _exit_2_one_line([*train, "--init-from", mask_run], capsys)
    assert "a 'mask-ddpm' run; family 'mask-controlnet' starts from a trained ddpm" in err
    err = _exit_2_one_line([*train, "--init-from", base_run, "--set", "model.unet.channels=[8,8]"], capsys)
    assert "the base run's model.unet.channels is [8,16], this config's [8,8]" in err and "--set model.unet.channels=[8,16]" in err
    err = _exit_2_one_line([*train, "--init-from", base_run, "--set", "model.scheduler.num_train_timesteps=100"], capsys)
    assert "model.scheduler.num_train_timesteps is 40" in err
    err = _exit_2_one_line([*train, "--init-from", base_run, "--set", "model.floor_margin=0.1"], capsys)
    assert "the base run's model.floor_margin is 0.0, this config's 0.1" in err
    assert not (tmp_path / "r").exists()


def test_mask_of_the_wrong_size_is_exit_2_naming_the_file(cn_run, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "small.png")
    err = _exit_2_one_line(["sample", cn_run, "--masks", tmp_path / "small.png", "--out", tmp_path / "o"], capsys)
    assert "small.png" in err and "mask size (16, 16) does not match" in err
    assert not (tmp_path / "o").exists()


def test_a_bare_checkpoint_file_is_refused():
    """The base run's config is what the ControlNet's settings are checked against."""
    from medgen.config import resolve
    from medgen.models.base import DataInfo, InitSource, build_model

    model = build_model(resolve(PRESET, "tiny"), DataInfo(2, 1, (32, 32), ["a"]))
    with pytest.raises(UserError, match="needs the base run's directory"):
        model.on_init_from(InitSource("w.safetensors", None, None, None, None, {"not_initialised": []}))
