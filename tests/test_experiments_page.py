"""docs/results.md is built only from the experiment outputs: targets are judged from the numbers,
missing steps are said to be missing, failures are listed (no training here: the outputs are written by hand)."""
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _metrics(out, run, evaluation=None, anomaly=None):
    d = out / "runs" / run
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps({"evaluation": evaluation or {}}))
    if anomaly:
        (d / "detect" / "test").mkdir(parents=True)
        (d / "detect" / "test" / "metrics.json").write_text(json.dumps(anomaly))


def _sweep(fids):
    return {"sweep": [{"sampler": s, "steps": n, "seconds_per_image": 0.1 * n, "fid/domain": f} for (s, n), f in fids.items()],
            "reconstruction": {"mae": {"mean": 0.05}}}


def _util(real, mixed, consistency=None):
    row = lambda a: {"mean": {"accuracy": a, "f1_macro": a, "precision_macro": a, "recall_macro": a},  # noqa: E731
                     "std": {"accuracy": 0.01, "f1_macro": 0.01, "precision_macro": 0.01, "recall_macro": 0.01}}
    util = {"rows": {"real": row(real), "synthetic": row(0.5), "real+synthetic": row(mixed)}}
    if consistency is not None:
        util["class_consistency"] = {"mean": consistency, "std": 0.02, "chance": 0.25}
    return {"utility": util, "intensity": {"all": {"ks_statistic": 0.2}}}


