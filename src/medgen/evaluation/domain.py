"""The offline "domain" feature extractor: a small CNN trained on the dataset's own real images.

No ImageNet weights can be assumed offline, and ImageNet features are a poor fit for grey medical
images anyway, so medgen's default extractor is a small CNN (:mod:`medgen.evaluation.classifier`)
trained on the dataset's own real training images: a classifier when there are >= 2 labels
(features: the pooled 128-d layer), else an autoencoder (features: its 128-d bottleneck).

The trained extractor is cached as safetensors with its settings and validation result in the
file's metadata; the cache key covers the training images, labels, settings and seed, so a
repeated evaluation reuses it and anything that would change it trains a new one. How good the
extractor is (validation accuracy vs chance, or reconstruction MSE vs predicting the mean image) is
reported with every result that uses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medgen.errors import UserError
from medgen.evaluation.classifier import (
    DomainSettings,
    SmallAutoencoder,
    SmallCNN,
    fit_autoencoder,
    fit_classifier,
    stratified_split,
    to_work,
)
from medgen.evaluation.features.base import FeatureExtractor

__all__ = ["DomainExtractor", "DomainSettings", "build_domain_extractor", "load_domain_extractor"]

DOMAIN_VERSION = 1


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
