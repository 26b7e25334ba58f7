"""The small CNNs medgen trains on a dataset's own images, and their one training loop.

Used by the offline "domain" feature extractor (:mod:`medgen.evaluation.domain`: a classifier when
there are >= 2 labels, else an autoencoder) and by the train-on-synthetic / test-on-real table
(:mod:`medgen.evaluation.utility`: the classifier, trained from scratch per set and seed).

* classifier (:class:`SmallCNN`): 4 conv stages, 16-32-64-128 channels, GroupNorm, ReLU, 2x
  max-pool, global average pool -> 128-d features -> linear layer;
* autoencoder (:class:`SmallAutoencoder`): the same encoder, a 128-d linear bottleneck and a
  mirrored decoder.

Inputs are shrunk (area interpolation) so that no axis exceeds ``max_size`` (64 for 2-D, 32 for
3-D): cheap on a CPU and enough for distribution statistics. Training is deterministic from a seed
(fixed initialisation, shuffling and flip augmentation from one ``torch.Generator``, early stopping
on a validation split, best weights restored).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DomainSettings",
    "SmallAutoencoder",
    "SmallCNN",
    "fit_autoencoder",
    "fit_classifier",
    "predict",
    "stratified_split",
    "to_work",
    "work_size",
]

@dataclass(frozen=True)
class DomainSettings:
    """How the small CNNs are trained (the domain extractor's defaults; the utility table shortens epochs/patience)."""

    width: int = 16
    feature_dim: int = 128
    max_size_2d: int = 64
    max_size_3d: int = 32
    epochs: int = 60
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 10  # epochs without a better validation loss before stopping
    max_steps: int = 3000  # optimiser steps at most (large datasets stop on this, not on epochs)
    threads: int = 1  # a network this small runs fastest (and reproducibly) on one CPU thread
    seed: int = 0
    val_fraction: float = 0.15  # carved from the training images when no validation images are given
    max_train: int = 5000  # a deterministic subsample above this (keeps the CPU cost bounded)


def work_size(size: tuple[int, ...], settings: DomainSettings = DomainSettings()) -> tuple[int, ...]:
    cap = settings.max_size_2d if len(size) == 2 else settings.max_size_3d
    return tuple(min(int(s), cap) for s in size)


def to_work(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C, *size), area interpolation (size is never larger)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="area")


# ----------------------------------------------------------------------------------------------
# networks