def test_results_page_judges_targets_from_the_outputs(tmp_path):
    page_mod = _module("results_page")
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiments.json").write_text(json.dumps({"profile": "small"}))
    (out / "commands.jsonl").write_text("\n".join(json.dumps(c) for c in [
        {"study": "S000", "name": "a", "command": "medgen train mammo-roi-ldm ...", "seconds": 60, "returncode": 0,
         "commit": "abc1234"},
        {"study": "S002", "name": "b", "command": "medgen train dbt-ddpm-3d ...", "seconds": 30, "returncode": 2,
         "error": ["error: something named"]},
    ]) + "\n")
    # fine-tuned FID 0.8x beta-only at both settings: met
    ft = _sweep({("ddim", 50): 8.0, ("ddpm", 1000): 4.0})
    ft["sweep"][0]["intensity/mse"] = 0.0123
    ft["sweep"][0]["intervals"] = {"intensity/mse": {"ci": [0.011, 0.014]}}
    ft["reconstruction"]["mae"]["interval"] = {"value": 0.05, "low": 0.04, "high": 0.06}
    _metrics(out, "s000-beta-finetuned", {**ft, "real": {"n_images": 6}, "fake": {"n_images": 6},
                                          "intensity": {"all": {"mse_all_pairs": {"real_baseline": 0.0456}, "ks_statistic": 0.2,
                                                                "intervals": {"ks": {"value": 0.2, "low": 0.15, "high": 0.3}}}}})
    _metrics(out, "s000-beta-only", _sweep({("ddim", 50): 10.0, ("ddpm", 1000): 5.0}))
    # the diffusion detector is worse on pixel AUROC: missed
    _metrics(out, "s003-ae", anomaly={"image": {"auroc": 0.85}, "pixel": {"auroc": 0.97}, "pixel_foreground": {"auroc": 0.94}})
    _metrics(out, "s003-ddpm", anomaly={"image": {"auroc": 0.86}, "pixel": {"auroc": 0.93}, "pixel_foreground": {"auroc": 0.86},
                                        "settings": {"t_start": 100, "T": 1000, "reverse_steps": 10, "sampler": "ddim", "draws": 8}})
    _metrics(out, "s003-selfsup", anomaly={"image": {"auroc": 0.981, "auroc_interval": {"value": 0.981, "low": 0.95, "high": 0.995}},
                                           "pixel": {"auroc": 0.99},
                                           "pixel_foreground": {"auroc": 0.985, "dice_best": 0.61,
                                                                "dice_best_interval": {"value": 0.61, "low": 0.52, "high": 0.7}}})
    # one generator's mixed classifier matches real: met
    _metrics(out, "s004-cgan", _util(0.90, 0.85))
    _metrics(out, "s004-cvae", _util(0.90, 0.91, consistency=0.47))
    # a run with intervals shows them instead of ± std (class consistency, accuracy, domain recall)
    wgan = _util(0.90, 0.92, consistency=0.6)
    wgan["utility"]["class_consistency"]["intervals"] = {"mean": {"value": 0.6, "low": 0.52, "high": 0.68}}
    wgan["utility"]["rows"]["real"]["intervals"] = {"accuracy": {"value": 0.9, "low": 0.85, "high": 0.94}}
    wgan.update(summary={"recall/domain": 0.4}, summary_intervals={"recall/domain": {"ci": [0.3, 0.5]}})
    _metrics(out, "s004-cwgan-gp", wgan)

    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    assert page_mod.main(["--out", str(out), "--page", str(page)]) == 0
    text = page.read_text()
    assert "medgen commit the commands ran at: `abc1234`." in text
    assert "fine-tuned beta FID <= 0.85 x beta-only FID (domain features): **met** (2 of 2 settings" in text
    # the study's MSE per setting, beside its real-real baseline; a setting without one is "not run"
    assert "| experiment 1: class 0 -> beta (fine-tuned) | 0.05 [0.04, 0.06] | 0.0123 [0.011, 0.014] | 8 | not run | not run | 4 |" in text
    assert text.split("| experiment 1: class 0 -> beta (fine-tuned) |")[1].split("\n")[0].endswith("| 0.2 [0.15, 0.3] |")
    assert "between distinct real beta test images it is 0.0456" in text
    # 6 test images: the page warns; here one run's settings spread by 5 > the experiments' gap of 2
    assert "compares 6 generated with 6 real beta test images" in text and "differ from each other by up to 5," in text
    assert "beats the autoencoder on pixel AUROC: **missed** (0.930 vs 0.970)" in text
    assert "noised each image to t = 100 of 1000, walked 10 ddim steps back, and compared it with the mean of 8 such reconstructions" in text
    assert "real-only classifier: **met**" in text and "CVAE: 0.910 vs 0.900" in text
    assert "| CVAE | 0.470 ± 0.020 | 0.900 ± 0.010 |" in text and "| cGAN | not run | 0.900 ± 0.010 |" in text
    assert "**Failed:** `medgen train dbt-ddpm-3d ...`: error: something named" in text
    assert "FAILED (exit 2)" in text
    # runs that were never made are "not run", not zeros
    assert "| CVAE-transfer | not run |" in text
    assert "| VAE (`brain-tumor-vae-pretrain` on normals) | not run |" in text
    assert "| self-supervised segmenter (`brain-selfsup-anomaly`) | 0.981 [0.95, 0.995] | not run |" in text
    assert "| 0.985 | not run | 0.61 [0.52, 0.7] |" in text  # brain-pixel AUROC without an interval; best Dice with one
    assert "| conditional WGAN-GP | 0.6 [0.52, 0.68] | 0.9 [0.85, 0.94] | 0.500 ± 0.010 |" in text
    assert text.split("| conditional WGAN-GP |")[1].split("\n")[0].endswith("| not run | 0.4 [0.3, 0.5] |")


def _seg_row(train, n, dice, lo, hi):
    return {"train": train, "n_train": n, "dice": {"value": dice, "low": lo, "high": hi},
            "hd95": {"value": 2.0, "low": 1.5, "high": 2.5}}


