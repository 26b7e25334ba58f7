"""The cosine learning-rate schedule: a function of the step, logged, exclusive with the plateau rule."""
import json
import math

import pytest

from medgen.engine.lr_schedule import lr_factor
from medgen.errors import UserError
from medgen.training import train


def test_cosine_factor_falls_from_one_to_zero_and_constant_stays():
    total = 10
    f = [lr_factor("cosine", s, total) for s in range(total + 1)]
    assert f[0] == 1.0 and f[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(f, f[1:]))
    assert f[5] == pytest.approx(0.5)
    assert all(lr_factor("constant", s, total) == 1.0 for s in range(total))
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr_factor("step", 1, total)


def _logged_lrs(run):
    lines = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["lr"]) for r in lines if "lr" in r and r.get("event") != "epoch"]


def test_a_cosine_run_logs_a_falling_rate_that_ends_near_zero(phantom, tmp_path):
    out = tmp_path / "cos"
    train("dbt-ddpm-3d", phantom, out, profile="tiny", echo=lambda *a: None,
          overrides=["model.spatial_dims=2", "train.epochs=3", "train.max_steps=12", "train.batch_size=8",
                     "train.log_every=1", "train.lr=0.001", "train.lr_schedule=cosine"])
    lrs = _logged_lrs(out)
    assert len(lrs) >= 10
    steps, rates = zip(*lrs)
    assert rates[0] == pytest.approx(1e-3)  # the first step runs at the base rate
    assert all(a > b for a, b in zip(rates, rates[1:]))
    # logged after the step, i.e. the rate that step ran at: base * factor(step - 1)
    assert rates[-1] == pytest.approx(1e-3 * lr_factor("cosine", steps[-1] - 1, 12))
    assert rates[-1] < 0.05e-3


def test_cosine_and_plateau_together_are_refused(phantom, tmp_path):
    with pytest.raises(UserError, match="choose one"):
        train("dbt-ddpm-3d", phantom, tmp_path / "both", profile="tiny", echo=lambda *a: None,
              overrides=["model.spatial_dims=2", "train.lr_schedule=cosine", "train.lr_plateau_patience=2"])
