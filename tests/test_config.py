import pytest

from medgen.config import preset_names, resolve
from medgen.errors import UserError


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_profile_resolves(name):
    from medgen.config import load_preset

    profiles = load_preset(name)["profiles"]  # with those of the preset it extends
    assert {"paper", "small", "tiny"} <= set(profiles)
    for profile in profiles:
        cfg = resolve(name, profile)
        assert cfg.preset == name and cfg.profile == profile


def test_overrides_and_stage_merge():
    cfg = resolve("mammo-roi-ldm", "tiny", ["train.seed=7", "model.kl_weight=0.5", "train.stages.diffusion.lr=0.01"])
    assert cfg.train.seed == 7 and cfg.model.params()["kl_weight"] == 0.5
    assert cfg.stage("diffusion").lr == 0.01 and cfg.stage("autoencoder").lr == 1e-4


def test_paper_profile_has_s000_settings():
    cfg = resolve("mammo-roi-ldm", "paper")
    p = cfg.model.params()
    assert p["autoencoder"]["channels"] == [128, 128, 256] and p["unet"]["channels"] == [128, 256, 512]
    assert p["unet"]["num_head_channels"] == [0, 256, 512] and p["adv_weight"] == 0.01 and p["adv_start_epoch"] == 4
    assert cfg.stage("autoencoder").batch_size == 4 and cfg.stage("diffusion").lr == 4e-4


@pytest.mark.parametrize("overrides,needle", [
    (["train.epoch=3"], "train.epoch: unknown key (did you mean 'train.epochs'?)"),
    (["train.batch_size=0"], "train.batch_size"),
    (["model.kl_wieght=1"], "model.kl_wieght: unknown key for family 'ldm' (did you mean 'model.kl_weight'?)"),
    (["model.family=gann"], "unknown model family 'gann'"),
    (["sample.sampler=euler"], "sample.sampler"),
])
def test_bad_config_names_the_key(overrides, needle):
    with pytest.raises(UserError) as err:
        resolve("mammo-roi-ldm", "tiny", overrides)
    assert needle in str(err.value)


def test_unknown_preset_and_profile():
    with pytest.raises(UserError, match="did you mean 'mammo-roi-ldm'"):
        resolve("mammo-roi-lmd")
    with pytest.raises(UserError, match="no profile 'huge'"):
        resolve("mammo-roi-ldm", "huge")


def test_config_yaml_roundtrip(tmp_path):
    cfg = resolve("dbt-ddpm-3d", "tiny", ["train.seed=3"])
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    again = resolve(str(tmp_path / "c.yaml"))
    assert again == cfg


def test_a_preset_that_extends_another_changes_only_what_it_names(tmp_path, monkeypatch):
    import medgen.config as config

    for name in ("demo-brain-ldm", "brain-tumor-ldm"):
        (tmp_path / f"{name}.yaml").write_text((config.PRESET_DIR / f"{name}.yaml").read_text())
    monkeypatch.setattr(config, "PRESET_DIR", tmp_path)
    child, parent = resolve("brain-tumor-ldm", "small"), resolve("demo-brain-ldm", "small")
    assert child.data.builtin == "brain-lesions" and child.sample.n == 16 and child.evaluate.utility
    assert child.model.params() == parent.model.params() and child.train == parent.train
    assert resolve("brain-tumor-ldm", "tiny").data.prepare["size"] == [32, 32]  # the child's profile over the parent's
    assert resolve("brain-tumor-ldm", "tiny").model.params() == resolve("demo-brain-ldm", "tiny").model.params()
    assert "pretrain" in config.load_preset("demo-brain-ldm")["profiles"]
    assert "pretrain" not in config.load_preset("brain-tumor-ldm")["profiles"]  # dropped by `pretrain: null`
    # a change to the parent's recipe reaches the child
    demo = tmp_path / "demo-brain-ldm.yaml"
    demo.write_text(demo.read_text().replace("ema_decay: 0.995", "ema_decay: 0.99"))
    assert resolve("brain-tumor-ldm", "small").train.ema_decay == 0.99
    # an unknown parent and a cycle are clear errors naming the file
    (tmp_path / "a.yaml").write_text("extends: nope\nconfig: {}\nprofiles: {small: {}}\n")
    with pytest.raises(UserError, match=r"a\.yaml: extends unknown preset 'nope'"):
        resolve("a", "small")
    (tmp_path / "a.yaml").write_text("extends: b\nconfig: {}\n")
    (tmp_path / "b.yaml").write_text("extends: a\nconfig: {}\n")
    with pytest.raises(UserError, match="preset extends itself: a -> b -> a"):
        resolve("a", "small")