def test_results_page_shows_the_mask_row_and_its_k_pair_provenance(tmp_path):
    page_mod = _module("results_page")
    out = tmp_path / "out"
    out.mkdir()
    (out / "commands.jsonl").write_text(json.dumps(
        {"study": "MASKS", "name": "evaluate", "command": "medgen evaluate runs/masks-ddpm --seg-utility", "seconds": 60,
         "returncode": 0}) + "\n")
    su = {"rows": [_seg_row("real", 480, 0.78, 0.70, 0.86), _seg_row("real+synthetic", 840, 0.73, 0.63, 0.83),
                   _seg_row("synthetic", 360, 0.70, 0.60, 0.80), _seg_row("8 real", 8, 0.26, 0.10, 0.40),
                   _seg_row("8 real+synthetic", 368, 0.50, 0.45, 0.55)],
          "n_test": 45, "seeds": 3, "n_synthetic": 360,
          "k_pairs": [{"k": 8, "generator": "/x/runs/masks-ddpm-k8", "generator_saw": [f"id{i}" for i in range(8)],
                       "mask_ids": [f"id{i}" for i in range(8)]}],
          "adherence": {"dice_conditioning": 0.52, "dice_shuffled": 0.08, "n": 45}}
    _metrics(out, "masks-ddpm", {"seg_utility": su})
    page = tmp_path / "r.md"
    page_mod.main(["--out", str(out), "--page", str(page)])
    text = page.read_text()
    assert "| 8 real+synthetic | 368 | 0.500 [0.450, 0.550] | 2.00 [1.50, 2.50] |" in text
    assert "K = 8: synthetic pairs from `masks-ddpm-k8`, which saw 8 real pair(s) (id0, id1" in text
    assert "moves Dice from 0.260 [0.100, 0.400] to 0.500 [0.450, 0.550]: the intervals do not overlap." in text
    assert "at most half that against shuffled masks: **met** (0.520 vs 0.080 shuffled, 45 generated images)" in text
    assert "nothing was trained for S000, S002, S003, S004" in text  # MASKS ran
    _metrics(out, "masks-ddpm", {})
    page_mod.main(["--out", str(out), "--page", str(page)])
    assert "| not run | not run | not run | not run |" in page.read_text() and "**not measured**" in page.read_text()


def test_only_one_study_updates_its_section_and_keeps_the_rest_of_the_page(tmp_path):
    page_mod = _module("results_page")
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiments.json").write_text(json.dumps({"profile": "small"}))
    (out / "commands.jsonl").write_text("\n".join(json.dumps(c) for c in [
        {"study": "S003", "name": "prepare data/brain-lesions-64x64", "command": "medgen data prepare --out data/brain-lesions-64x64",
         "seconds": 6, "returncode": 0, "commit": "aaa1111"},
        {"study": "MASKS", "name": "train masks-ddpm", "command": "medgen train brain-lesion-mask-ddpm --data data/brain-lesions-64x64",
         "seconds": 600, "returncode": 0, "commit": "aaa1111"},
        {"study": "MASKS", "name": "evaluate", "command": "medgen evaluate runs/masks-ddpm --seg-utility", "seconds": 60,
         "returncode": 0, "commit": "bbb2222"},
    ]) + "\n")
    su = {"rows": [_seg_row("real", 480, 0.78, 0.70, 0.86)], "n_test": 45, "seeds": 3, "n_synthetic": 360, "k_pairs": []}
    _metrics(out, "masks-ddpm", {"seg_utility": su})
    page = tmp_path / "r.md"
    old = ["# Reproducing the five studies", "", "Generated on an earlier day.", "", "## S004: generators", "", "| a | b |", "",
           "## DDIM-50 against DDPM-1000 on the same model", "", "sweep table", "", "## The commands", "", "old list"]
    page.write_text("\n".join(old) + "\n")
    page_mod.main(["--out", str(out), "--page", str(page), "--only", "MASKS"])
    text = page.read_text()
    head, rest = text.split("## Mask-conditioned synthesis", 1)
    assert head == "\n".join(old[:8]) + "\n"  # the header and S004 are untouched, the section comes before the sweep
    assert rest.index("| real | 480 | 0.780 [0.700, 0.860] |") < rest.index("## DDIM-50") < rest.index("old list")
    assert "`small` profiles, from commands run at medgen commit `aaa1111`, `bbb2222`" in rest
    assert "medgen data prepare --out data/brain-lesions-64x64    # 6 s" in rest  # the data it used, logged under S003
    # run again with new numbers: the section is replaced, not added twice
    su["rows"] = [_seg_row("real", 480, 0.81, 0.75, 0.87)]
    _metrics(out, "masks-ddpm", {"seg_utility": su})
    page_mod.main(["--out", str(out), "--page", str(page), "--only", "MASKS"])
    again = page.read_text()
    assert again.count("## Mask-conditioned synthesis") == 1 and "0.810 [0.750, 0.870]" in again and "0.780" not in again
    assert again.startswith("\n".join(old[:8]) + "\n") and again.rstrip().endswith("old list")
    import pytest
    with pytest.raises(SystemExit, match="unknown study S9"):
        page_mod.main(["--out", str(out), "--page", str(page), "--only", "S9"])


