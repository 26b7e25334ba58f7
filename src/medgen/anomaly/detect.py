"""``medgen detect``: anomaly maps, scores, thresholds and metrics for a run trained on normal images.

The detector comes from the registry in :mod:`medgen.anomaly.detectors`: the one asked for, or
the first the model declares (``model.detectors``): ``reconstruct`` (conv-ae, vae, vae-gan,
ldm), ``diffusion`` (pixel ddpm), ``patchcore``/``padim`` (patch-features runs), ``model``.

Steps: fit the detector on the run's NORMAL training images where it learns from them (feature
memories); map the run's NORMAL validation images (its dataset, val split, its training subset)
and the input images; smooth and mask the maps (:mod:`medgen.anomaly.scoring`); choose the
image and pixel thresholds on the normal-validation maps at the target false-positive rate
(:mod:`medgen.anomaly.thresholds`); evaluate on the input where labels or masks say what is
anomalous (:mod:`medgen.anomaly.evaluation`); write metrics.json, scores.csv, maps.npy, figure.png
and scores.png to the output folder and the summary into RUN/metrics.json ("anomaly").
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medgen.anomaly import detectors as registry
from medgen.anomaly import thresholds, tuning, uncertainty
from medgen.anomaly.detectors.base import Settings
from medgen.anomaly.evaluation import image_metrics, pixel_metrics
from medgen.data.imageset import is_prepared_dataset
from medgen.errors import UserError
from medgen.fsio import output_folder_lock, spreadsheet_safe

TUNE_MODES = ("auto", "synthetic", "none")
PIXEL_INTERVAL_LIMIT = 4_000_000  # above this many map pixels the per-image bootstrap of pixel numbers is skipped


@dataclass
class Images:
    """Images to score: (N, C, *spatial) in the run's [0, 1] space, ids, labels, masks."""

    name: str
    images: np.ndarray
    ids: list[str]
    labels: list[str]
    masks: np.ndarray | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)


# --- inputs -------------------------------------------------------------------------------------
def _from_prepared(root: Path, split: str | None, where: dict | None, name: str) -> Images:
    from medgen.data.dataset import PreparedDataset

    ds = PreparedDataset(root)
    rows = ds.select(None if split in (None, "all") else split, where or {})
    if len(rows) == 0:
        raise UserError(f"no items in split '{split}'" + (f" with subset {where}" if where else ""), root)
    images = np.asarray(ds.images[rows], dtype=np.float32)
    masks = None if ds.masks is None else (np.asarray(ds.masks[rows]) > 0)
    index = ds.index.iloc[rows]
    return Images(name, images, index["id"].tolist(), index["label"].tolist(), masks, f"{root}@{split}")


def _stem(path: Path) -> str:
    from medgen.data.io import suffix_of

    suf = suffix_of(path)
    return path.name[: -len(suf)] if suf else path.name


def _from_folder(folder: Path, masks_dir: Path | None, run_data: dict, info) -> Images:
    """Read a folder of images (class sub-folders become labels), resized and normalised like the run's data."""
    from medgen.data.imageset import image_files, read_like_run
    from medgen.data.io import read_image
    from medgen.data.transforms import resize

    files = image_files(folder)
    if masks_dir is not None:
        mask_root = masks_dir.resolve()
        files = [f for f in files if mask_root not in f.resolve().parents]
    if not files:
        raise UserError("no image files found (png, jpg, tif, dcm, nii, npy)", folder)
    keep_aspect = bool(run_data.get("keep_aspect", True)) and info.spatial_dims == 2  # as the run's data was prepared
    size = tuple(info.size)
    mask_files = {}
    if masks_dir is not None:
        if not masks_dir.is_dir():
            raise UserError("--masks must be a folder of mask files named like the images", masks_dir)
        for m in image_files(masks_dir):
            mask_files.setdefault(_stem(m), m)
    images, ids, labels, masks, notes = [], [], [], [], []
    missing_masks = 0
    for f in files:
        images.append(read_like_run(f, info, run_data.get("normalize"), keep_aspect))
        ids.append(str(f.relative_to(folder)))
        rel = f.relative_to(folder)
        labels.append(rel.parts[0] if len(rel.parts) > 1 else "")
        if masks_dir is not None:
            mf = mask_files.get(_stem(f))
            if mf is None:
                missing_masks += 1
                masks.append(np.zeros((1, *size), dtype=bool))
            else:
                m = read_image(mf)[:1]
                masks.append(resize((m > 0).astype(np.float32), size, keep_aspect=keep_aspect, nearest=True) > 0.5)
    if missing_masks:
        notes.append(f"{missing_masks} of {len(files)} images have no mask file in {masks_dir}: taken as lesion-free")
    return Images(folder.name, np.stack(images).astype(np.float32), ids, labels,
                  np.stack(masks) if masks_dir is not None else None, str(folder), notes)


