"""``medgen sample RUN --masks SOURCE [--inpaint IMAGES]``: image + mask pairs.

Without ``--inpaint`` the run must be mask-conditioned (``mask-ddpm``, ``mask-controlnet``): one image per mask, the
lesion where the mask is. With ``--inpaint`` any diffusion run redraws the masked region of real
images (RePaint, :mod:`medgen.inpaint`) and keeps every other pixel. Either way each output is
written with its mask (:mod:`medgen.pairs`) and ``samples.json`` records the conditioning of every
file: mask source and file, lesion class, mask area, seed. Every input is read and checked before
the output folder is touched, so bad input leaves nothing half-written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medgen import samplers
from medgen.data.export import FORMATS
from medgen.errors import UserError
from medgen.masks import MaskSet, load_masks
from medgen.progress import progress_bar
from medgen.fsio import fresh_output_folder
from medgen.sampling import load_run_model, resolve_labels


def pair_masks_with_images(masks: MaskSet, names: list[str], source: str) -> MaskSet:
    """One mask per image to inpaint: a single mask or a random source serves all; a folder must hold
    a mask named like each image (same stem, or stem + ``_mask``)."""
    if len(masks) == 1 or source.startswith("random:"):
        return masks.take(len(names))
    by_stem = {_stem(n): i for i, n in enumerate(masks.names)}
    idx = []
    for name in names:
        s = _stem(name)
        i = by_stem.get(s, by_stem.get(s + "_mask"))
        if i is None:
            raise UserError(f"image {name} has no mask in {source} (expected {s}.* or {s}_mask.*)", name)
        idx.append(i)
    det = [masks.details[i] for i in idx] if masks.details else []
    return MaskSet(masks.masks[idx], [masks.names[i] for i in idx], masks.source, masks.lesion_class, det)


def _stem(name: str) -> str:
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem


def sample_pairs(run_dir: str | Path, masks: str, inpaint: str | None = None, n: int | None = None, label: str | None = None,
                 sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int | None = None,
                 fmt: str | None = None, out: str | Path | None = None, batch_size: int | None = None, resample: int = 5,
                 feather: float = 2.0, force: bool = False, mask_ids: list[str] | None = None, echo=print) -> dict:
    """Image + mask pairs (see the module docstring). ``mask_ids``: a ``dataset`` mask source keeps
    only these items (the segmentation utility's K pairs)."""
    cfg, model, run = load_run_model(run_dir)
    sc = cfg.sample
    sampler, steps, seed, fmt = sampler or sc.sampler, steps or sc.steps, sc.seed if seed is None else seed, fmt or sc.format
    guidance = sc.guidance if guidance is None else guidance
    if fmt not in FORMATS:
        raise UserError(f"bad --format '{fmt}': choose one of {', '.join(FORMATS)}")
    samplers.check_name(sampler, "--sampler")
    if fmt == "png" and model.info.spatial_dims == 3:
        fmt = "nii"
    if steps is not None and model.num_timesteps is not None and steps > model.num_timesteps:
        raise UserError(f"--steps {steps} exceeds the {model.num_timesteps} timesteps this model was trained with")
    size = tuple(model.info.size)
    max_value = model.mask_classes if model.needs_masks else 255
    if inpaint is None and not model.needs_masks:
        raise UserError(f"--masks alone needs a mask-conditioned run (family mask-ddpm or mask-controlnet); for this run add --inpaint IMAGES "
                        f"to redraw the masked region of real images", run.root)
    images, names, scales = None, None, None
    if inpaint is not None:
        if not model.can_inpaint:
            raise UserError(f"--inpaint needs a diffusion run; this run's family ({cfg.model.family}) cannot inpaint", run.root)
        from medgen.inpaint import load_images

        images, names, scales = load_images(inpaint, size, model.info.channels)
    want = len(names) if names else n or sc.n  # random sources: one fresh mask per image
    mask_set = load_masks(masks, size, max_value, n=want, seed=seed, dataset=run.data().get("dataset"), ids=mask_ids)
    mask_set = pair_masks_with_images(mask_set, names, masks) if names else mask_set.take(n or len(mask_set))
    count = len(mask_set)
    label = label or _class_from_masks(mask_set, model)
    y = resolve_labels(model, list(model.info.labels), label, count)
    if y is None and model.conditional and mask_set.details and "mask_label" in mask_set.details[0]:
        # the dataset's own masks: each image gets the class its mask came with
        y = torch.tensor([model.info.labels.index(d["mask_label"]) for d in mask_set.details], dtype=torch.long)
    tag = ("inpaint" if inpaint else "masks") + f"-{sampler}-{steps or model.num_timesteps}-seed{seed}" + (f"-{label}" if label else "")
    out = Path(out) if out else run.samples / tag
    with fresh_output_folder(out, force, "sample folder"):  # held until the last file is written
        bs = batch_size or sc.batch_size
        gen = torch.Generator(device=model.device).manual_seed(seed)
        results = []
        per_batch = steps or model.num_timesteps or 1
        with progress_bar("inpaint" if inpaint else "sample with masks", per_batch * int(np.ceil(count / bs))) as advance:
            for s in range(0, count, bs):
                m = torch.from_numpy(mask_set.masks[s:s + bs].astype(np.int64))
                yy = y[s:s + bs] if y is not None else None
                if inpaint is not None:
                    from medgen.inpaint import repaint

                    x = repaint(model, torch.from_numpy(images[s:s + bs]), m, yy.to(model.device) if yy is not None else None,
                                steps, resample, guidance, feather, gen, advance)
                else:
                    x = model.sample(len(m), labels=yy, steps=steps, generator=gen, sampler=sampler, guidance=guidance,
                                     progress=advance, masks=m)
                results.append(x.float().cpu().numpy())
        generated = np.concatenate(results)
        return _write(out, run, generated, mask_set, names, scales, fmt, label, y, list(model.info.labels), seed, dict(
            run=str(run.root), family=cfg.model.family, mode="inpaint" if inpaint else "mask-conditioned", sampler="repaint-ddpm" if inpaint else sampler,
            steps=steps or model.num_timesteps, guidance=guidance, seed=seed, format=fmt, label=label, mask_source=masks,
            inpaint_source=inpaint, **({"mask_ids": sorted(map(str, mask_ids))} if mask_ids is not None else {}), **({"resample": resample, "feather_px": feather} if inpaint else {})), echo)


def _class_from_masks(mask_set: MaskSet, model) -> str | None:
    """A ``random:CLASS`` source on a class-conditional run whose classes include CLASS: generate that class."""
    if mask_set.lesion_class and model.conditional and mask_set.lesion_class in model.info.labels:
        return mask_set.lesion_class
    return None


def _write(out: Path, run, images: np.ndarray, mask_set: MaskSet, names: list[str] | None, scales: list[dict] | None, fmt: str, label: str | None,
           y: torch.Tensor | None, labels: list[str], seed: int, manifest: dict, echo) -> dict:
    import pydicom.uid

    from medgen.pairs import overlay_figure, write_pair

    series_uid = pydicom.uid.generate_uid()
    files = []
    for i, img in enumerate(images):
        lab = label or (labels[int(y[i])] if y is not None else "")
        stem = f"{'inpainted' if names else 'sample'}_{i:05d}" + (f"_{lab}" if lab else "")
        ip, mp = write_pair(out / stem, img, mask_set.masks[i], fmt, lab, series_uid, i + 1, lab or "lesion")
        entry = {"file": ip.name, "mask": mp.name, "label": lab, "seed": seed, **mask_set.record(i)}
        if names:
            entry.update(original=names[i], original_scaling=scales[i])
        files.append(entry)
    fig = overlay_figure(images, mask_set.masks, out / "pairs.png", [_short(f["mask_from"]) for f in files],
                         title=f"{run.root.name}: {manifest['mode']}, seed {seed}")
    manifest.update(n=len(images), files=files, figure=fig.name)
    (out / "samples.json").write_text(json.dumps(manifest, indent=2))
    echo(f"{len(images)} image + mask pairs in {out}; figure: {fig}")
    return {"out": str(out), "figure": str(fig), "images": images, "masks": mask_set.masks}


def _short(name: str, width: int = 18) -> str:
    """A column title that fits: the end of a long name (ids differ there), marked as cut."""
    return name if len(name) <= width else "\u2026" + name[-(width - 1):]