def test_results_page_refuses_an_empty_output_folder(tmp_path):
    import pytest

    page_mod = _module("results_page")
    with pytest.raises(SystemExit, match="run experiments/run.py first"):
        page_mod.main(["--out", str(tmp_path), "--page", str(tmp_path / "r.md")])


def test_experiment_plan_uses_only_existing_presets_and_the_public_cli():
    from medgen.config import preset_names

    run_mod = _module("run")
    steps = run_mod.plan("small")
    presets = {s.args[1] for s in steps if s.args[0] == "train"}
    assert presets <= set(preset_names()), presets - set(preset_names())
    assert {s.args[0] for s in steps} <= {"data", "train", "evaluate", "detect", "compare", "scarce"}
    assert {s.study for s in steps} == {"S000", "S002", "S003", "S004", "SCARCE", "MASKS"}
    # the fine-tuned run starts from the class-0 run, which comes first
    names = [s.name for s in steps]
    assert names.index("train s000-class0") < names.index("train s000-beta-finetuned")


def test_only_one_study_still_prepares_the_data_it_uses():
    run_mod = _module("run")
    chosen = run_mod.select(run_mod.plan("small"), {"S004"})
    # its own steps plus the brain-lesions preparation, which is listed under S003
    assert [s.name for s in chosen if s.args[0] == "data"] == ["prepare data/brain-lesions-64x64"]
    assert {s.study for s in chosen if s.args[0] != "data"} == {"S004"}
    assert len(run_mod.select(run_mod.plan("small"), set())) == len(run_mod.plan("small"))


def test_a_step_run_again_counts_by_its_last_attempt(tmp_path):
    page_mod = _module("results_page")
    (tmp_path / "commands.jsonl").write_text("\n".join(json.dumps(c) for c in [
        {"study": "S004", "name": "train x", "command": "medgen train x", "seconds": 1, "returncode": 2, "error": ["boom"]},
        {"study": "S004", "name": "train x", "command": "medgen train x", "seconds": 9, "returncode": 0},
    ]) + "\n")
    p = page_mod.Page(tmp_path, tmp_path / "r.md")
    assert [c["returncode"] for c in p.commands] == [0] and p.failures("S004") == []


def test_an_incomplete_run_says_so_at_the_top(tmp_path):
    page_mod = _module("results_page")
    (tmp_path / "commands.jsonl").write_text(json.dumps(
        {"study": "S003", "name": "train s003-ae", "command": "medgen train ...", "seconds": 1, "returncode": 0}) + "\n")
    page_mod.main(["--out", str(tmp_path), "--page", str(tmp_path / "r.md")])
    assert "**This run is incomplete:** nothing was trained for S000, S002, S004" in (tmp_path / "r.md").read_text()


def test_each_command_record_names_the_commit_it_ran_at(tmp_path):
    import subprocess

    run_mod = _module("run")
    step = run_mod.Step("S000", "help", ["runs", "--help"], "never")
    rec = run_mod.run_step(step, tmp_path, tmp_path / "commands.jsonl", echo=lambda *a: None)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    expected = git.stdout.strip() if git.returncode == 0 else None  # a copy without .git has no commit to name
    assert rec["returncode"] == 0 and rec["commit"] == expected
    assert json.loads((tmp_path / "commands.jsonl").read_text())["commit"] == expected


