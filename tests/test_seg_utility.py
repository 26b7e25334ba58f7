"""The segmentation utility as a metric group of ``medgen evaluate``, and the honesty of its K-pair rows:
a generator that saw more real pairs than K, pairs outside the training split, or any test pair is
refused, and the K rows record which pairs their generator saw."""
import json
import shutil

import numpy as np
import pytest

from medgen.errors import UserError
from medgen.evaluation.seg_utility import SegSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = SegSettings(steps=3, batch_size=4, channels=(4, 8))
QUIET = lambda *a, **k: None  # noqa: E731


@pytest.fixture(scope="module")
def k_ids(mask_lesions):
    """Two lesion-bearing training items: the K=2 pairs a scarce generator may see."""
    from medgen.data.dataset import PreparedDataset
    from medgen.evaluation.seg_provenance import item_ids

    ds = PreparedDataset(mask_lesions)
    rows = ds.select("train")
    lesion = rows[np.asarray(ds.masks[rows]).reshape(len(rows), -1).max(1) > 0]
    return sorted(item_ids(ds, lesion[:2]))


@pytest.fixture(scope="module")
def k_run(mask_lesions, k_ids, tmp_path_factory):
    from medgen.training import train

    out = tmp_path_factory.mktemp("runs") / "mask-k2"
    train("brain-lesion-mask-ddpm", mask_lesions, out, profile="tiny", subset=["id=" + "|".join(k_ids)], echo=QUIET)
    return out


@pytest.fixture(scope="module")
def pairs(mask_run, tmp_path_factory):
    from medgen.mask_sampling import sample_pairs

    out = tmp_path_factory.mktemp("pairs") / "train-masks"
    sample_pairs(mask_run, "dataset:train", n=6, steps=2, out=out, echo=QUIET)
    return out


def test_seg_utility_is_a_registered_group_asked_for_by_name():
    from medgen.evaluation.groups import get_group, parse_groups

    assert get_group("seg_utility").scope == "run" and "masks" in get_group("seg_utility").needs
    assert "seg_utility" not in parse_groups("all", ())  # it trains networks: asked for by name or --seg-utility
    assert parse_groups("seg_utility,fidelity", ()) == ["fidelity", "seg_utility"]


def test_k_pairs_hold_everything_the_generator_saw_and_a_bigger_exposure_is_refused():
    from medgen.evaluation.seg_provenance import choose_k_pairs

    train_ids = [f"t{i}" for i in range(10)]
    lesion = np.arange(10)
    small, big = {"run": "small", "ids": ["t3", "t7"]}, {"run": "big", "ids": train_ids[:6]}
    gen, rows = choose_k_pairs(4, train_ids, lesion, [big, small])
    assert gen is small and len(rows) == 4 and {3, 7} <= set(rows.tolist())
    assert np.array_equal(rows, choose_k_pairs(4, train_ids, lesion, [big, small])[1])  # the draw is seeded
    gen, rows = choose_k_pairs(6, train_ids, lesion, [big, small])
    assert gen is big and rows.tolist() == [0, 1, 2, 3, 4, 5]  # the generator that saw the most within K
    with pytest.raises(UserError, match="saw 2 real pairs, more than K=1.*--k-run"):
        choose_k_pairs(1, train_ids, lesion, [big, small])
    with pytest.raises(UserError, match="outside the real training pairs"):
        choose_k_pairs(4, train_ids, lesion, [{"run": "val", "ids": ["v1"]}])


def test_evaluate_runs_the_group_and_shows_its_intervals(mask_run, pairs):
    from medgen.evaluation.evaluate import evaluate, summary_tables
    from medgen.report.html import key_table

    res = evaluate(run=mask_run, metrics="seg_utility", seg_utility={"pairs": pairs, "seeds": 2, "settings": FAST}, echo=QUIET)
    sec = res["seg_utility"]
    assert [r["train"] for r in sec["rows"]] == ["real", "real+synthetic", "synthetic"] and "fake" not in res
    ci = res["summary_intervals"]["seg_utility/dice/synthetic"]
    assert ci["method"] == "t over seeds" and ci["n"] == 2 and ci["ci"][0] <= res["summary"]["seg_utility/dice/synthetic"] <= ci["ci"][1]
    assert "seg_utility/adherence/dice_shuffled" in res["summary"]
    for k in ("dice_conditioning", "dice_shuffled"):  # over the generated images
        ci = res["summary_intervals"][f"seg_utility/adherence/{k}"]
        assert ci["n"] == sec["adherence"]["n"] and ci["ci"][0] <= res["summary"][f"seg_utility/adherence/{k}"] <= ci["ci"][1]
    on_disk = json.loads((mask_run / "metrics.json").read_text())["evaluation"]["seg_utility"]
    assert on_disk["rows"][0]["dice"] == sec["rows"][0]["dice"] and on_disk["synthetic"]["generator"] == str(mask_run)
    page = key_table("evaluation", res)
    assert "Segmentation utility" in page and "seg_utility/dice/real+synthetic" in page and "t over seeds" in page
    assert any("segmentation utility" in str(t.title) for t in summary_tables(res))


