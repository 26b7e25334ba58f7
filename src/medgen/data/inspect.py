"""``medgen data inspect``: what a prepared dataset holds."""
from __future__ import annotations

from pathlib import Path

from medgen.data.dataset import PreparedDataset


def inspect_dataset(root: str | Path) -> dict:
    import pandas as pd

    ds = PreparedDataset(root)
    rejected_path = ds.root / "rejected.csv"
    rejected = pd.read_csv(rejected_path) if rejected_path.exists() and rejected_path.stat().st_size else None
    reasons = {}
    if rejected is not None and len(rejected):
        reasons = rejected["reason"].str.replace(r"\(manifest line \d+\)", "", regex=True).str.strip().value_counts().head(10).to_dict()
    s = ds.stats
    return {
        "path": str(ds.root),
        "source": s.get("source"),
        "n": len(ds),
        "shape": [s["channels"], *s["size"]],
        "spatial_dims": s["spatial_dims"],
        "labels": s["labels"],
        "counts": s["counts"],
        "normalize": s["normalize"],
        "intensity": s.get("intensity", {}),
        "has_masks": s.get("has_masks", False),
        "rejected": 0 if rejected is None else int(len(rejected)),
        "rejected_reasons": reasons,
        "content_hash": s.get("content_hash"),
        "preview": str(ds.root / "preview.png"),
    }