def _ci(v, lo, hi):
    return {"value": v, "low": lo, "high": hi}


def test_results_page_shows_the_scarce_class_table_and_its_verdicts(tmp_path):
    page_mod = _module("results_page")
    out = tmp_path / "out"
    (out / "runs" / "scarce-vaegan-k20" / "scarce").mkdir(parents=True)
    (out / "commands.jsonl").write_text(json.dumps(
        {"study": "SCARCE", "name": "scarce scarce-vaegan-k20", "command": "medgen scarce runs/scarce-vaegan-k20", "seconds": 90,
         "returncode": 0}) + "\n")
    row = lambda b: {m: _ci(b, b - 0.05, b + 0.05) for m in ("class_recall", "class_f1", "balanced_accuracy")}  # noqa: E731
    res = {"rows": {"cut": row(0.40), "cut+classical": row(0.55), "cut+synthetic": row(0.70), "cut+both": row(0.60)},
           "seeds": [0, 1, 2, 3, 4], "n_test": 681, "n_test_class": 239,
           "generator_saw": {"ids_of_class": [f"c{i}" for i in range(20)]},
           "verdicts": {"balanced_accuracy": {
               "cut+synthetic vs cut+classical": {"verdict": "cut+synthetic better", "difference": 0.15, "low": 0.08, "high": 0.22},
               "cut+both vs cut+classical": {"verdict": "no difference detectable at this n", "difference": 0.05,
                                             "low": -0.02, "high": 0.12}}}}
    (out / "runs" / "scarce-vaegan-k20" / "scarce" / "calcification-K20.json").write_text(json.dumps(res))
    page = tmp_path / "r.md"
    page_mod.main(["--out", str(out), "--page", str(page)])
    text = page.read_text()
    assert "| `vae-gan` | 20 | cut+synthetic | 0.700 [0.650, 0.750] | 0.700 [0.650, 0.750] | 0.700 [0.650, 0.750] |" in text
    assert "| `mammo-roi-ldm` | 50 | not run | not run | not run | not run |" in text
    assert ("`vae-gan`, K = 20 (5 seeds, 239 of 681 test images of the class; the generator saw 20 image(s) of the class, "
            "all among the K): balanced accuracy, cut+synthetic vs cut+classical: cut+synthetic better (difference +0.150 "
            "[+0.080, +0.220]); cut+both vs cut+classical: no difference detectable at this n") in text
    assert "nothing was trained for S000, S002, S003, S004, MASKS" in text  # SCARCE ran


