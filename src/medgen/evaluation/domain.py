"""The offline "domain" feature extractor and the small CNN classifier of the utility table.

No ImageNet weights can be assumed offline, and ImageNet features are a poor fit for grey medical
images anyway, so medgen's default extractor is a small CNN trained on the dataset's own real
training images:

* >= 2 labels: a classifier (4 conv stages, 16-32-64-128 channels, GroupNorm, ReLU, 2x max-pool,
  global average pool -> 128-d features -> linear layer). Features are the pooled 128-d layer.
* one label: an autoencoder with the same encoder, a 128-d linear bottleneck (the features) and a
  mirrored decoder.

Inputs are shrunk (area interpolation) so that no axis exceeds ``max_size`` (64 for 2-D, 32 for
3-D): cheap on a CPU and enough for distribution statistics. Training is deterministic from a seed
(fixed initialisation, shuffling and flip augmentation from one ``torch.Generator``, early stopping
on a validation split, best weights restored). The trained extractor is cached as safetensors with
its settings and validation result in the file's metadata; the cache key covers the training
images, labels, settings and seed, so a repeated evaluation reuses it and anything that would
change it trains a new one. How good the extractor is (validation accuracy vs chance, or
reconstruction MSE vs predicting the mean image) is reported with every result that uses it.

``SmallCNN`` and :func:`fit_classifier` are also the classifier trained on real / synthetic /
mixed data in :mod:`medgen.evaluation.utility`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgen.errors import UserError
from medgen.evaluation.features import FeatureExtractor

__all__ = [
    "DomainExtractor",
    "DomainSettings",
    "SmallAutoencoder",
    "SmallCNN",
    "build_domain_extractor",
    "fit_autoencoder",
    "fit_classifier",
    "load_domain_extractor",
    "stratified_split",
    "work_size",
]

DOMAIN_VERSION = 1


@dataclass(frozen=True)
class DomainSettings:
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
        return _train_loop_inner(model, loss_fn, x_tr, y_tr, x_val, y_val, s, seed, eval_fn)


def _train_loop_inner(model: nn.Module, loss_fn, x_tr, y_tr, x_val, y_val, s: DomainSettings, seed: int, eval_fn) -> dict:
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


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
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
        logits = _predict(m, x)
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
        return {"loss": float(F.mse_loss(_predict(m, x), x))}

    report = _train_loop(model, loss_fn, xt, None, xv, None, settings, seed, eval_fn)
    report.update(n_train=int(len(xt)), n_val=int(len(xv)),
                  mean_image_mse=float(F.mse_loss(xt.mean(0, keepdim=True).expand_as(xv), xv)))
    return model, report, size


# ----------------------------------------------------------------------------------------------
# the extractor, its cache


class DomainExtractor(FeatureExtractor):
    name = "domain"

    def __init__(self, net: nn.Module, meta: dict, path: Path | None, reused: bool, device: Any = None):
        self.net = net.eval()
        self.meta = meta
        self.weights = path
        self.reused = reused
        self.size = tuple(meta["work_size"])
        self.dim = int(meta["feature_dim"])
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net.to(self.device)
        kind = meta["kind"]
        self.preprocessing = (f"images shrunk to {'x'.join(map(str, self.size))} (area), no normalisation; "
                              + ("128-d pooled features of a small CNN classifier" if kind == "classifier"
                                 else f"{self.dim}-d bottleneck of a small CNN autoencoder")
                              + " trained on the real training images")

    def __call__(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1] != self.meta["in_channels"] or images.ndim - 2 != self.meta["spatial_dims"]:
            raise UserError(f"the domain extractor was trained on {self.meta['spatial_dims']}-D images with "
                            f"{self.meta['in_channels']} channel(s); got images of shape {images.shape[1:]}", self.weights)
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = to_work(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])), self.size)
                out.append(self.net.features(x.to(self.device)).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, self.dim))

    def describe(self) -> dict:
        m = self.meta
        training = {"kind": m["kind"], "seed": m["settings"]["seed"], "n_train": m["report"]["n_train"],
                    "n_val": m["report"]["n_val"], "epochs_run": m["report"]["epochs_run"],
                    "best_epoch": m["report"]["best_epoch"], "trained_on": m.get("trained_on"), "reused_from_cache": self.reused}
        if m["kind"] == "classifier":
            training.update(val_accuracy=m["report"]["accuracy"], chance_accuracy=m["report"]["chance_accuracy"],
                            labels=m.get("labels"))
        else:
            training.update(val_reconstruction_mse=m["report"]["loss"], mean_image_mse=m["report"]["mean_image_mse"])
        return {**super().describe(), "training": training}


def _build_net(meta: dict) -> nn.Module:
    if meta["kind"] == "classifier":
        return SmallCNN(meta["spatial_dims"], meta["in_channels"], meta["num_classes"], meta["settings"]["width"])
    return SmallAutoencoder(meta["spatial_dims"], meta["in_channels"], tuple(meta["work_size"]), meta["settings"]["width"],
                            meta["feature_dim"])


def load_domain_extractor(path: Path, device: Any = None, reused: bool = True) -> DomainExtractor:
    """A cached domain extractor (safetensors with its settings in the metadata)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError("domain extractor file not found (it is created by `medgen evaluate` in the dataset's cache/ "
                        "folder; omit the path to train one)", path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["medgen_domain"])
        state = load_file(str(path))
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as err:
        raise UserError(f"not a medgen domain extractor file ({err.__class__.__name__}: {err})", path) from None
    net = _build_net(meta)
    net.load_state_dict(state)
    return DomainExtractor(net, meta, path, reused, device)


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def build_domain_extractor(train_images: np.ndarray, train_labels: np.ndarray | None, cache_dir: Path,
                           val_images: np.ndarray | None = None, val_labels: np.ndarray | None = None,
                           label_names: list[str] | None = None, settings: DomainSettings = DomainSettings(),
                           trained_on: str = "", device: Any = None, echo=print) -> DomainExtractor:
    """Train (or reuse from ``cache_dir``) the domain extractor on these real training images.

    ``train_labels``: integer ids; a classifier is trained when they hold >= 2 classes, else an
    autoencoder. Validation images (e.g. the dataset's val split) are used for early stopping when
    there are at least 4 of them (and, for a classifier, every validation label is a training
    label); otherwise ``settings.val_fraction`` of the training images is held out.
    """
    x = np.asarray(train_images, dtype=np.float32)
    y = None if train_labels is None else np.asarray(train_labels, dtype=np.int64)
    if len(x) < 4:
        raise UserError(f"the domain feature extractor needs at least 4 real training images, got {len(x)}; "
                        "choose another extractor with --features")
    if len(x) > settings.max_train:
        keep = np.sort(np.random.default_rng(settings.seed).choice(len(x), settings.max_train, replace=False))
        x, y = x[keep], (None if y is None else y[keep])
    classes = np.unique(y) if y is not None else np.array([])
    kind = "classifier" if len(classes) >= 2 else "autoencoder"
    if kind == "classifier":
        num_classes = int(y.max()) + 1
    xv = None if val_images is None else np.asarray(val_images, dtype=np.float32)
    yv = None if val_labels is None else np.asarray(val_labels, dtype=np.int64)
    usable_val = xv is not None and len(xv) >= 4 and (kind == "autoencoder" or (yv is not None and set(np.unique(yv)) <= set(classes)))
    if not usable_val:
        tr, va = stratified_split(y if kind == "classifier" else np.zeros(len(x), dtype=np.int64), settings.val_fraction, settings.seed)
        xv, yv = x[va], (y[va] if y is not None else None)
        x, y = x[tr], (y[tr] if y is not None else None)
    key_src = {"version": DOMAIN_VERSION, "kind": kind, "settings": asdict(settings), "torch": torch.__version__.split("+")[0],
               "data": _fingerprint(x, y if y is not None else np.zeros(0), xv, yv if (yv is not None and kind == "classifier") else np.zeros(0))}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    path = cache_dir / f"domain-{kind}-{key}.safetensors"
    if path.is_file():
        try:
            return load_domain_extractor(path, device=device, reused=True)
        except UserError:
            pass  # a damaged cache file: train again and replace it
    echo(f"training the domain feature extractor ({kind}) on {len(x)} real images (validation {len(xv)}); cached in {path}")
    if kind == "classifier":
        net, report, size = fit_classifier(x, y, xv, yv, num_classes, settings)
    else:
        net, report, size = fit_autoencoder(x, xv, settings)
    meta = {"kind": kind, "spatial_dims": x.ndim - 2, "in_channels": int(x.shape[1]), "work_size": list(size),
            "feature_dim": settings.feature_dim if kind == "autoencoder" else net.encoder.out_channels,
            "num_classes": num_classes if kind == "classifier" else 0, "labels": label_names, "settings": asdict(settings),
            "report": report, "key": key, "trained_on": trained_on, "version": DOMAIN_VERSION}
    _save(net, meta, path)
    return DomainExtractor(net, meta, path if path.exists() else None, reused=False, device=device)


def _save(net: nn.Module, meta: dict, path: Path) -> None:
    """Atomic write; an unwritable cache folder only costs a retrain next time."""
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp,
                  metadata={"medgen_domain": json.dumps(meta)})
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)  # type: ignore[possibly-undefined]
        except (OSError, UnboundLocalError):
            pass
