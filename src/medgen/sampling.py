"""``medgen.sample``: load a trained run and write generated images, a grid and a histogram."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medgen.data.export import FORMATS, write_image
from medgen import samplers
from medgen.errors import UserError
from medgen.fsio import fresh_output_folder
from medgen.models.base import DataInfo, build_model
from medgen.progress import progress_bar
from medgen.rundir import RunDir


def load_run_model(run_dir: str | Path, device: str | torch.device | None = None, checkpoint: str | None = None):
    """(config, model in eval mode, run) of a trained run; weights from its final (EMA) checkpoint,
    or the latest one while it is still training."""
    from medgen.engine.checkpoint import load_checkpoint
    from medgen.engine.guards import load_matching_weights
    from medgen.training import latest_checkpoint

    run = RunDir.open(run_dir)
    cfg = run.config()
    info_json = run.data().get("info")
    if not info_json:
        raise UserError("run has no data.json with the data description", run.root)
    info = DataInfo.from_json(info_json)
    model = build_model(cfg, info)
    ckpt_dir = run.checkpoints / checkpoint if checkpoint else latest_checkpoint(run)
    if ckpt_dir is None or not ckpt_dir.exists():
        raise UserError("run has no checkpoint yet (train it first)", run.root)
    ckpt = load_checkpoint(ckpt_dir)
    load_matching_weights(model, ckpt["model"], ckpt_dir, cfg.model.family, ckpt["state"])
    if ckpt.get("ema"):  # keys are the model's own ("<submodule>.<param>"): sample with the averaged weights
        own = model.state_dict()
        for name, tensor in ckpt["ema"].items():
            if name in own:
                own[name].copy_(tensor)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    return cfg, model, run


def resolve_labels(model, labels: list[str], label: str | None, n: int) -> torch.Tensor | None:
    if label is None:
        return None
    if not model.conditional:
        raise UserError(f"--label {label}: this run is not class-conditional (train with --set model.conditional=true)")
    if label not in labels:
        raise UserError(f"unknown label '{label}'; this run's labels: {', '.join(labels)}")
    return torch.full((n,), labels.index(label), dtype=torch.long)


def generate(model, n: int, labels: torch.Tensor | None, sampler: str, steps: int | None, guidance: float,
             seed: int, batch_size: int, describe: str = "sample") -> tuple[np.ndarray, np.ndarray | None]:
    """n images as a float32 array in [0, 1]; the same seed gives the same images."""
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed)
    out, out_labels = [], []
    total_steps = (steps or model.num_timesteps or 1) * int(np.ceil(n / batch_size))
    with progress_bar(describe, total_steps) as advance:
        for start in range(0, n, batch_size):
            k = min(batch_size, n - start)
            y = None
            if model.conditional:
                y = labels[start:start + k] if labels is not None else (torch.arange(start, start + k) % model.info.num_classes)
            x = model.sample(k, labels=y, steps=steps, generator=gen, sampler=sampler, guidance=guidance, progress=advance)
            out.append(x.float().cpu().numpy())
            if y is not None:
                out_labels.append(y.cpu().numpy())
    return np.concatenate(out), (np.concatenate(out_labels) if out_labels else None)


def sample(run_dir: str | Path, n: int = 16, label: str | None = None, sampler: str | None = None, steps: int | None = None,
           guidance: float | None = None, seed: int | None = None, fmt: str | None = None, out: str | Path | None = None,
           batch_size: int | None = None, force: bool = False, each_label: bool = False, echo=print) -> dict:
    """``each_label``: n images per class of a conditional run, every class from the same seed (so the
    same latents or starting noise), and a grid with one row per class: what the label changes."""
    cfg, model, run = load_run_model(run_dir)
    if not model.can_sample:
        raise UserError(f"model family '{cfg.model.family}' reconstructs images but does not generate new ones "
                        "(use `medgen detect RUN`)", run.root)
    sc = cfg.sample
    sampler = sampler or sc.sampler
    steps = steps or sc.steps
    guidance = sc.guidance if guidance is None else guidance
    seed = sc.seed if seed is None else seed
    fmt = fmt or sc.format
    if fmt not in FORMATS:
        raise UserError(f"bad --format '{fmt}': choose one of {', '.join(FORMATS)}")
    samplers.check_name(sampler, "--sampler")
    if fmt == "png" and model.info.spatial_dims == 3:
        fmt = "nii"
        echo("volumes are written as NIfTI (PNG cannot hold 3D)")
    model.check_sampler(sampler)  # names the sampler and, for a diffusion run, the objective it was trained with
    T = model.num_timesteps
    if steps is not None and T is not None and steps > T:
        raise UserError(f"--steps {steps} exceeds the {T} timesteps this model was trained with")
    labels = list(model.info.labels)
    if each_label and (label is not None or not model.conditional):
        raise UserError("--each-label needs a class-conditional run and no --label")
    y = resolve_labels(model, labels, label, n)
    tag = (f"{sampler}-{steps or T or 'default'}-seed{seed}" + (f"-{label}" if label else "") + (f"-g{guidance:g}" if guidance != 1 else "")
           + ("-each-label" if each_label else ""))
    out = Path(out) if out else run.samples / tag
    with fresh_output_folder(out, force, "sample folder"):  # held until the last file is written
        if each_label:  # the same seed for every class: the same z (or starting noise), a different label
            parts = [generate(model, n, torch.full((n,), c, dtype=torch.long), sampler, steps, guidance, seed, batch_size or sc.batch_size,
                              describe=f"sample {name}") for c, name in enumerate(labels)]
            images, ylab = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        else:
            images, ylab = generate(model, n, y, sampler, steps, guidance, seed, batch_size or sc.batch_size)
        import pydicom.uid

        series_uid = pydicom.uid.generate_uid()
        files = []
        for i, img in enumerate(images):
            lab = labels[int(ylab[i])] if ylab is not None else ""
            p = write_image(out / (f"sample_{i:05d}" + (f"_{lab}" if lab else "")), img, fmt, lab, series_uid, i + 1)
            files.append({"file": p.name, "label": lab})
        from medgen.plots import image_grid, intensity_histogram

        if each_label:  # one row per class, at most 8 images each
            shown, ncols = np.concatenate([c * n + np.arange(min(n, 8)) for c in range(len(labels))]), min(n, 8)
        else:
            shown, ncols = np.arange(min(64, n)), 8
        title = (f"{run.root.name}: " + (f"{sampler}, {steps or T} steps, " if T else "") + f"seed {seed}"
                 + (" (one row per class, same seed)" if each_label else ""))
        grid = image_grid(images[shown], out / "grid.png", [files[i]["label"] for i in shown] if ylab is not None else None,
                          ncols=ncols, title=title)
        real = _real_training_images(run, 256)
        hist = intensity_histogram(real, images, out / "histogram.png", title="intensities: real training vs generated") if real is not None else None
        manifest = {"run": str(run.root), "n": n, "sampler": sampler, "steps": steps or T, "guidance": guidance, "seed": seed,
                    "format": fmt, "label": label, "each_label": each_label, "files": files, "grid": grid.name, "histogram": hist.name if hist else None}
        (out / "samples.json").write_text(json.dumps(manifest, indent=2))
        echo(f"{len(images)} samples in {out}; grid: {grid}")
        return {"out": str(out), "grid": str(grid), "histogram": str(hist) if hist else None, "images": images, "labels": ylab}


def _real_training_images(run: RunDir, limit: int) -> np.ndarray | None:
    from medgen.data.dataset import PreparedDataset

    d = run.data()
    try:
        ds = PreparedDataset(d["dataset"])
    except (UserError, KeyError):
        return None
    rows = ds.select(d.get("train_split", "train"), d.get("subset") or {})
    rows = rows[np.linspace(0, len(rows) - 1, min(limit, len(rows))).astype(int)] if len(rows) else rows
    return np.asarray(ds.images[np.sort(rows)]) if len(rows) else None