def test_targets_with_intervals_are_met_missed_or_not_distinguishable(tmp_path):
    """With intervals, a target is met or missed only when they do not overlap; S000's is `compare`'s paired verdict."""
    page_mod = _module("results_page")
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiments.json").write_text(json.dumps({"profile": "small"}))
    (out / "commands.jsonl").write_text(json.dumps({"study": "S000", "name": "a", "command": "medgen train ...", "seconds": 60,
                                                    "returncode": 0, "commit": "abc1234"}) + "\n")
    ci = lambda v, lo, hi: {"value": v, "low": lo, "high": hi}  # noqa: E731
    # S000: the ratio holds at both settings, but the paired comparison cannot tell the runs apart
    _metrics(out, "s000-beta-finetuned", _sweep({("ddim", 50): 8.0, ("ddpm", 1000): 4.0}))
    _metrics(out, "s000-beta-only", _sweep({("ddim", 50): 10.0, ("ddpm", 1000): 5.0}))
    fid = {"higher_is_better": False, "per_run": {"runs/s000-beta-finetuned": ci(8.0, 6.0, 10.5), "runs/s000-beta-only": ci(10.0, 7.5, 12.0)},
           "comparisons": [{"a": "runs/s000-beta-finetuned", "b": "runs/s000-beta-only", "verdict": "no difference detectable at this n",
                            "difference": -2.0, "low": -4.5, "high": 0.4, "smallest_detectable_difference": 3.1}]}
    (out / "runs" / "s000-compare.done").write_text(json.dumps({
        "runs": ["runs/s000-beta-finetuned", "runs/s000-beta-only"], "extractor": "domain", "n_real": 102, "n_generated": 102,
        "n_resamples": 1000, "metrics": {"fid": fid}}))
    # S003: the diffusion detector's brain-pixel AUROC interval lies above the autoencoder's
    _metrics(out, "s003-ae", anomaly={"image": {"auroc": 0.8}, "pixel": {"auroc": 0.97},
                                      "pixel_foreground": {"auroc": 0.90, "auroc_interval": ci(0.90, 0.88, 0.92)}})
    _metrics(out, "s003-ddpm", anomaly={"image": {"auroc": 0.9}, "pixel": {"auroc": 0.96},
                                        "pixel_foreground": {"auroc": 0.95, "auroc_interval": ci(0.95, 0.93, 0.97)}})
    # S004: mixed above real on the point estimates, but the intervals overlap
    util = _util(0.90, 0.92)
    for sc, (lo, hi) in (("real", (0.86, 0.94)), ("mixed", (0.88, 0.95))):
        util["utility"]["rows"][sc.replace("mixed", "real+synthetic")]["intervals"] = {"accuracy": ci(0, lo, hi)}
    _metrics(out, "s004-cgan", util)
    page = tmp_path / "results.md"
    assert page_mod.main(["--out", str(out), "--page", str(page)]) == 0
    text = page.read_text()
    assert "| fid | 8 [6, 10.5] | 10 [7.5, 12] | -2 [-4.5, 0.4] | 3.1 | no difference detectable at this n |" in text
    assert ("fine-tuned beta FID <= 0.85 x beta-only FID (domain features): **not distinguishable at this n** "
            "(`compare`: no difference detectable at this n, FID A - B = -2 [-4.5, 0.4], where the target needs "
            "A - B <= -1.5, i.e. 0.15 x B's 10; 2 of 2 settings") in text
    # the same comparison with a narrower interval: met when it lies below -1.5, missed when above
    for (lo, hi), word in (((-3.5, -1.6), "met"), ((-1.4, -0.2), "missed")):
        fid["comparisons"][0].update(low=lo, high=hi, verdict="A better")
        (out / "runs" / "s000-compare.done").write_text(json.dumps({
            "runs": ["runs/s000-beta-finetuned", "runs/s000-beta-only"], "extractor": "domain", "n_real": 102, "n_generated": 102,
            "n_resamples": 1000, "metrics": {"fid": fid}}))
        page_mod.main(["--out", str(out), "--page", str(page)])
        assert f"0.85 x beta-only FID (domain features): **{word}** (`compare`: A better, FID A - B = -2 [{lo:g}, {hi:g}]" in page.read_text()
    assert "beats the autoencoder on pixel AUROC: **met** (brain pixels: 0.95 [0.93, 0.97] vs 0.9 [0.88, 0.92]; all pixels: 0.96 vs 0.97" in text
    assert "the real-only classifier: **not distinguishable at this n** (accuracy, cGAN: 0.920 vs 0.900" in text