def _groups(c: int) -> int:
    return max(1, min(8, c // 4))


def _pool(x: torch.Tensor) -> torch.Tensor:
    k = tuple(2 if s >= 2 else 1 for s in x.shape[2:])
    return (F.max_pool2d if x.dim() == 4 else F.max_pool3d)(x, k)


def _pooled_sizes(size: tuple[int, ...], depth: int) -> list[tuple[int, ...]]:
    sizes = [tuple(size)]
    for _ in range(depth):
        sizes.append(tuple(s // 2 if s >= 2 else s for s in sizes[-1]))
    return sizes


class Encoder(nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, width: int = 16, depth: int = 4):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        chans = [width * 2**i for i in range(depth)]
        layers, c_in = [], in_channels
        for c in chans:
            layers.append(nn.Sequential(conv(c_in, c, 3, padding=1), nn.GroupNorm(_groups(c), c), nn.ReLU(inplace=True)))
            c_in = c
        self.blocks = nn.ModuleList(layers)
        self.out_channels = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = _pool(block(x))
        return x


class SmallCNN(nn.Module):
    """Classifier; ``features(x)`` is the global-average-pooled last conv stage (128-d by default)."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, width: int = 16, dropout: float = 0.2):
        super().__init__()
        self.encoder = Encoder(spatial_dims, in_channels, width)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.out_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(2).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class SmallAutoencoder(nn.Module):
    """Autoencoder for unlabelled data; ``features(x)`` is the linear bottleneck."""

    def __init__(self, spatial_dims: int, in_channels: int, size: tuple[int, ...], width: int = 16, feature_dim: int = 128):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.encoder = Encoder(spatial_dims, in_channels, width)
        self.sizes = _pooled_sizes(tuple(size), len(self.encoder.blocks))
        self.grid = (2,) * spatial_dims
        c = self.encoder.out_channels
        flat = c * int(np.prod(self.grid))
        self.to_latent = nn.Linear(flat, feature_dim)
        self.from_latent = nn.Linear(feature_dim, flat)
        chans = [width * 2**i for i in range(len(self.encoder.blocks))][::-1]  # 128, 64, 32, 16
        ups, c_in = [], c
        for ch in chans:
            ups.append(nn.Sequential(conv(c_in, ch, 3, padding=1), nn.GroupNorm(_groups(ch), ch), nn.ReLU(inplace=True)))
            c_in = ch
        self.up = nn.ModuleList(ups)
        self.out = conv(c_in, in_channels, 3, padding=1)
        self.spatial_dims = spatial_dims

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        pool = F.adaptive_avg_pool2d if self.spatial_dims == 2 else F.adaptive_avg_pool3d
        return self.to_latent(pool(h, self.grid).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_latent(z).view(len(z), self.encoder.out_channels, *self.grid)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        for block, size in zip(self.up, self.sizes[::-1][1:]):
            h = block(F.interpolate(h, size=size, mode=mode, align_corners=False))
        return torch.sigmoid(self.out(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x))


# ----------------------------------------------------------------------------------------------
# training


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train_idx, val_idx): ``fraction`` of every class (at least 1 when the class
    has >= 2 items) goes to validation."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    val = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if len(idx) < 2:
            continue
        k = max(1, int(round(fraction * len(idx))))
        val.extend(rng.permutation(idx)[:k].tolist())
    val = np.array(sorted(val), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random left-right flips (the last axis), drawn from ``gen``."""
    mask = torch.rand(len(x), generator=gen) < 0.5
    if mask.any():
        x = x.clone()
        x[mask] = x[mask].flip(-1)
    return x


class _threads:
    """Temporarily set torch's CPU thread count (small networks: thread overhead dominates)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)

def _train_loop(model: nn.Module, loss_fn, x_tr, y_tr, x_val, y_val, s: DomainSettings, seed: int, eval_fn) -> dict:
    with _threads(s.threads):
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        best, best_state, best_epoch, bad, epoch, steps = float("inf"), None, 0, 0, 0, 0
        history = []
        for epoch in range(1, s.epochs + 1):
            model.train()
            for idx in _batches(len(x_tr), s.batch_size, gen):
                xb = _flip(x_tr[idx], gen)
                loss = loss_fn(model, xb, None if y_tr is None else y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                if steps >= s.max_steps:
                    break
            model.eval()
            with torch.no_grad():
                val = eval_fn(model, x_val, y_val)
            history.append(val["loss"])
            if val["loss"] < best - 1e-6:
                best, best_epoch, bad = val["loss"], epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= s.patience:
                    break
            if steps >= s.max_steps:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        with torch.no_grad():
            final = eval_fn(model, x_val, y_val)
        return {**final, "best_epoch": best_epoch, "epochs_run": epoch, "steps": steps}


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0)


def fit_classifier(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, num_classes: int,
                   settings: DomainSettings = DomainSettings(), seed: int | None = None) -> tuple[SmallCNN, dict, tuple[int, ...]]:
    """Train :class:`SmallCNN` (cross-entropy, Adam, flips, early stopping on validation loss).

    Images are (N, C, *spatial) in [0, 1]; labels are integer ids. Returns (model in eval mode,
    report {loss, accuracy, best_epoch, epochs_run, n_train, n_val, chance_accuracy}, work size).
    """
    seed = settings.seed if seed is None else seed
    size = work_size(tuple(x_train.shape[2:]), settings)
    xt = to_work(torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)), size)
    xv = to_work(torch.from_numpy(np.ascontiguousarray(x_val, dtype=np.float32)), size)
    yt = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    yv = torch.as_tensor(np.asarray(y_val), dtype=torch.long)
    torch.manual_seed(seed)
    model = SmallCNN(x_train.ndim - 2, x_train.shape[1], num_classes, settings.width)

    def loss_fn(m, xb, yb):
        return F.cross_entropy(m(xb), yb)

    def eval_fn(m, x, y):
        logits = predict(m, x)
        return {"loss": float(F.cross_entropy(logits, y)), "accuracy": float((logits.argmax(1) == y).float().mean())}

    report = _train_loop(model, loss_fn, xt, yt, xv, yv, settings, seed, eval_fn)
    counts = np.bincount(np.asarray(y_val), minlength=num_classes)
    report.update(n_train=int(len(xt)), n_val=int(len(xv)), chance_accuracy=float(counts.max() / max(1, counts.sum())))
    return model, report, size


def fit_autoencoder(x_train: np.ndarray, x_val: np.ndarray, settings: DomainSettings = DomainSettings(),
                    seed: int | None = None) -> tuple[SmallAutoencoder, dict, tuple[int, ...]]:
    """Train :class:`SmallAutoencoder` (MSE); report {loss (val MSE), mean_image_mse, ...}."""
    seed = settings.seed if seed is None else seed
    size = work_size(tuple(x_train.shape[2:]), settings)
    xt = to_work(torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)), size)
    xv = to_work(torch.from_numpy(np.ascontiguousarray(x_val, dtype=np.float32)), size)
    torch.manual_seed(seed)
    model = SmallAutoencoder(x_train.ndim - 2, x_train.shape[1], size, settings.width, settings.feature_dim)

    def loss_fn(m, xb, _):
        return F.mse_loss(m(xb), xb)

    def eval_fn(m, x, _):
        return {"loss": float(F.mse_loss(predict(m, x), x))}

    report = _train_loop(model, loss_fn, xt, None, xv, None, settings, seed, eval_fn)
    report.update(n_train=int(len(xt)), n_val=int(len(xv)),
                  mean_image_mse=float(F.mse_loss(xt.mean(0, keepdim=True).expand_as(xv), xv)))
    return model, report, size