# --- the command --------------------------------------------------------------------------------
def _normal_values(normal: str | list[str] | None, subset: dict) -> list[str] | None:
    if normal:
        return [v.strip() for v in (normal.split(",") if isinstance(normal, str) else normal) if v.strip()]
    if "label" in (subset or {}):
        return str(subset["label"]).split("|")
    return None


def _anomalous(items: Images, normal_values: list[str] | None) -> np.ndarray | None:
    """Ground truth per image: label not among the normal values, or a non-empty mask."""
    truth = None
    if normal_values is not None and any(items.labels):
        truth = np.array([lab not in normal_values for lab in items.labels])
    if items.masks is not None:
        has = items.masks.reshape(len(items.masks), -1).any(axis=1)
        truth = has if truth is None else (truth | has)
    return truth


def _no_normal_note(items: Images, normal_values: list[str] | None) -> str:
    """Why image AUROC is n/a when no input image counts as normal, and the --normal that would fix it."""
    found = sorted({lab for lab in items.labels if lab})
    if not found:
        return "no input image counts as normal (no labels, and every image has a lesion mask): image AUROC needs normals"
    guess = next((lab for lab in found if lab.lower() in ("normal", "healthy", "none")), None)
    hint = f"; pass --normal {guess}" if guess else "; pass --normal LABEL naming the normal ones"
    return (f"no input image counts as normal (normal labels: {', '.join(normal_values or []) or 'none given'}; "
            f"labels found: {', '.join(found)}){hint}")


def _noise_levels(noise_level) -> tuple[float, ...]:
    """The levels asked for; ``auto``: every candidate of :data:`tuning.NOISE_CANDIDATES` (one set is chosen later)."""
    if isinstance(noise_level, str) and noise_level.strip().lower() == "auto":
        return tuning.NOISE_CANDIDATES
    text = noise_level if isinstance(noise_level, str) else ",".join(str(v) for v in np.atleast_1d(noise_level))
    try:
        levels = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"bad --noise-level '{noise_level}': expected numbers in (0, 1], comma-separated") from None
    if not levels or not all(0 < v <= 1 for v in levels):
        raise UserError(f"--noise-level must be in (0, 1] (one value or several, comma-separated), got {noise_level}")
    return levels


def _diffusion_sampler(model, sampler: str | None) -> str:
    """The sampler that walks a diffusion detector back: the one asked for, which must be one of the
    model's (its training objective decides: ddpm | ddim for a noise model, rflow | rflow-heun for a
    rectified flow), or by default the deterministic one, ddim or rflow."""
    offered = tuple(model.samplers)
    if sampler is None:
        return next((s for s in ("ddim", "rflow") if s in offered), offered[0] if offered else "ddim")
    if offered and sampler not in offered:
        raise UserError(f"unknown --sampler '{sampler}' for this run; choose one of {', '.join(offered)}")
    return sampler