def test_cli_seg_utility_flag_and_a_dishonest_k_refused_before_generating(mask_run, pairs, monkeypatch):
    import typer
    from typer.testing import CliRunner

    import medgen.evaluation.seg_utility as seg
    from medgen.commands.evaluate import evaluate_cmd

    monkeypatch.setattr(seg, "SegSettings", lambda: FAST)
    app = typer.Typer()
    app.command()(evaluate_cmd)
    runner = CliRunner()
    r = runner.invoke(app, [str(mask_run), "--seg-utility", "--pairs", str(pairs), "--utility-seeds", "2"])
    assert r.exit_code == 0, r.output
    assert "segmentation utility" in r.stdout and (mask_run / "evaluation/seg_utility.json").exists()
    r = runner.invoke(app, [str(mask_run), "--seg-utility", "--pairs", str(pairs), "--k-real", "2"])
    assert isinstance(r.exception, UserError) and "more than K=2" in str(r.exception)
    assert not (mask_run / "evaluation/seg-pairs-k2").exists()
    r = runner.invoke(app, [str(mask_run), "--k-real", "2"])
    assert isinstance(r.exception, UserError) and "options of --seg-utility" in str(r.exception)


def test_k_rows_come_from_a_generator_trained_on_the_k_pairs(mask_run, k_run, k_ids, pairs):
    from medgen.evaluation.seg_utility import run_seg_utility, table_lines

    res = run_seg_utility(mask_run, pairs, seeds=2, k_real=(3,), k_runs=[k_run], settings=FAST, steps=2, echo=QUIET)
    names = [r["train"] for r in res["rows"]]
    assert names == ["real", "real+synthetic", "synthetic", "2 real", "2 real+synthetic", "3 real", "3 real+synthetic"]
    k2, k3 = res["k_pairs"]
    assert k2["k"] == 2 and k2["generator"] == str(k_run) and k2["generator_saw"] == k_ids and k2["pair_ids"] == k_ids
    assert k2["mask_ids"] == k_ids and k2["n_synthetic"] == res["n_synthetic"]
    # K=3: the full-data run saw too many pairs, so the K=2 generator serves, its 2 pairs among the 3
    assert k3["generator"] == str(k_run) and set(k_ids) < set(k3["pair_ids"]) and len(k3["pair_ids"]) == 3
    for kp in (k2, k3):  # the synthetic pairs are conditioned on masks of the K pairs only
        made = json.loads(open(f"{kp['pairs']}/samples.json").read())
        assert {f["mask_from"] for f in made["files"]} <= set(kp["pair_ids"]) and made["run"] == str(k_run)
    assert json.loads(open(res["output"]).read())["k_pairs"][0]["generator_saw"] == k_ids
    assert any(line.startswith("\nK=2: synthetic pairs from") for line in table_lines(res))


def test_test_pairs_never_reach_the_synthetic_side(mask_run, k_run, tmp_path):
    from medgen.evaluation.seg_utility import run_seg_utility
    from medgen.mask_sampling import sample_pairs

    sample_pairs(mask_run, "dataset:test", n=2, steps=2, out=tmp_path / "test-masks", echo=QUIET)
    with pytest.raises(UserError, match="conditioned on the masks of .* real test pair"):
        run_seg_utility(mask_run, tmp_path / "test-masks", seeds=2, settings=FAST, echo=QUIET)
    leaky = tmp_path / "leaky"
    shutil.copytree(k_run, leaky)
    data = json.loads((leaky / "data.json").read_text())
    (leaky / "data.json").write_text(json.dumps({**data, "val_split": "test", "subset": {}}))
    with pytest.raises(UserError, match="the generator saw .* real test pair"):
        run_seg_utility(mask_run, None, seeds=2, k_runs=[leaky], settings=FAST, echo=QUIET)


def test_only_a_dataset_mask_source_takes_item_ids(mask_lesions, k_ids):
    from medgen.masks import load_masks

    kept = load_masks("dataset:train", (32, 32), 1, dataset=mask_lesions, ids=k_ids)
    assert sorted(kept.names) == k_ids and len(kept) == 2
    with pytest.raises(UserError, match="only a dataset source can be restricted"):
        load_masks("random:glioma", (32, 32), 1, ids=k_ids)
