"""train.min_steps: a budget in optimiser steps that holds whatever the number of training images."""
import json

from medgen.training import train

TINY = ["model.spatial_dims=2", "train.batch_size=8", "train.max_steps=null", "train.val_every=1", "train.log_every=1",
        "train.checkpoint_budget=null"]


def _epochs_and_last_step(run):
    lines = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    ends = [r for r in lines if r.get("event") == "epoch"]
    return len(ends), max(r["step"] for r in lines if "step" in r)


def test_min_steps_adds_epochs_where_the_data_are_few_and_changes_nothing_where_they_are_not(phantom, tmp_path):
    base = TINY + ["train.epochs=2"]
    train("dbt-ddpm-3d", phantom, tmp_path / "plain", profile="tiny", echo=lambda *a: None, overrides=base)
    epochs, steps = _epochs_and_last_step(tmp_path / "plain")
    per_epoch = steps // 2  # the phantom's training images in batches of 8
    assert epochs == 2 and per_epoch >= 4
    train("dbt-ddpm-3d", phantom, tmp_path / "floor", profile="tiny", echo=lambda *a: None,
          overrides=base + [f"train.min_steps={2 * per_epoch + 2}"])
    assert _epochs_and_last_step(tmp_path / "floor") == (3, 3 * per_epoch)  # whole epochs: one more
    train("dbt-ddpm-3d", phantom, tmp_path / "met", profile="tiny", echo=lambda *a: None,
          overrides=base + [f"train.min_steps={per_epoch}"])
    assert _epochs_and_last_step(tmp_path / "met") == (2, 2 * per_epoch)  # the epochs already give enough
    train("dbt-ddpm-3d", phantom, tmp_path / "capped", profile="tiny", echo=lambda *a: None,
          overrides=base + [f"train.min_steps={4 * per_epoch}", f"train.max_steps={2 * per_epoch + 1}"])
    assert _epochs_and_last_step(tmp_path / "capped")[1] == 2 * per_epoch + 1  # max_steps still caps