def detect(run, input=None, masks=None, out=None, threshold="fpr:0.05", split="test", map="abs", smooth: float | None = None,
           score: str | None = None, noise_level: float | str = 0.1, force=False, echo=print, *, top_percent: float | None = None,
           foreground: float | None = 0.05, detector: str = "auto", steps: int | None = 10, sampler: str | None = None, draws: int = 8,
           normal: str | list[str] | None = None, batch_size: int = 16, seed: int = 0, ssim_window: int = 7,
           device: str | None = None, figure_items: int = 8, memory: int = 2048, neighbours: int = 1,
           edge_margin: float | None = None, tune: str = "auto", patch: float | None = None) -> dict:
    """Score and localise anomalies with a trained run; returns the metrics dict (also written to disk).

    ``input``: None (the run's own dataset, ``split``), a prepared dataset folder (its ``split``;
    ``all`` for every item) or a folder of images (class sub-folders become labels; ``masks``: a
    folder of mask files with the same names). ``threshold``: ``fpr:A`` or ``value:X``.
    ``map``: abs | ssim | combined; ``smooth``: Gaussian sigma in pixels (0 = off); ``score``:
    mean | max | top-percentile (``top_percent`` %); None for any of these four scoring settings
    (with ``edge_margin``) = the detector's own (``Detector.scoring``: smooth 3, top 5 %, no margin;
    the segmenter's probability map: smooth 1, max); ``foreground``: input threshold of the region
    that is scored (None = every pixel). Diffusion runs: ``noise_level`` = t_start / T (several,
    comma-separated: maps averaged), ``steps`` reverse steps (None = all), ``sampler`` one of the run's samplers (default: ddim, or rflow for a rectified flow).
    PatchCore: ``memory`` patches kept, ``neighbours`` k. ``normal``: labels counted as normal
    (default: the run's ``--subset label=...``). ``patch``: diffusion detector, rebuild one patch of
    this fraction of the image side at a time from its surroundings (pDDPM-style). ``edge_margin``: pixels of the foreground rim left
    out of the image score. ``tune``: ``synthetic`` replaces smooth / score / top_percent /
    edge_margin by the candidate that best separates the normal validation images from copies with
    a synthetic lesion (:mod:`medgen.anomaly.tuning`), ``none`` keeps them, ``auto`` = synthetic
    for the detectors whose maps have no natural scale (patchcore, padim), none for the others.
    """
    from medgen.anomaly import scoring
    from medgen.models.conv_ae import restoring_from_checkpoint
    from medgen.sampling import load_run_model

    t0 = time.time()
    rule = thresholds.parse_rule(threshold)
    if map not in scoring.MAP_TYPES:
        raise UserError(f"unknown --map '{map}'; choose one of {', '.join(scoring.MAP_TYPES)}")
    if score is not None and score not in scoring.SCORE_TYPES:
        raise UserError(f"unknown --score '{score}'; choose one of {', '.join(scoring.SCORE_TYPES)}")
    if top_percent is not None and not 0 < top_percent <= 100:
        raise UserError(f"--top-percent must be in (0, 100], got {top_percent}")
    if smooth is not None and smooth < 0:
        raise UserError("--smooth must be >= 0")
    noise_levels = _noise_levels(noise_level)
    if steps is not None and steps < 1:
        raise UserError("--steps must be >= 1")
    if draws < 1:
        raise UserError("--draws must be >= 1")
    if patch is not None and not 0 < patch <= 1:
        raise UserError(f"--patch must be a fraction of the image side in (0, 1], got {patch}")
    if memory < 1 or neighbours < 1:
        raise UserError("--memory and --neighbours must be >= 1")
    if edge_margin is not None and edge_margin < 0:
        raise UserError("--edge-margin must be >= 0")
    if tune not in TUNE_MODES:
        raise UserError(f"unknown --tune '{tune}'; choose one of {', '.join(TUNE_MODES)}")
    with restoring_from_checkpoint():
        cfg, model, rundir = load_run_model(run, device)
    run_data = rundir.data()
    info = model.info
    detector = registry.choose(model, detector)
    sampler = _diffusion_sampler(model, sampler)
    det = registry.detector_class(detector)(model, Settings(
        map=map, ssim_window=ssim_window, noise_levels=noise_levels, steps=steps, sampler=sampler, draws=draws,
        memory=memory, neighbours=neighbours, batch_size=batch_size, seed=seed, patch=patch))
    if patch is not None and detector != "diffusion":
        raise UserError(f"--patch is for the diffusion detector; this run uses {detector}")
    if patch is not None and (sampler not in ("ddim", "ddpm")):
        raise UserError(f"--patch needs the ddim or ddpm sampler (the run samples with {sampler})")
    own = det.scoring  # what the caller left unset comes from the detector
    smooth = own.smooth if smooth is None else smooth
    score = own.score if score is None else score
    top_percent = own.top_percent if top_percent is None else top_percent
    edge_margin = own.edge_margin if edge_margin is None else edge_margin
    subset = run_data.get("subset") or {}
    normal_values = _normal_values(normal, subset)

    # inputs
    run_ds = Path(run_data.get("dataset", "")) if run_data.get("dataset") else None
    if input is None:
        if run_ds is None or not is_prepared_dataset(run_ds):
            raise UserError("the run's dataset is not available; give --input DIR", run_ds or rundir.root)
        if masks is not None:
            raise UserError("--masks is for a folder of images given with --input")
        items = _from_prepared(run_ds, split, None, split or "all")
    else:
        path = Path(input)
        if not path.exists():
            raise UserError("input not found", path)
        if path.is_dir() and is_prepared_dataset(path):
            if masks is not None:
                raise UserError("--masks is for a folder of images; a prepared dataset has its own masks", masks)
            items = _from_prepared(path, split, None, f"{path.name}-{split or 'all'}")
        elif path.is_dir():
            keep = {"keep_aspect": True}
            if run_ds is not None and is_prepared_dataset(run_ds):
                from medgen.data.dataset import PreparedDataset

                keep["keep_aspect"] = bool(PreparedDataset(run_ds).stats.get("keep_aspect", True))
            items = _from_folder(path, Path(masks) if masks else None, {**run_data, **keep}, info)
        else:
            raise UserError("--input must be a prepared dataset or a folder of images", path)
    if tuple(items.images.shape[1:]) != (info.channels, *info.size):
        raise UserError(f"input images are {tuple(items.images.shape[1:])} but the run was trained on "
                        f"{(info.channels, *info.size)} (prepare the data at the run's size)", items.source)

    out_dir = Path(out) if out else rundir.root / "detect" / items.name
    with output_folder_lock(out_dir, "detect output folder"):  # held from the "already exists" check to the last write
        if out_dir.exists() and (out_dir.is_file() or any(out_dir.iterdir())) and not force:
            raise UserError("detect output folder already exists; use --force to replace it or --out for another", out_dir)

        model_info = {"family": cfg.model.family, **model.describe()}
        echo(f"detector: {det.headline()} ({cfg.model.family})")
        if "encoder_weights" in model_info:
            echo(f"encoder weights: {model_info['encoder_weights']}")

        # fitting on normal training images (feature memories), calibration on normal validation images
        if det.fits_on_normals:
            if run_ds is None or not is_prepared_dataset(run_ds):
                raise UserError(f"--detector {detector} learns from the run's normal training images, but its dataset is "
                                "not available", run_ds or rundir.root)
            det.fit(_from_prepared(run_ds, run_data.get("train_split", "train"), subset, "normal-train").images, echo)
        calib = None
        if run_ds is not None and is_prepared_dataset(run_ds):
            try:
                calib = _from_prepared(run_ds, run_data.get("val_split", "val"), subset, "normal-val")
            except UserError:
                calib = None
        image_thr, pixel_thr = None, None
        calib_scores = None
        calib_info = {"source": None}
        tuned, tune_notes = None, []
        auto_levels = isinstance(noise_level, str) and noise_level.strip().lower() == "auto"
        if auto_levels and (detector != "diffusion" or calib is None or calib.images.ndim != 4 or len(calib.images) < tuning.MIN_NORMALS):
            raise UserError(f"--noise-level auto needs the diffusion detector and at least {tuning.MIN_NORMALS} normal 2D validation images "
                            "in the run's dataset; give the levels, e.g. --noise-level 0.1")
        if calib is not None:
            lesioned, lesion_raw = None, None
            if auto_levels:
                from medgen.anomaly.synthetic import add_lesions

                lesioned, _ = add_lesions(calib.images, seed + 2)
                normal_levels, _ = det.run_levels(calib.images, seed + 1, "calibrate (normal val)")
                lesion_levels, _ = det.run_levels(lesioned, seed + 3, "tune (normal val + synthetic lesions)")
                t_of = {v: tuning_t for v, tuning_t in zip(det.settings.noise_levels, det.t_starts)}
                chosen, level_record = tuning.choose_noise_levels(
                    normal_levels, calib.images, lesion_levels, lesioned, t_of, foreground,
                    tuning.Scoring(smooth, score, top_percent, edge_margin))
                det.use_levels(chosen, tuning.level_scales(normal_levels, calib.images, foreground))
                raw, lesion_raw = det.combine(normal_levels), det.combine(lesion_levels)
                echo(f"noise levels chosen on normal validation images with synthetic lesions: {', '.join(str(v) for v in chosen)} "
                     f"(synthetic-lesion image AUROC {level_record['synthetic_auroc']:.3f})")
            else:
                raw = det.run(calib.images, seed + 1, "calibrate (normal val)").maps
            if tune == "synthetic" or (tune == "auto" and det.tunes_by_default):
                tuned, tune_note = _tune(det, calib, raw, tuning.Scoring(smooth, score, top_percent, edge_margin),
                                         foreground, seed, echo, lesioned, lesion_raw)
                if tuned is not None:
                    choice = tuning.Scoring(**tuned["chosen"])
                    smooth, score, top_percent, edge_margin = choice.smooth, choice.score, choice.top_percent, choice.edge_margin
                if tune_note:
                    tune_notes.append(tune_note)
            cmaps, cfg_fg = scoring.postprocess(raw, calib.images, smooth, foreground)
            calib_scores = scoring.image_scores(cmaps, score, top_percent, scoring.scoring_region(cfg_fg, edge_margin))
            calib_pixels = cmaps.ravel() if cfg_fg is None else cmaps[cfg_fg]
            calib_pixels = thresholds.subsample(calib_pixels, 5_000_000, seed)
            calib_info = {"source": calib.source, "n": len(calib.images), "subset": subset,
                          "score_mean": float(calib_scores.mean()), "score_std": float(calib_scores.std())}
            if rule.kind == "fpr":
                image_thr = thresholds.threshold_at_fpr(calib_scores, rule.value)
                pixel_thr = thresholds.threshold_at_fpr(calib_pixels, rule.value)
        if rule.kind == "value":
            image_thr = pixel_thr = float(rule.value)
        if image_thr is None:
            raise UserError(f"--threshold {rule} needs the run's normal validation images ({run_ds}); give --threshold value:X")
        settings = {"detector": detector, "smooth": smooth, "score": score,
                    "top_percent": top_percent if score == "top-percentile" else None, "foreground": foreground,
                    "edge_margin": edge_margin, "threshold_rule": str(rule), **det.record(),
                    "tuning": tuned if tuned is not None else {"mode": tune, "applied": False}}
        if auto_levels:
            settings["noise_level_choice"] = level_record

        # the input
        output = det.run(items.images, seed, f"detect ({items.name})")
        maps, fg = scoring.postprocess(output.maps, items.images, smooth, foreground)
        scores = scoring.image_scores(maps, score, top_percent, scoring.scoring_region(fg, edge_margin))
        predicted = scores > image_thr
        truth = _anomalous(items, normal_values)

        result: dict = {"run": str(rundir.root), "input": items.source, "input_name": items.name, "n": len(scores),
                        "settings": settings, "model": model_info, "normal_labels": normal_values,
                        "calibration": calib_info,
                        "threshold": {"rule": str(rule), "image": image_thr, "pixel": pixel_thr,
                                      "target_fpr": rule.value if rule.kind == "fpr" else None},
                        "predicted_anomalous": int(predicted.sum())}
        if truth is not None:
            result["image"] = {**image_metrics(scores, truth, image_thr), **uncertainty.image_intervals(scores, truth, image_thr, seed)}
            if any(items.labels) and normal_values is not None:
                result["image"]["by_label"] = _by_label(scores, items.labels, normal_values, predicted)
        if items.masks is not None and items.masks.any():
            result["pixel"] = pixel_metrics(maps, items.masks, pixel_thr, None, seed=seed)
            result["pixel"]["region"] = "all pixels"
            if fg is not None:
                result["pixel_foreground"] = pixel_metrics(maps, items.masks, pixel_thr, fg, seed=seed)
                result["pixel_foreground"]["region"] = f"foreground (input > {foreground})"
            if truth is not None and maps.size <= PIXEL_INTERVAL_LIMIT:
                result["pixel_foreground" if fg is not None else "pixel"].update(
                    uncertainty.pixel_intervals(maps, items.masks, fg, truth, seed))
        result["notes"] = list(items.notes) + tune_notes
        if truth is not None and truth.all():
            result["notes"].append(_no_normal_note(items, normal_values))
        if calib is not None and input is None and split == run_data.get("val_split", "val"):
            result["notes"].append("the scored split is the one whose normal images set the threshold: its FPR is not held-out")
        if calib is not None and not subset:
            result["notes"].append("the run has no training subset: its whole validation split (anomalies included, if any) "
                                   "set the threshold; train with --subset label=NORMAL")
        result["seconds"] = round(time.time() - t0, 1)

        # files
        if out_dir.is_file():
            raise UserError("--out is a file", out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "maps.npy", maps.astype(np.float32))
        with open(out_dir / "scores.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "label", "score", "predicted", "anomalous"])
            for i in range(len(scores)):
                w.writerow([spreadsheet_safe(items.ids[i]), spreadsheet_safe(items.labels[i]), f"{scores[i]:.6g}", int(predicted[i]),
                            "" if truth is None else int(truth[i])])
        from medgen.anomaly.figures import detection_figure, score_histogram

        fig = detection_figure(items, output.reconstructions, maps, scores, predicted, truth, pixel_thr,
                               out_dir / "figure.png", figure_items, title=f"{rundir.root.name}: {detector}" + (f", {map} map" if "map" in settings else ""))
        hist = score_histogram(scores, truth, calib_scores, image_thr, out_dir / "scores.png",
                               title=f"{rundir.root.name} on {items.name}: {score} scores, threshold {rule}")
        result["files"] = {"metrics": "metrics.json", "scores": "scores.csv", "maps": "maps.npy",
                           "figure": fig.name, "histogram": hist.name}
        result["output"] = str(out_dir)
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default))

        section = rundir.metrics().get("anomaly") or {}
        by_input = dict(section.get("by_input") or {})
        by_input[items.name] = _summary(result)
        rundir.update_metrics("anomaly", {**{k: v for k, v in result.items() if k != "notes"}, "by_input": by_input})
        _echo_summary(result, echo)
        return result