def test_only_renders_a_shared_section_again_when_the_output_folder_holds_its_runs(tmp_path):
    page_mod = _module("results_page")
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiments.json").write_text(json.dumps({"profile": "small"}))
    (out / "commands.jsonl").write_text(json.dumps({"study": "S000", "name": "evaluate", "command": "medgen evaluate runs/s000-beta-finetuned",
                                                    "seconds": 60, "returncode": 0, "commit": "ccc3333"}) + "\n")
    sweep = _sweep({("ddim", 50): 8.0, ("ddpm", 1000): 4.0})
    sweep["sweep"][1]["intervals"] = {"fid/domain": {"value": 4.0, "low": 3.1, "high": 5.2}}
    _metrics(out, "s000-beta-finetuned", sweep)
    page = tmp_path / "r.md"
    old = ["# Reproducing", "", "## DDIM-50 against DDPM-1000 on the same model", "", "old sweep table", "",
           "## Memorisation", "", "old memorisation table", "", "## The commands", "", "old list"]
    page.write_text("\n".join(old) + "\n")
    page_mod.main(["--out", str(out), "--page", str(page), "--only", "S000"])
    text = page.read_text()
    # the sampler table reads only S000's fine-tuned run: rendered again, in its place
    assert "old sweep table" not in text and "| ddpm 1000 | 100 | 4 [3.1, 5.2] |" in text
    assert text.index("## DDIM-50") < text.index("## Memorisation") < text.index("## The commands")
    # memorisation reads S002's and S004's runs too, which this folder lacks: kept as it was
    assert "old memorisation table" in text and text.count("## Memorisation") == 1
    # with one run of every study it reads, it is rendered again; the runs the folder lacks say so
    _metrics(out, "s002-mse", {"memorisation": {"pixels": {"fraction_flagged": 0.02, "fraction_flagged_ci": {"value": 0.02, "low": 0.01, "high": 0.05},
                                                           "expected_fraction": 0.05, "binomial_pvalue": 0.9}}})
    _metrics(out, "s004-cgan", {})
    page_mod.main(["--out", str(out), "--page", str(page), "--only", "S000"])
    text = page.read_text()
    assert "old memorisation table" not in text and text.count("## Memorisation") == 1
    assert "| S002 MSE | 0.02 [0.01, 0.05] |" in text and "| S002 L1 | not run |" in text


def test_a_step_another_runner_holds_is_left_to_it_and_its_dependants_wait(tmp_path, monkeypatch, capsys):
    import threading
    import time

    run_mod = _module("run")
    held = run_mod.Step("S000", "train a", ["train", "p", "--out", "runs/a"], "runs/a/done")
    steps = [held, run_mod.Step("S000", "evaluate a", ["evaluate", "runs/a"], "runs/a/evaluation.done"),
             run_mod.Step("S000", "train b", ["train", "p", "--out", "runs/b"], "runs/b/done")]
    monkeypatch.setattr(run_mod, "plan", lambda profile: steps)
    monkeypatch.setattr(run_mod, "POLL_SECONDS", 0.05)
    ran = []
    monkeypatch.setattr(run_mod, "run_step", lambda step, *a, **k: ran.append(step.name) or {"returncode": 0})
    handle = run_mod.try_lock(tmp_path, held)  # another runner is busy with train a
    assert handle is not None and run_mod.try_lock(tmp_path, held) is None
    t = threading.Thread(target=run_mod.main, args=(["--out", str(tmp_path), "--only", "S000"],))
    t.start()
    time.sleep(0.5)
    assert t.is_alive() and ran == ["train b"]  # the independent step ran; train a and its evaluation wait
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "done").write_text("")  # the other runner finishes it
    handle.close()
    t.join(10)
    assert not t.is_alive() and ran == ["train b", "evaluate a"]  # train a was never run twice
    said = capsys.readouterr().out
    assert "another runner is running it; waiting for it" in said and "train a: done before, kept" in said


def test_a_step_waits_for_the_steps_whose_outputs_it_reads_and_no_other():
    run_mod = _module("run")
    steps = {s.name: s for s in run_mod.plan("small")}
    needs = lambda a, b: run_mod.needs(steps[a], steps[b])  # noqa: E731
    assert needs("train s004-cgan", "prepare data/brain-lesions-64x64")
    assert needs("evaluate s004-cgan evaluation", "train s004-cgan")
    assert needs("train s004-cvae-transfer", "train s004-vae-pretrain")  # --init-from
    assert not needs("train s004-cvae-transfer", "train s004-cvae")  # a name that starts alike is another run
    assert not needs("evaluate s004-cvae evaluation", "train s004-cvae-transfer")
    assert not needs("train s004-ldm", "train s004-cgan")
    assert needs("train scarce-ldm-k20", "pick K=20")  # --subset id=@kept-k20.txt
    assert needs("compare fine-tuned vs beta-only", "evaluate s000-beta-only evaluation")


