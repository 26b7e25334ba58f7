"""The autoencoder's gradient-difference term: zero for a perfect reconstruction, larger for a blurred
one than for a brightness-shifted one of the same L1 error (it sees edges, not levels)."""
import torch
import torch.nn.functional as F

from medgen.models.ldm import edge_loss


def test_edge_loss_sees_blur_not_a_level_shift():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 1, 32, 32, generator=g) > 0.5).float()
    assert float(edge_loss(x, x)) == 0.0
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    shift = F.l1_loss(blurred, x)  # a level shift with the same pixel L1 error as the blur
    assert float(edge_loss(x + shift, x)) < 1e-6
    assert float(edge_loss(blurred, x)) > 0.1


def test_edge_loss_covers_every_spatial_axis_of_a_volume():
    x = torch.zeros(1, 1, 4, 4, 4)
    y = x.clone()
    y[..., 2, :, :] = 1.0  # an edge along the depth axis only
    assert float(edge_loss(y, x)) > 0


def test_the_autoencoder_stage_logs_the_edge_term_when_weighted(phantom, tmp_path):
    import json

    from medgen.training import train

    out = tmp_path / "edge"
    train("mammo-roi-ldm", phantom, out, profile="tiny", echo=lambda *a: None,
          overrides=["model.edge_weight=1.0", "train.log_every=1"])
    ae = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    edges = [r["edge"] for r in ae if r.get("stage") == "autoencoder" and "edge" in r]
    assert edges and all(e > 0 for e in edges)
