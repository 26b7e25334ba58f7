"""Loss curves from logs/metrics.jsonl, one panel per stage (generator/discriminator together)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def loss_curves(records: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("event") != "epoch" and "step" in r]
    epochs = [r for r in records if r.get("event") == "epoch"]
    stages = list(dict.fromkeys(r.get("stage", "main") for r in steps + epochs))
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(5.2 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rs = [r for r in steps if r.get("stage", "main") == stage]
        keys = [k for k in dict.fromkeys(k for r in rs for k in r) if k not in ("time", "stage", "epoch", "step", "skipped_nonfinite", "lr")
                and isinstance(rs[0].get(k, 0.0), (int, float))]
        for k in keys[:6]:
            xs = [r["step"] for r in rs if k in r]
            ys = [r[k] for r in rs if k in r]
            ax.plot(xs, ys, lw=1, marker="o" if len(xs) < 20 else None, ms=3, label=k)
        vs = [r for r in epochs if r.get("stage", "main") == stage]
        for k in [k for k in dict.fromkeys(k for r in vs for k in r) if k.startswith("val_")][:3]:
            ax.plot([r["step"] for r in vs if k in r], [r[k] for r in vs if k in r], "o--", ms=3, label=k)
        ax.set_title(f"stage: {stage}", fontsize=9)
        ax.set_xlabel("step")
        positive = all(np.all(np.asarray(line.get_ydata(), dtype=float) > 0) for line in ax.get_lines())
        if positive and ax.get_lines():
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
