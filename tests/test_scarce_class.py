"""Scarce-class benchmark: cut to K, classical / synthetic / both top-ups, intervals, verdicts, leak checks."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from medgen.errors import UserError
from medgen.scarce.augment import classical_augment
from medgen.scarce.benchmark import SCENARIOS, choose_kept, generator_exposure, scarce_class_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n, label, rng):
    """16x16 blobs whose class is where the bright square sits (learnable in a few epochs)."""
    x = rng.normal(0.3, 0.05, size=(n, 1, 16, 16)).astype(np.float32)
    r, c = [(2, 2), (2, 9), (9, 5)][label]
    x[:, :, r:r + 5, c:c + 5] += 0.5
    return np.clip(x, 0, 1)


def test_classical_augment_is_seeded_and_changes_the_images():
    x = _images(4, 0, np.random.default_rng(0))
    a, b = classical_augment(x, 12, seed=3), classical_augment(x, 12, seed=3)
    assert a.shape == (12, 1, 16, 16) and np.array_equal(a, b)
    assert not np.array_equal(a, classical_augment(x, 12, seed=4))
    assert np.abs(a[:4] - x).mean() > 0.01 and a.min() >= 0 and a.max() <= 1


def test_choose_kept_keeps_what_the_generator_saw_and_refuses_more_than_k():
    ids = [f"i{n}" for n in range(10)]
    kept, held = choose_kept(ids, 4, seen=["i7", "i2", "other"], seed=0)
    assert {"i7", "i2"} <= set(kept) and len(kept) == 4 and set(kept).isdisjoint(held) and len(held) == 6
    assert choose_kept(ids, 4, seen=[], seed=1) == choose_kept(ids, 4, seen=[], seed=1)
    with pytest.raises(UserError, match="saw 3 training images of the class, more than K=2"):
        choose_kept(ids, 2, seen=["i1", "i2", "i3"])


def test_table_has_four_rows_intervals_verdicts_and_names_what_the_generator_saw():
    rng = np.random.default_rng(0)
    counts, test_counts = (30, 30, 20), (15, 15, 15)
    x = np.concatenate([_images(n, c, rng) for c, n in enumerate(counts)])
    y = np.repeat(np.arange(3), counts)
    ids = [f"t{i}" for i in range(len(y))]
    xt = np.concatenate([_images(n, c, rng) for c, n in enumerate(test_counts)])
    yt = np.repeat(np.arange(3), test_counts)
    synthetic = _images(20, 2, rng)
    seen = [ids[i] for i in np.flatnonzero(y == 2)[:3]]
    from medgen.evaluation.classifier import DomainSettings

    settings = replace(DomainSettings(), epochs=2, patience=2, batch_size=16)
    out = scarce_class_table((x, y, ids), (xt, yt), synthetic, 2, ["a", "b", "c"], k=4, seen_ids=seen,
                             test_ids=[f"s{i}" for i in range(len(yt))], seeds=(0, 1), n_resamples=100,
                             settings=settings, echo=lambda *a: None)
    assert list(out["rows"]) == list(SCENARIOS)
    for row in out["rows"].values():
        for m in ("class_recall", "class_f1", "balanced_accuracy"):
            assert row[m]["low"] <= row[m]["value"] <= row[m]["high"] and row[m]["n"] == [45, 2]
    assert out["rows"]["cut"]["n_class_added"] == 0 and out["rows"]["cut+both"]["n_class_added"] == 16
    assert set(out["generator_saw"]["ids_of_class"]) == set(seen) and set(seen) <= set(out["kept_ids"])
    assert set(out["held_back_ids"]).isdisjoint(seen) and len(out["held_back_ids"]) == 16
    assert set(out["verdicts"]["class_f1"]) == {"cut+synthetic vs cut+classical", "cut+both vs cut+classical"}
    json.dumps(out)
    with pytest.raises(UserError, match="held-back or test images"):
        scarce_class_table((x, y, ids), (xt, yt), synthetic, 2, ["a", "b", "c"], k=4, seen_ids=["s0"],
                           test_ids=["s0"], seeds=(0, 1), settings=settings, echo=lambda *a: None)


def test_generator_exposure_follows_init_from(phantom, tmp_path):
    from medgen.data.dataset import PreparedDataset

    ds = PreparedDataset(phantom)
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    for run, subset, init in ((base, {"cohort": "class0"}, None), (tuned, {"cohort": "beta"}, {"from": str(base / "checkpoints" / "final")})):
        run.mkdir()
        (run / "config.yaml").write_text("{}\n")
        (run / "data.json").write_text(json.dumps({"dataset": str(phantom), "subset": subset, "train_split": "train",
                                                   "val_split": "val", "init_from": init}))
    got = generator_exposure(tuned)
    want = set()
    for cohort in ("class0", "beta"):
        for split in ("train", "val"):
            rows = ds.select(split, {"cohort": cohort})
            want |= set(ds.index["id"].to_numpy()[rows]) if "id" in ds.index.columns else set(map(str, rows))
    assert set(got["ids"]) == want and len(got["runs"]) == 2
    assert not set(got["ids"]) & set(ds.index["id"].to_numpy()[ds.select("test")])
    (tuned / "data.json").write_text(json.dumps({"dataset": str(phantom), "subset": {}, "init_from": {"from": str(tmp_path / "elsewhere")}}))
    with pytest.raises(UserError, match="not a medgen run"):
        generator_exposure(tuned)


def test_pick_ids_and_subset_from_a_file(phantom, tmp_path, capsys):
    from medgen.cli import main
    from medgen.data.dataset import PreparedDataset
    from medgen.training import parse_subset

    out = tmp_path / "kept.txt"
    with pytest.raises(SystemExit) as err:
        main(["data", "pick", str(phantom), "--where", "label=calcification", "--n", "3", "--out", str(out)])
    assert err.value.code == 0
    ids = out.read_text().split()
    ds = PreparedDataset(phantom)
    rows = ds.select("train", {"id": "|".join(ids)})
    assert len(ids) == 3 and len(rows) == 3 and set(ds.index["label"].to_numpy()[rows]) == {"calcification"}
    assert parse_subset([f"id=@{out}"]) == {"id": "|".join(ids)}
    with pytest.raises(SystemExit) as err:  # an existing file is not replaced without --force
        main(["data", "pick", str(phantom), "--where", "label=calcification", "--n", "3", "--out", str(out)])
    assert err.value.code == 2 and "--force" in capsys.readouterr().err
    with pytest.raises(UserError, match="cannot read"):
        parse_subset([f"id=@{tmp_path / 'missing.txt'}"])


def test_a_generator_that_saw_every_image_of_the_class_is_refused(ldm_run, capsys):
    from medgen.cli import main

    with pytest.raises(SystemExit) as err:
        main(["scarce", str(ldm_run), "--class", "calcification", "--k", "2", "--resamples", "10"])
    assert err.value.code == 2
    assert "more than K=2" in capsys.readouterr().err
    assert not (ldm_run / "scarce").exists()
