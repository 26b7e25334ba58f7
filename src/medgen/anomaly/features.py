"""Patch features for the feature-based detectors: extraction through the model's declared
``patch_features``, per-channel standardisation, greedy coreset subsampling and nearest-neighbour
distances (torch, chunked so memory stays bounded).

Coreset (Roth et al. 2022, PatchCore): greedy k-centre selection, each step adding the patch
farthest from those already kept, on a random projection of the features (Johnson-Lindenstrauss,
as PatchCore does) so the selection costs O(n * kept * 128) instead of O(n * kept * D).
"""
from __future__ import annotations

import numpy as np
import torch

from medgen.anomaly.detectors.base import batches

PROJECTION_DIMS = 128
PRESAMPLE = 30_000  # patches considered by the coreset: a seeded random subset above this


def extract(model, images: np.ndarray, batch_size: int, describe: str) -> torch.Tensor:
    """(N, D, h, w) float32 features of ``images``."""
    return torch.from_numpy(batches(model, images, batch_size, describe, model.patch_features))


def as_patches(features: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w) -> (N * h * w, D)."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def greedy_coreset(patches: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` patches chosen by greedy k-centre (farthest point) selection."""
    total = len(patches)
    if n >= total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    x = patches
    if x.shape[1] > PROJECTION_DIMS:
        proj = torch.randn(x.shape[1], PROJECTION_DIMS, generator=gen) / PROJECTION_DIMS ** 0.5
        x = x @ proj
    x = x.float().contiguous()
    sq = (x * x).sum(dim=1)
    chosen = torch.empty(n, dtype=torch.long)
    chosen[0] = int(torch.randint(total, (1,), generator=gen))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of small matrix-vector products: extra threads only wait on each other
    try:
        # squared distances to the nearest chosen patch, |x|^2 - 2 x.c + |c|^2
        nearest = sq - 2 * torch.mv(x, x[chosen[0]]) + sq[chosen[0]]
        for i in range(1, n):
            c = int(torch.argmax(nearest))
            chosen[i] = c
            torch.minimum(nearest, sq - 2 * torch.mv(x, x[c]) + sq[c], out=nearest)
    finally:
        torch.set_num_threads(threads)
    return chosen


def knn_distance(query: torch.Tensor, memory: torch.Tensor, k: int = 1, chunk: int = 8192) -> torch.Tensor:
    """Mean distance of each query row to its ``k`` nearest memory rows."""
    out = []
    for start in range(0, len(query), chunk):
        d = torch.cdist(query[start:start + chunk], memory)
        out.append(d.topk(min(k, len(memory)), dim=1, largest=False).values.mean(dim=1))
    return torch.cat(out)


def to_image_size(values: torch.Tensor, size: tuple[int, ...]) -> np.ndarray:
    """(N, h, w) patch scores -> (N, 1, *size) maps (bilinear)."""
    v = values[:, None].float()
    if tuple(v.shape[2:]) != tuple(size):
        v = torch.nn.functional.interpolate(v, size=size, mode="bilinear", align_corners=False)
    return v.numpy().astype(np.float32)
