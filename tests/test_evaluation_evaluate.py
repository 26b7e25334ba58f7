"""`medgen evaluate` end to end on a tiny prepared dataset and a tiny conditional LDM run:
identical sets, degraded sets, run mode with settings in metrics.json, sweeps, utility, folders, CLI."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from medgen.data.prepare import PrepareOptions, prepare
from medgen.data.sources import SourceOptions
from medgen.errors import UserError
from medgen.evaluation.domain import DomainSettings
from medgen.evaluation.evaluate import evaluate, load_image_set, parse_sweep
from medgen.evaluation.generation import sampler_names
from medgen.evaluation.utility import METRIC_COLUMNS, SCENARIOS, utility_table
from medgen.training import train

QUIET = lambda *a, **k: None  # noqa: E731


def _samplers(run) -> tuple[str, str]:
    """The run's configured sampler and another registered one (names come from the registry, not from here)."""
    configured = yaml.safe_load((run / "config.yaml").read_text())["sample"]["sampler"]
    return configured, next(s for s in sampler_names() if s != configured)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny networks and matrices: one thread is faster, and immune to a busy machine's oversubscription."""
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "bl"
    prepare("builtin:brain-lesions", out, PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=120)))
    return out


@pytest.fixture(scope="module")
def run(lesions, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ldm"
    train("mammo-roi-ldm", lesions, out, profile="tiny", overrides=["model.conditional=true", "sample.steps=4"], echo=QUIET)
    return out


def _blur_and_noise(images: np.ndarray, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(images, sigma=(0, 0, 1.5, 1.5))
    out = out + np.random.default_rng(seed).normal(0, 0.15, images.shape)
    return np.clip(out, 0, 1).astype(np.float32)


def test_identical_sets_give_zero_distances_and_total_memorisation(lesions, tmp_path):
    res = evaluate(real=f"{lesions}@train", fake=f"{lesions}@train", out=tmp_path / "ev", echo=QUIET)
    d = res["distribution"]["domain"]
    assert d["fid"] == pytest.approx(0.0, abs=1e-6)
    # The unbiased KID of a set with itself is -(2/(m-1))(mean k(x,x) - mean k(x,y)) <= 0: ~0 on the kernel's scale.
    from medgen.evaluation.domain import load_domain_extractor

    f = load_domain_extractor(res["features"][0]["weights"])(load_image_set(f"{lesions}@train", "fake").images)
    k_diag = float(((np.sum(f * f, axis=1) / f.shape[1] + 1) ** 3).mean())
    assert -2.0 / (len(f) - 1) * k_diag <= d["kid_mean"] <= 0 and abs(d["kid_mean"]) < 0.01 * k_diag
    assert res["fidelity"]["domain"]["precision"] == 1.0 and res["fidelity"]["domain"]["coverage"] == 1.0
    assert res["intensity"]["all"]["ks_statistic"] == pytest.approx(0.0, abs=1e-9)
    # a set against itself: the i == j pairs are zero, the rest are the distinct-real-pairs baseline
    m = res["intensity"]["all"]["mse_all_pairs"]
    assert m["mse"] == pytest.approx(m["real_baseline"] * (m["n_real"] - 1) / m["n_real"]) and m["mse"] > 0
    for space in ("pixels", "features"):
        mem = res["memorisation"][space]
        assert mem["fraction_flagged"] == 1.0 and mem["n_synthetic"] == mem["n_train"] == 96
        assert mem["synthetic_to_train"]["max"] == pytest.approx(0.0, abs=1e-9)
        assert mem["expected_fraction"] < 0.2 and mem["threshold"] > 0
        pair = mem["closest_pairs"][0]
        assert pair["distance"] == 0.0 and pair["flagged"] and pair["train_id"].startswith("brain-lesions-")
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())["evaluation"]
    assert saved["distribution"]["domain"]["settings"]["features"]["name"] == "domain"
    assert (tmp_path / "ev" / "closest_pairs.png").stat().st_size > 0
    assert (tmp_path / "ev" / "histograms.png").stat().st_size > 0


def test_degraded_images_are_clearly_further_than_another_real_split(lesions, tmp_path):
    test_set = load_image_set(f"{lesions}@test", "fake")
    same = evaluate(real=f"{lesions}@val", fake=test_set.images, metrics="distribution,fidelity", out=tmp_path / "a", echo=QUIET)
    bad = evaluate(real=f"{lesions}@val", fake=_blur_and_noise(test_set.images), metrics="distribution,fidelity",
                   out=tmp_path / "b", echo=QUIET)
    s, b = same["distribution"]["domain"], bad["distribution"]["domain"]
    print(f"FID val-vs-test {s['fid']:.3f}, val-vs-degraded-test {b['fid']:.3f}; KID {s['kid_mean']:.3f} vs {b['kid_mean']:.3f}")
    assert b["fid"] > 3 * s["fid"] and b["fid"] - s["fid"] > 1.0
    assert b["kid_mean"] > s["kid_mean"] + 0.1
    assert 0.0 <= bad["fidelity"]["domain"]["precision"] <= 1.0 and bad["fidelity"]["domain"]["k"] == 5
    # the cached domain extractor was reused by the second evaluation
    assert same["features"][0]["weights"] == bad["features"][0]["weights"]
    assert bad["features"][0]["training"]["reused_from_cache"] is True


def test_run_evaluation_writes_metrics_with_settings_and_figures(run, lesions):
    configured, _ = _samplers(run)
    res = evaluate(run, metrics="all", echo=QUIET)
    ev = json.loads((run / "metrics.json").read_text())["evaluation"]
    assert "training" in json.loads((run / "metrics.json").read_text())  # other sections are kept
    assert ev["mode"] == "run" and ev["real"]["split"] == "test" and ev["real"]["n_images"] == 12
    fake = ev["fake"]
    assert (fake["sampler"], fake["steps"], fake["seed"], fake["n_images"]) == (configured, 4, 0, 12)
    settings = ev["distribution"]["domain"]["settings"]
    assert settings["sampler"] == configured and settings["steps"] == 4 and settings["seed"] == 0
    assert settings["n_real"] == 12 and settings["n_fake"] == 12
    assert settings["features"]["name"] == "domain" and settings["features"]["weights"].endswith(".safetensors")
    assert str(lesions) in settings["features"]["weights"]  # cached in the prepared dataset's cache/
    assert "val_accuracy" in settings["features"]["training"]
    assert ev["fidelity"]["domain"]["settings"]["features"]["name"] == "domain"
    assert ev["memorisation"]["pixels"]["settings"]["n_train"] == 96
    assert set(ev["intensity"]["by_class"]) == {"glioma", "meningioma", "none", "pituitary"}
    for k in ("mae", "mse", "psnr", "ssim", "ms_ssim"):
        assert np.isfinite(ev["reconstruction"][k]["mean"])
    assert ev["reconstruction"]["ms_ssim"]["settings"]["scales"] >= 1
    floor = ev["reconstruction"]["feature_distance"]  # the reconstructions' distance to the real images, per extractor
    assert set(floor) == set(ev["distribution"]) and all(np.isfinite(d["fd"]) and d["fd"] >= 0 for d in floor.values())
    assert ev["summary"]["reconstruction/fd/domain"] == floor["domain"]["fd"]
    from medgen.report.html import _meaning

    assert "reconstructions" in _meaning("reconstruction/fd/domain")  # the report says what the number is
    assert ev["summary"]["fid/domain"] == ev["distribution"]["domain"]["fid"]
    for name in ("histograms.png", "closest_pairs.png", "closest_pairs_domain.png"):
        assert (run / "evaluation" / name).stat().st_size > 0
    assert res["output"] == str(run / "metrics.json")
    again = evaluate(run, metrics="distribution", echo=QUIET)  # generated samples come from the cache
    assert again["fake"]["reused_from_cache"] is True
    assert again["distribution"]["domain"]["fid"] == pytest.approx(res["distribution"]["domain"]["fid"], rel=1e-9)


def test_sweep_gives_one_row_per_setting(run):
    configured, other = _samplers(run)
    res = evaluate(run, metrics="distribution", sweep=f"{configured}:2,{other}:3", n=6, echo=QUIET)
    rows = res["sweep"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [(configured, 2), (other, 3)]
    for r in rows:
        assert r["n_fake"] == 6 and r["seconds_per_image"] > 0 and np.isfinite(r["fid/domain"])
        # each setting's FID carries its own bootstrap interval, not the first setting's
        lo, hi = r["intervals"]["fid/domain"]["ci"]
        assert lo <= hi and r["intervals"]["fid/domain"]["n_resamples"] > 0
    assert rows[0]["intervals"]["fid/domain"] != rows[1]["intervals"]["fid/domain"]
    assert [r["nfe"] for r in rows] == [2, 3]  # network evaluations per image: one per step for these samplers
    assert res["sweep_figure"] == str(run / "evaluation" / "sweep.png") and (run / "evaluation" / "sweep.png").stat().st_size > 0
    from medgen.commands.evaluate import _figures

    assert res["sweep_figure"] in list(_figures(res))  # the terminal lists it with the other figures
    from medgen.evaluation.tables import summary_tables

    from rich.console import Console
    console = Console(record=True, width=200)
    for t in summary_tables(res):
        console.print(t)
    shown = console.export_text()
    assert f"[{rows[1]['intervals']['fid/domain']['ci'][0]:.4g}," in shown  # the terminal's sweep table shows it
    assert res["fake"]["steps"] == 2  # the first setting is the primary one
    assert parse_sweep([{"sampler": other, "steps": 1000}]) == [{"sampler": other, "steps": 1000}]
    with pytest.raises(UserError, match="SAMPLER:STEPS"):
        parse_sweep("euler:10")
    with pytest.raises(UserError, match="exceeds"):
        evaluate(run, metrics="distribution", sweep=f"{other}:5000", echo=QUIET)


def test_a_guidance_sweep_samples_each_scale(run):
    configured, _ = _samplers(run)
    res = evaluate(run, metrics="distribution", sweep=f"{configured}:2:1,{configured}:2:3", n=6, echo=QUIET)
    rows = res["sweep"]
    assert [(r["steps"], r["guidance"]) for r in rows] == [(2, 1.0), (2, 3.0)]
    assert rows[0]["fid/domain"] != rows[1]["fid/domain"]  # two different synthetic sets
    assert (run / "evaluation" / f"{configured}-2-g3").is_dir()  # the second set's figures, named by its scale
    from medgen.evaluation.tables import summary_tables

    from rich.console import Console
    console = Console(record=True, width=200)
    for t in summary_tables(res):
        console.print(t)
    assert f"{configured} 2 g3" in console.export_text()
    assert parse_sweep(f"{configured}:50:1.5") == [{"sampler": configured, "steps": 50, "guidance": 1.5}]
    with pytest.raises(UserError, match="GUIDANCE must be a number"):
        parse_sweep(f"{configured}:50:high")
    with pytest.raises(UserError, match="GUIDANCE must be >= 0"):
        parse_sweep(f"{configured}:50:-1")
    # an unconditional model has nothing to guide
    from types import SimpleNamespace

    from medgen.config import validate
    from medgen.evaluation.evaluate import _settings_rows

    cfg = validate(yaml.safe_load((run / "config.yaml").read_text()), "config.yaml")
    side = SimpleNamespace(real=[0] * 4, test_ids=np.zeros(4, int))
    unconditional = SimpleNamespace(num_timesteps=10, conditional=False)
    assert _settings_rows(run, None, unconditional, cfg, side, parse_sweep(f"{configured}:2"), 4, None)[0]["guidance"] == cfg.sample.guidance
    with pytest.raises(UserError, match="a guidance scale needs a class-conditional run"):
        _settings_rows(run, None, unconditional, cfg, side, parse_sweep(f"{configured}:2:3"), 4, None)


def test_utility_table_for_a_conditional_run(run):
    fast = replace(DomainSettings(), epochs=6, patience=3)
    res = evaluate(run, metrics="utility", utility_seeds=2, utility_mix=0.5, utility_settings=fast, echo=QUIET)
    assert "distribution" not in res and res["metrics"] == []  # only the table was asked for
    util = res["utility"]
    assert list(util["rows"]) == list(SCENARIOS)
    assert util["seeds"] == [0, 1] and util["n_test"] == 12 and util["mix_ratio"] == 0.5
    real, syn, mixed = (util["rows"][s] for s in SCENARIOS)
    assert (real["n_train_real"], real["n_train_synthetic"]) == (96, 0)
    assert (syn["n_train_real"], syn["n_train_synthetic"]) == (0, 96)  # ratio 1: as many as the real per class
    assert (mixed["n_train_real"], mixed["n_train_synthetic"]) == (96, 48)
    for row in util["rows"].values():
        assert set(row["mean"]) == set(METRIC_COLUMNS) == set(row["std"])
        assert all(0.0 <= v <= 1.0 for v in row["mean"].values())
        assert len(row["per_seed"]) == 2 and np.array(row["confusion"]).sum() == 2 * 12
        assert row["mean"]["accuracy"] == pytest.approx(row["mean"]["f1_micro"])
        for m, ci in row["intervals"].items():  # over both seeds and the 12 test images
            assert ci["value"] == pytest.approx(row["mean"][m]) and ci["low"] <= ci["value"] <= ci["high"]
            assert (ci["n"], ci["n_seeds"], ci["level"]) == (12, 2, 0.95) and "seeds" in ci["method"]
    cc = util["class_consistency"]
    assert 0.0 <= cc["mean"] <= 1.0 and len(cc["per_seed"]) == 2 and cc["chance"] == 0.25
    assert cc["intervals"]["mean"]["value"] == pytest.approx(cc["mean"]) and cc["intervals"]["mean"]["n"] == 96
    assert np.array(cc["confusion"]).sum() == 2 * 96 and np.array(cc["confusion"]).sum(1).tolist() == [48] * 4
    assert util["synthetic"]["per_class"] == {"glioma": 24, "meningioma": 24, "none": 24, "pituitary": 24}
    for s in SCENARIOS:  # the headline numbers, with the intervals `medgen runs` and the report show
        ci = res["summary_intervals"][f"accuracy/utility-{s}"]
        assert res["summary"][f"accuracy/utility-{s}"] == util["rows"][s]["mean"]["accuracy"]
        assert ci["ci"] == [util["rows"][s]["intervals"]["accuracy"][b] for b in ("low", "high")] and ci["n_seeds"] == 2
    assert (run / "evaluation" / "utility_confusion.png").stat().st_size > 0


def test_class_consistency_names_generated_classes_and_catches_swapped_ones():
    rng = np.random.default_rng(0)

    def images(labels):  # class 0 dark, class 1 bright: any classifier tells them apart
        return (0.25 + 0.5 * labels[:, None, None, None] + 0.05 * rng.standard_normal((len(labels), 1, 16, 16))).astype(np.float32)

    y = np.arange(40) % 2
    fast = replace(DomainSettings(), epochs=8, patience=4)
    kwargs = dict(class_names=["a", "b"], seeds=[0], settings=fast, echo=lambda *a: None)
    right = utility_table((images(y), y), (images(y[:10]), y[:10]), (images(y), y), **kwargs)["class_consistency"]
    swapped = utility_table((images(y), y), (images(y[:10]), y[:10]), (images(y), 1 - y), **kwargs)["class_consistency"]
    assert right["mean"] > 0.95 and swapped["mean"] < 0.05 and right["chance"] == 0.5
    assert np.array(swapped["confusion"]).tolist() == [[0, 20], [20, 0]]  # rows: the class asked for


def _png_folder(root, images, labels=None, odd=None):
    from PIL import Image

    for i, img in enumerate(images):
        sub = root / labels[i] if labels is not None else root
        sub.mkdir(parents=True, exist_ok=True)
        arr = (np.clip(img[0], 0, 1) * 255).astype(np.uint8)
        if odd is not None and i == odd:
            arr = np.asarray(Image.fromarray(arr).resize((40, 40)))
        Image.fromarray(arr).save(sub / f"img{i:03d}.png")
    return root


def test_image_folders_are_scaled_resized_or_refused(lesions, tmp_path):
    test_set = load_image_set(f"{lesions}@test", "real")
    real_dir = _png_folder(tmp_path / "real", test_set.images, list(test_set.labels))
    fake_dir = _png_folder(tmp_path / "fake", test_set.images[::-1], list(test_set.labels[::-1]), odd=3)
    s = load_image_set(fake_dir, "fake", target=(1, 32, 32))
    assert s.images.shape == (12, 1, 32, 32) and s.source["n_resized"] == 1
    assert s.source["intensity_scaling"].startswith("divided by 255") and s.images.max() <= 1.0
    assert sorted(set(s.labels)) == ["glioma", "meningioma", "none", "pituitary"]  # from class folders
    with pytest.raises(UserError, match="img003.png"):
        load_image_set(fake_dir, "fake", target=(1, 32, 32), resize=False)
    res = evaluate(real=real_dir, fake=fake_dir, features="radiomics", metrics="distribution,intensity,memorisation",
                   out=tmp_path / "ev", echo=QUIET)
    assert res["distribution"]["radiomics"]["frd"] == pytest.approx(res["distribution"]["radiomics"]["fid"])
    assert res["distribution"]["radiomics"]["frd"] < 5.0  # the same images, 8-bit rounded and one resized
    assert "skipped" in res["memorisation"]  # folders have no training split to compare with
    assert set(res["intensity"]["by_class"]) == {"glioma", "meningioma", "none", "pituitary"}
    assert (tmp_path / "ev" / "metrics.json").exists()
    # no prepared dataset: the domain extractor learns from the --real images, and says so
    res = evaluate(real=real_dir, fake=fake_dir, metrics="distribution", out=tmp_path / "ev2", echo=QUIET)
    assert res["features"][0]["training"]["trained_on"].startswith("the --real images")
    assert any("--real images themselves" in n for n in res["notes"])
    assert str(tmp_path / "ev2" / "cache") in res["features"][0]["weights"]


def test_run_with_an_exported_sample_folder(run, tmp_path):
    configured, _ = _samplers(run)
    from medgen.sampling import sample

    folder = sample(run, n=4, out=tmp_path / "samples", echo=QUIET)["out"]
    res = evaluate(run, fake=folder, metrics="distribution,intensity", echo=QUIET)
    assert res["fake"]["kind"] == "folder" and res["fake"]["n_images"] == 4
    assert (res["fake"]["sampler"], res["fake"]["steps"]) == (configured, 4)  # read from samples.json
    assert res["fake"]["intensity_scaling"].startswith("divided by 65535")
    assert res["distribution"]["domain"]["settings"]["sampler"] == configured
    with pytest.raises(UserError, match="cannot be combined"):
        evaluate(run, fake=folder, sweep=f"{configured}:2", echo=QUIET)


def test_missing_weights_stop_before_any_work(run):
    with pytest.raises(UserError, match="nowhere/inception.pth"):
        evaluate(run, features="inception:/nowhere/inception.pth", echo=QUIET)
    with pytest.raises(UserError, match="unknown metric group"):
        evaluate(run, metrics="fidelity,vibes", echo=QUIET)
    with pytest.raises(UserError, match="RUN, or both"):
        evaluate(real="x", echo=QUIET)


def test_cli_command_json_and_errors(run, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from medgen.commands.evaluate import evaluate_cmd

    app = typer.Typer()
    app.command()(evaluate_cmd)
    runner = CliRunner()
    r = runner.invoke(app, [str(run), "--metrics", "distribution,intensity", "--n", "6", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["fake"]["n_images"] == 6 and "fid" in out["distribution"]["domain"]
    r = runner.invoke(app, [str(run), "--metrics", "distribution", "--n", "6"])
    assert r.exit_code == 0 and "FID [domain]" in r.stdout and "metrics.json" in r.stdout
    r = runner.invoke(app, [str(run), "--features", "resnet50:/nowhere/r50.pth"])
    assert isinstance(r.exception, UserError) and "/nowhere/r50.pth" in str(r.exception)
    r = runner.invoke(app, ["--real", str(tmp_path)])
    assert isinstance(r.exception, UserError)


def test_an_output_folder_another_evaluation_is_writing_is_refused(tmp_path):
    from medgen.fsio import acquire_lock

    images = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32)
    out = tmp_path / "ev"
    with acquire_lock(tmp_path / ".ev.lock", "evaluation output"):  # what a running `medgen evaluate --out ev` holds
        with pytest.raises(UserError, match="in use by another medgen process"):
            evaluate(real=images, fake=images, metrics="intensity", out=out, echo=QUIET)
    assert not out.exists()
    res = evaluate(real=images, fake=images, metrics="intensity", out=out, echo=QUIET)  # free again
    assert (out / "metrics.json").exists() and "intensity" in res and not (tmp_path / ".ev.lock").exists()


def test_reconstruction_feature_distance_is_zero_for_a_perfect_autoencoder(lesions):
    """The floor the reconstruction group reports: reconstructions equal to the real images are at
    distance 0 in every extractor; blurred, noisy ones are far from them."""
    from types import SimpleNamespace

    from medgen.data.dataset import PreparedDataset
    from medgen.evaluation.groups.base import FeatureCache
    from medgen.evaluation.groups.reconstruction import _feature_distances

    ds = PreparedDataset(lesions)
    real = np.asarray(ds.images[ds.select("test")], dtype=np.float32)
    features = FeatureCache([("texture", None), ("radiomics", None)], domain_factory=None, device="cpu", echo=QUIET)
    ctx = SimpleNamespace(features=features, real=SimpleNamespace(images=real), run=SimpleNamespace(n_resamples=20), echo=QUIET)
    perfect, blurred = _feature_distances(ctx, real.copy()), _feature_distances(ctx, _blur_and_noise(real))
    for name in ("texture", "radiomics"):
        assert perfect[name]["fd"] == pytest.approx(0.0, abs=1e-6)
        ci = blurred[name]["interval"]
        assert blurred[name]["fd"] > 1.0 and 0 < ci["low"] <= ci["high"]
