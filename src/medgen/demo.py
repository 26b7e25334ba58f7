"""``medgen demo``: the whole journey on the embedded default data, one step after another.

Each step reuses its output when a previous demo already finished it (so a second run, or a
run after an interruption, picks up where it stopped); ``--force`` starts again from scratch.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from medgen.data.dataset import PreparedDataset
from medgen.errors import UserError

DEMO_SOURCE = "builtin:mni152"


def run_demo(out: str | Path = "demo-output", force: bool = False, echo=print) -> dict:
    out = Path(out)
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    result: dict = {}
    if (data_dir / "stats.json").exists():
        echo(f"[1] data: reusing {data_dir}")
    else:
        from medgen.data.prepare import PrepareOptions, prepare

        echo(f"[1] data: preparing {DEMO_SOURCE} (real MNI152 template slices, augmented) into {data_dir}")
        prepare(DEMO_SOURCE, data_dir, PrepareOptions(), force=True)
    from medgen.data.inspect import inspect_dataset

    info = inspect_dataset(data_dir)
    ds = PreparedDataset(data_dir)
    echo(f"    {info['n']} items of shape {tuple(info['shape'])}; labels: {', '.join(ds.labels)}")
    for split in ("train", "val", "test"):
        echo(f"    {split:5s} " + ", ".join(f"{k}: {v}" for k, v in info["counts"][split].items()))
    result["data"] = str(data_dir)
    result["preview"] = info["preview"]
    echo(f"preview: {info['preview']}")
    if not Path(info["preview"]).exists():
        raise UserError("the preview was not written", info["preview"])
    return result
