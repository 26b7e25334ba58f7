"""Training batches gathered straight from a prepared dataset's memory-mapped cache."""
from __future__ import annotations

import math

import numpy as np
import torch

from medgen.data.dataset import PreparedDataset


def batch_from_rows(ds: PreparedDataset, rows: np.ndarray, label_ids: np.ndarray, device: torch.device) -> dict:
    order = np.argsort(rows)  # sorted reads are sequential on the memory map
    sorted_rows = rows[order]
    images = np.asarray(ds.images[sorted_rows], dtype=np.float32)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    batch = {"image": torch.from_numpy(images[inverse]).to(device), "label": torch.from_numpy(label_ids).to(device),
             "index": torch.from_numpy(rows)}
    if ds.masks is not None:
        batch["mask"] = torch.from_numpy(np.asarray(ds.masks[sorted_rows])[inverse]).to(device)
    return batch


def iterate_batches(ds, rows, label_ids, batch_size, device, perm=None, drop_last=False, skip=0):
    idx = np.arange(len(rows)) if perm is None else perm
    n_batches = len(idx) // batch_size if drop_last else math.ceil(len(idx) / batch_size)
    for b in range(skip, n_batches):
        sel = idx[b * batch_size:(b + 1) * batch_size]
        yield b, batch_from_rows(ds, rows[sel], label_ids[sel], device)