def test_jobs_run_independent_steps_together_and_dependants_after_their_inputs(tmp_path, monkeypatch):
    import threading
    import time

    run_mod = _module("run")
    steps = [run_mod.Step("X", "train a", ["train", "p", "--out", "runs/a"], "runs/a/state.json"),
             run_mod.Step("X", "train b", ["train", "p", "--out", "runs/b"], "runs/b/state.json"),
             run_mod.Step("X", "evaluate a", ["evaluate", "runs/a"], "runs/a/evaluation.done"),
             run_mod.Step("X", "train c", ["train", "p", "--init-from", "runs/b", "--out", "runs/c"], "runs/c/state.json")]
    monkeypatch.setattr(run_mod, "plan", lambda profile: steps)
    events, lock = [], threading.Lock()

    def fake_run_step(step, out, log, echo=print, jobs=1):
        with lock:
            events.append(("start", step.name, jobs))
        time.sleep(0.3)
        (out / step.done).parent.mkdir(parents=True, exist_ok=True)
        (out / step.done).write_text("")
        with lock:
            events.append(("end", step.name, jobs))
        return {"returncode": 2 if step.name == "train b" else 0}

    monkeypatch.setattr(run_mod, "run_step", fake_run_step)
    assert run_mod.main(["--out", str(tmp_path), "--jobs", "2"]) == 1  # train b failed
    order = [(kind, name) for kind, name, _ in events]
    # a and b start together; each dependant starts only after the step it reads has ended
    assert set(order[:2]) == {("start", "train a"), ("start", "train b")}
    assert order.index(("start", "evaluate a")) > order.index(("end", "train a"))
    assert order.index(("start", "train c")) > order.index(("end", "train b"))  # run although b failed
    assert {j for _, _, j in events} == {2}  # each step knows it runs beside another
    # run again: every step is done, none runs
    events.clear()
    assert run_mod.main(["--out", str(tmp_path), "--jobs", "2"]) == 0 and events == []


def test_jobs_give_each_command_its_share_of_threads_unless_the_user_set_them(tmp_path, monkeypatch):
    import subprocess

    run_mod = _module("run")
    seen = []
    monkeypatch.setattr(run_mod, "source_commit", lambda: None)
    monkeypatch.setattr(run_mod.subprocess, "run", lambda cmd, **kw: seen.append(kw["env"].get("OMP_NUM_THREADS")) or subprocess.CompletedProcess(cmd, 0, "", ""))
    monkeypatch.setattr(run_mod.os, "cpu_count", lambda: 6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    step = run_mod.Step("S000", "x", ["runs", "--help"], "never")
    run = lambda jobs: run_mod.run_step(step, tmp_path, tmp_path / "log.jsonl", echo=lambda *a: None, jobs=jobs)  # noqa: E731
    run(2)
    run(1)  # one step at a time: torch's own default
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    run(2)
    assert seen == ["3", None, "7"]


def test_steps_run_side_by_side_show_their_wall_time_too(tmp_path):
    page_mod = _module("results_page")
    recs = [{"study": "S004", "name": f"train {n}", "command": f"medgen train {n}", "seconds": 600.0, "returncode": 0,
             "started": 1000.0 + i * 300, "jobs": 2} for i, n in enumerate("ab")]
    (tmp_path / "commands.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    p = page_mod.Page(tmp_path, tmp_path / "r.md")
    p.study_footer("S004")
    said = "\n".join(p.lines)
    assert "*S004: 20.0 min of commands, 15.0 min of wall time (2 steps at a time, `experiments/run.py --jobs 2`).*" in said
