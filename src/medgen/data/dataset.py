"""A prepared dataset directory, opened lazily (images stay memory-mapped)."""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from medgen.errors import UserError

REQUIRED = ("index.csv", "images.npy", "stats.json")


class PreparedDataset:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        missing = [n for n in REQUIRED if not (self.root / n).exists()]
        if not self.root.is_dir() or missing:
            raise UserError(
                f"not a prepared dataset (missing {', '.join(missing) or 'folder'}); create one with 'medgen data prepare'",
                self.root,
            )
        try:
            self.stats = json.loads((self.root / "stats.json").read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"stats.json is not valid JSON ({err})", self.root / "stats.json") from None

    @cached_property
    def index(self):
        import pandas as pd

        return pd.read_csv(self.root / "index.csv", dtype=str, keep_default_na=False)

    @cached_property
    def images(self) -> np.ndarray:
        return np.load(self.root / "images.npy", mmap_mode="r")

    @cached_property
    def masks(self) -> np.ndarray | None:
        p = self.root / "masks.npy"
        return np.load(p, mmap_mode="r") if p.exists() else None

    @property
    def labels(self) -> list[str]:
        return list(self.stats["labels"])

    @property
    def spatial_dims(self) -> int:
        return int(self.stats["spatial_dims"])

    @property
    def channels(self) -> int:
        return int(self.stats["channels"])

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.stats["size"])

    def __len__(self) -> int:
        return len(self.index)

    def select(self, split: str | None = None, where: dict[str, str] | None = None) -> np.ndarray:
        """Row numbers of the items in ``split`` whose index columns equal ``where``'s values."""
        keep = np.ones(len(self.index), dtype=bool)
        if split is not None:
            keep &= (self.index["split"] == split).to_numpy()
        for col, value in (where or {}).items():
            if col not in self.index.columns:
                raise UserError(f"subset column '{col}' is not in the dataset index (columns: {', '.join(self.index.columns)})", self.root)
            values = str(value).split("|")
            keep &= self.index[col].isin(values).to_numpy()
        return np.flatnonzero(keep)

    def label_ids(self, rows: np.ndarray) -> np.ndarray:
        lookup = {lab: i for i, lab in enumerate(self.labels)}
        return np.array([lookup[v] for v in self.index["label"].to_numpy()[rows]], dtype=np.int64)

    def torch_dataset(self, rows: np.ndarray):
        return _TorchView(self, np.asarray(rows))


class _TorchView:
    """Map-style torch dataset over some rows: dicts of image, label (int) and mask."""

    def __init__(self, ds: PreparedDataset, rows: np.ndarray):
        self.ds, self.rows = ds, rows
        self.label_ids = ds.label_ids(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        import torch

        row = int(self.rows[i])
        item = {"image": torch.from_numpy(np.array(self.ds.images[row])), "label": int(self.label_ids[i]), "index": row}
        if self.ds.masks is not None:
            item["mask"] = torch.from_numpy(np.array(self.ds.masks[row]))
        return item