def _tune(det, calib: Images, raw: np.ndarray, given: tuning.Scoring, foreground, seed: int, echo,
          lesioned: np.ndarray | None = None, lesion_raw: np.ndarray | None = None) -> tuple[dict | None, str | None]:
    """(tuning record or None, a note): the scoring chosen on normal validation images with synthetic lesions."""
    from medgen.anomaly.synthetic import add_lesions

    if calib.images.ndim != 4:
        return None, "--tune synthetic draws 2D lesions: skipped for volumes, the given scoring settings are used"
    if len(calib.images) < tuning.MIN_NORMALS:
        return None, f"--tune synthetic needs at least {tuning.MIN_NORMALS} normal validation images (the run has {len(calib.images)}): skipped"
    if lesion_raw is None:
        lesioned, _ = add_lesions(calib.images, seed + 2)
        lesion_raw = det.run(lesioned, seed + 3, "tune (normal val + synthetic lesions)").maps
    best, record = tuning.choose(raw, calib.images, lesion_raw, lesioned, foreground, given)
    record["mode"], record["applied"] = "synthetic", True
    echo(f"scoring chosen on normal validation images with synthetic lesions: {best.label()} "
         f"(synthetic-lesion image AUROC {record['synthetic_auroc']:.3f}; given settings "
         f"{record['synthetic_auroc_of_given_settings']:.3f})")
    return record, None


