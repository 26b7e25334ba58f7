"""Latent interpolation between two images (S001: "a VAE learns a continuous latent space, so it can
generate images interpolated between two real images").

``interpolate(run, a, b, n)`` encodes A and B with the run's VAE-family model (the posterior means),
decodes ``n`` latents on the straight line between them (both endpoints included) and writes
``RUN/samples/interpolate-<a>-<b>/``: ``interp_00.png`` ... (16-bit PNG), ``interpolation.png`` (a strip:
input A, the n decoded images, input B) and ``interpolation.json``. A and B are item ids of the
run's prepared dataset (``index.csv`` column ``id``) or image files, which are resized and
normalised exactly as the dataset was prepared.

A conditional model decodes the whole path under one label: ``label`` if given, else A's label from
the dataset, else (A is a file) the class that reconstructs A best.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from medgen.errors import UserError
from medgen.fsio import fresh_output_folder


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "image"


def _load_item(ref: str, ds, size: tuple[int, ...], channels: int, normalize: dict | None) -> tuple[np.ndarray, str | None, str]:
    """(image (C, *size) float32, label or None, short name) of a dataset id or an image file."""
    if ds is not None:
        hits = np.flatnonzero(ds.index["id"].to_numpy() == ref)
        if len(hits):
            row = int(hits[0])
            return np.array(ds.images[row], dtype=np.float32), str(ds.index["label"].iloc[row]), ref
    path = Path(ref)
    if not path.is_file():
        where = f"an item id of the dataset {ds.root}" if ds is not None else "an item id (the run's dataset is not available)"
        raise UserError(f"'{ref}' is neither {where} nor an image file")
    from medgen.data.io import read_image
    from medgen.data.transforms import Normalizer, resize

    arr = read_image(path, rgb=channels == 3)
    if arr.shape[0] != channels:
        if channels == 1:
            arr = arr.mean(axis=0, keepdims=True)
        elif arr.shape[0] == 1:
            arr = np.repeat(arr, channels, axis=0)
        else:
            raise UserError(f"image has {arr.shape[0]} channels; the model expects {channels}", path)
    if arr.ndim - 1 != len(size):
        raise UserError(f"image is {arr.ndim - 1}D; the model expects {len(size)}D", path)
    arr = resize(arr.astype(np.float32), tuple(size), keep_aspect=len(size) == 2)
    norm = Normalizer.from_json(normalize) if normalize else Normalizer("minmax", {})
    return norm(arr).astype(np.float32), None, _safe(path.name.split(".")[0])


def _best_label(model, x: torch.Tensor) -> int:
    errs = []
    for c in range(model.info.num_classes):
        y = torch.tensor([c], device=x.device)
        mu, _ = model.encode(x, y)
        errs.append(float((model.decode(mu, y) - x).abs().mean()))
    return int(np.argmin(errs))


@torch.no_grad()
def interpolate(run_dir: str | Path, a: str, b: str, n: int = 8, out: str | Path | None = None, force: bool = False,
                label: str | None = None, echo=print) -> dict:
    """Decode ``n`` latents from A's to B's posterior mean, endpoints included; write PNGs and a strip."""
    from medgen.data.export import write_image
    from medgen.plots import image_grid
    from medgen.sampling import load_run_model

    if n < 2:
        raise UserError(f"--n {n}: an interpolation needs at least 2 images (both endpoints)")
    cfg, model, run = load_run_model(run_dir)
    if not model.can_encode:
        raise UserError(f"model family '{cfg.model.family}' has no latent encoder, so it cannot interpolate between images; "
                        "latent interpolation needs a VAE family (vae, vae-gan)", run.root)
    if model.info.spatial_dims != 2:
        raise UserError("interpolation strips are written for 2D images only", run.root)
    info = run.data()
    ds = None
    try:
        from medgen.data.dataset import PreparedDataset

        ds = PreparedDataset(info["dataset"])
    except (UserError, KeyError):
        pass
    normalize = info.get("normalize") or (ds.stats.get("normalize") if ds is not None else None)
    img_a, lab_a, name_a = _load_item(str(a), ds, model.info.size, model.info.channels, normalize)
    img_b, _, name_b = _load_item(str(b), ds, model.info.size, model.info.channels, normalize)
    dev = model.device
    xa = torch.from_numpy(img_a)[None].to(dev)
    xb = torch.from_numpy(img_b)[None].to(dev)
    labels = list(model.info.labels)
    y, label_source = None, None
    if model.conditional:
        if label is not None:
            if label not in labels:
                raise UserError(f"unknown label '{label}'; this run's labels: {', '.join(labels)}")
            cls, label_source = labels.index(label), "given"
        elif lab_a is not None and lab_a in labels:
            cls, label_source = labels.index(lab_a), "label of A"
        else:
            cls, label_source = _best_label(model, xa), "class that reconstructs A best"
        label = labels[cls]
        y = torch.tensor([cls], device=dev)
    elif label is not None:
        raise UserError(f"--label {label}: this run is not class-conditional")
    mu_a, _ = model.encode(xa, y)
    mu_b, _ = model.encode(xb, y)
    t = torch.linspace(0, 1, n, device=dev).view(-1, 1)
    z = (1 - t) * mu_a + t * mu_b
    images = model.decode(z, y.expand(n) if y is not None else None).clamp(0, 1).float().cpu().numpy()

    out = Path(out) if out else run.samples / f"interpolate-{_safe(name_a)}-{_safe(name_b)}"
    with fresh_output_folder(out, force, "interpolation folder"):  # held until the last file is written
        ts = [float(v) for v in t.flatten().cpu()]
        files = [write_image(out / f"interp_{i:02d}", img, "png").name for i, img in enumerate(images)]
        strip = np.concatenate([img_a[None], images, img_b[None]])
        short = lambda name: name if len(name) <= 12 else "..." + name[-9:]  # noqa: E731
        titles = [f"A: {short(name_a)}"] + [f"t={v:.2f}" for v in ts] + [f"B: {short(name_b)}"]
        image_grid(strip, out / "interpolation.png", titles, ncols=len(strip),
                   title=f"{run.root.name}: latent interpolation" + (f" (label {label})" if label else ""))
        manifest = {"run": str(run.root), "a": str(a), "b": str(b), "n": n, "t": ts, "label": label,
                    "label_source": label_source, "files": files, "strip": "interpolation.png"}
        (out / "interpolation.json").write_text(json.dumps(manifest, indent=2))
        echo(f"{n} interpolated images in {out}; strip: {out / 'interpolation.png'}")
        return {**manifest, "out": str(out), "strip": str(out / "interpolation.png"), "images": images}
