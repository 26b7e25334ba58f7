"""medgen's trainer against a bare `for batch: forward, backward, step` loop on the same U-Net,
data and batch size (target: <= 5% slower per step)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from common import emit, machine, median_time


def main() -> None:
    from medgen.config import resolve
    from medgen.data.prepare import PrepareOptions, prepare
    from medgen.data.sources import SourceOptions
    from medgen.data.dataset import PreparedDataset
    from medgen.engine.trainer import Trainer
    from medgen.models.base import DataInfo, build_model
    from medgen.rundir import RunDir

    tmp = Path(tempfile.mkdtemp())
    prepare("builtin:breast-phantom", tmp / "d", PrepareOptions(size=(32, 32), workers=1, source=SourceOptions(n=160)))
    ds = PreparedDataset(tmp / "d")
    steps = 24
    cfg = resolve("dbt-ddpm-3d", "tiny", ["model.spatial_dims=2", "train.batch_size=16", "train.epochs=100", f"train.max_steps={steps}",
                                          "train.ema_decay=null", "train.log_every=1000", "train.val_every=1000"])
    info = DataInfo(2, 1, (32, 32), ds.labels)
    rows = ds.select("train")

    def medgen_loop():
        torch.manual_seed(0)
        model = build_model(cfg, info)
        run = RunDir.create(tmp / "run", force=True)
        Trainer(model, cfg, ds, run, rows, np.array([], dtype=int), torch.device("cpu")).fit()

    def bare_loop():
        torch.manual_seed(0)
        model = build_model(cfg, info)
        den = model.denoiser
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        images = torch.from_numpy(np.asarray(ds.images[np.sort(rows)]))
        for s in range(steps):
            x = images[(s * 16) % (len(images) - 16):][:16] * 2 - 1
            noise = torch.randn_like(x)
            t = torch.randint(0, den.T, (len(x),))
            loss = torch.nn.functional.mse_loss(den.eps(den.q_sample(x, t, noise), t, None), noise)
            opt.zero_grad()
            loss.backward()
            opt.step()

    ref = median_time(bare_loop, repeats=5)
    ours = median_time(medgen_loop, repeats=5)
    emit("trainer_overhead", {"steps": steps, "bare_s_per_step": ref / steps, "medgen_s_per_step": ours / steps,
                              "ratio": ours / ref, "target": "<= 1.05 (medgen includes checkpoints at the end of the run)",
                              "machine": machine()})


if __name__ == "__main__":
    main()