def _by_label(scores, labels, normal_values, predicted) -> dict:
    out = {}
    labels = np.asarray(labels)
    normal = np.isin(labels, normal_values)
    for lab in sorted(set(labels.tolist())):
        sel = labels == lab
        entry = {"n": int(sel.sum()), "flagged": float(predicted[sel].mean()), "score_mean": float(scores[sel].mean())}
        if lab not in normal_values and normal.any():
            entry.update(image_metrics(np.r_[scores[normal], scores[sel]], np.r_[np.zeros(normal.sum(), bool), np.ones(sel.sum(), bool)]))
            entry = {k: entry[k] for k in ("n", "flagged", "score_mean", "auroc", "auprc")}
            entry["n"] = int(sel.sum())
        out[lab] = entry
    return out


def _summary(result: dict) -> dict:
    s = {"settings": result["settings"], "threshold": result["threshold"], "n": result["n"], "output": result.get("output")}
    for key in ("image", "pixel", "pixel_foreground"):
        if key in result:
            s[key] = {k: v for k, v in result[key].items() if not isinstance(v, dict)}
    return s


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(d: dict, key: str) -> str:
    c = d.get(f"{key}_interval")
    return f" [{c['low']:.3f}, {c['high']:.3f}]" if c else ""


def _echo_summary(r: dict, echo) -> None:
    thr = r["threshold"]
    echo(f"threshold ({thr['rule']} on {r['calibration'].get('n', 0)} normal validation images): "
         f"image {thr['image']:.4g}, pixel {thr['pixel']:.4g}")
    if "image" in r:
        i = r["image"]
        echo(f"image: AUROC {_fmt(i['auroc'])}{_ci(i, 'auroc')}  AUPRC {_fmt(i['auprc'])}  FPR on held-out normals {_fmt(i.get('fpr_at_threshold'))}"
             f"  sensitivity {_fmt(i.get('sensitivity_at_threshold'))}  ({i['n_anomalous']} anomalous / {i['n_normal']} normal)")
    for key in ("pixel", "pixel_foreground"):
        if key in r:
            p = r[key]
            echo(f"pixel ({p['region']}): AUROC {_fmt(p['auroc'])}{_ci(p, 'auroc')}  AUPRC {_fmt(p['auprc'])}  "
                 f"best Dice {_fmt(p['dice_best'])}{_ci(p, 'dice_best')}  Dice at threshold {_fmt(p.get('dice_at_threshold'))}")
    for note in r.get("notes", []):
        echo(f"note: {note}")
    echo(f"results: {r['output']} ({r['seconds']} s)")
