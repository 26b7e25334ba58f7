"""The guard against a model whose output does not follow its input (issue: an autoencoder that
outputs black for every image "finished" with a flat validation MAE and nothing said so)."""
from __future__ import annotations

import json

import torch

from medgen.engine.guards import degenerate_output, flat_validation


def _epochs(values, stage="main"):
    return [{"stage": stage, "event": "epoch", "epoch": i, "val_mae": v} for i, v in enumerate(values)]


def test_flat_validation_from_the_first_epoch_is_named():
    (warning,) = flat_validation(_epochs([0.2337] * 5))
    assert "validation mae stayed at 0.2337" in warning and "5 validations" in warning
    assert flat_validation(_epochs([0.30, 0.25, 0.24, 0.24])) == []
    assert flat_validation(_epochs([0.2337] * 2)) == []  # too few to judge


class _Stub(torch.nn.Module):
    can_reconstruct, can_sample, samplers = True, True, ()

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def reconstruct(self, x):
        return self.fn(x)


def test_reconstructions_that_ignore_the_input_are_named():
    images = torch.rand(8, 1, 16, 16)
    (warning,) = degenerate_output(_Stub(torch.zeros_like), images)
    assert "barely change with the input" in warning
    assert degenerate_output(_Stub(lambda x: 0.9 * x + 0.05), images) == []


def test_one_pass_samples_all_alike_are_named():
    class Collapsed(_Stub):
        can_reconstruct = False

        def sample(self, n, generator=None):
            return torch.full((n, 1, 16, 16), 0.3)

    (warning,) = degenerate_output(Collapsed(None), torch.rand(8, 1, 16, 16))
    assert "all alike" in warning


def test_a_run_that_outputs_black_says_so_in_status_terminal_and_report(phantom, tmp_path, monkeypatch):
    from medgen.models.conv_ae import ConvAutoencoder
    from medgen.report import write_report
    from medgen.training import train

    monkeypatch.setattr(ConvAutoencoder, "reconstruct", lambda self, x: torch.zeros_like(x))
    said = []
    train("brain-ae-anomaly", phantom, tmp_path / "ae", profile="tiny", subset=["label=normal"], echo=said.append)
    status = json.loads((tmp_path / "ae" / "status.json").read_text())
    assert status["state"] == "finished" and any("barely change with the input" in w for w in status["warnings"])
    assert any(line.startswith("WARNING: reconstructions barely change") for line in said)
    assert "WARNING: reconstructions barely change" in write_report(tmp_path / "ae").read_text()


def test_linear_output_keeps_a_gradient_where_the_sigmoid_has_saturated():
    """The black-output failure: every logit sunk far below 0, the sigmoid's gradient is gone and
    no step can bring the output back. ``model.output=linear`` has no such dead zone."""
    from medgen.config import resolve
    from medgen.models.base import DataInfo, build_model

    x = torch.rand(4, 1, 32, 32)
    grads = {}
    for output in ("sigmoid", "linear"):
        cfg = resolve("brain-ae-anomaly", "tiny", [f"model.output={output}"])
        model = build_model(cfg, DataInfo(2, 1, (32, 32), ["normal"]))
        with torch.no_grad():
            model.decoder.out.bias.fill_(-40.0)  # as after the first steps on mostly-black images
        torch.nn.functional.l1_loss(model(x), x).backward()
        grads[output] = float(model.decoder.out.weight.grad.abs().sum())
    assert grads["sigmoid"] < 1e-12 < 1e-3 < grads["linear"]
