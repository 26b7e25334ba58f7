"""``medgen detect``: a thin Typer layer over :func:`medgen.anomaly.detect`.

Registered in cli.py with ``app.command("detect")(detect_cmd)``; UserError becomes exit code 2 there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from medgen.anomaly.detectors import names as detector_names


def detect_cmd(
    run: Path = typer.Argument(..., help="A trained run (conv-ae, vae, vae-gan, ldm: reconstruction; ddpm: AnoDDPM-style diffusion; patch-features: patchcore, padim; selfsup-anomaly: segmenter)."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="A prepared dataset folder or a folder of images (class sub-folders become labels). Default: the run's own dataset."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="With a folder of images: a folder of mask files with the same names (lesion = non-zero)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN/detect/<input-name>)."),
    threshold: str = typer.Option("fpr:0.05", "--threshold", help="fpr:RATE = the (1-RATE) quantile of the run's normal validation scores (and pixels); value:X = fixed."),
    split: str = typer.Option("test", "--split", help="Split of a prepared dataset to score (train, val, test, all)."),
    map_type: str = typer.Option("abs", "--map", help="Anomaly map: abs (|x - reconstruction|), ssim (1-SSIM)/2, combined (their mean)."),
    smooth: Optional[float] = typer.Option(None, "--smooth", min=0.0, help="Gaussian smoothing of the map, sigma in pixels (0 = off); lesions are blobs, normal reconstruction errors are scattered. Default: the detector's (3; segmenter 1)."),
    score: Optional[str] = typer.Option(None, "--score", help="Image score from its map: mean, max, top-percentile (mean of the top --top-percent %). Default: the detector's (top-percentile; segmenter max)."),
    top_percent: Optional[float] = typer.Option(None, "--top-percent", help="Percent of pixels averaged by --score top-percentile. Default: 5."),
    edge_margin: Optional[float] = typer.Option(None, "--edge-margin", min=0.0, help="Leave a rim of this many pixels inside the foreground edge out of the image score (the maps of normal images peak at the brain outline). Default: 0."),
    tune: str = typer.Option("auto", "--tune", help="synthetic: choose --smooth/--score/--top-percent/--edge-margin on the normal validation images with synthetic small lesions drawn in (no real lesion is used); none: keep the given ones; auto: synthetic for patchcore/padim, none otherwise."),
    foreground: str = typer.Option("0.05", "--foreground", help="Score only pixels where the input is above this (the black background is left out); 'none' = every pixel."),
    noise_level: str = typer.Option("0.1", "--noise-level", help="Diffusion detector: noise up to this fraction of the timesteps (0.1 = t 100 of 1000), then denoise (AnoDDPM: 0.25); several, comma-separated (0.05,0.1,0.2): their maps are averaged; auto: the set of 0.05/0.1/0.2 that best separates the normal validation images from copies with synthetic lesions, each level's map divided by its normal mean."),
    steps: Optional[int] = typer.Option(10, "--steps", min=1, help="Diffusion detector: reverse steps from t_start to 0, evenly respaced (--all-steps: every timestep)."),
    all_steps: bool = typer.Option(False, "--all-steps", help="Diffusion detector: walk every timestep from t_start to 0 (AnoDDPM; slow on CPU)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Diffusion detector: ddim (deterministic, the default) or ddpm (stochastic, AnoDDPM); a rectified-flow run: rflow (the default) or rflow-heun."),
    patch: Optional[float] = typer.Option(None, "--patch", help="Diffusion detector, pDDPM-style: rebuild one patch at a time (its side this fraction of the image side; the patches tile the image) from the rest of the image, which stays the input at the same noise level. Lets a heavier --noise-level erase a lesion without losing the anatomy; one reverse walk per patch (16 at 0.25)."),
    draws: int = typer.Option(8, "--draws", min=1, help="Diffusion detector: average this many reconstructions, each from its own noise (the map sharpens; time grows in proportion; 1 = fastest)."),
    detector: str = typer.Option("auto", "--detector", help="auto (the run's preferred one) or one of: " + ", ".join(detector_names()) + "."),
    memory: int = typer.Option(2048, "--memory", min=1, help="PatchCore: normal patches kept in the memory bank (greedy coreset)."),
    neighbours: int = typer.Option(1, "--neighbours", min=1, help="PatchCore: a patch's score is the mean distance to this many nearest normal patches."),
    normal: Optional[str] = typer.Option(None, "--normal", help="Labels that count as normal, comma-separated (default: the run's --subset label=...)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed of the diffusion detector's noise."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON (messages go to stderr)."),
) -> None:
    """Anomaly maps, scores and thresholds; AUROC/AUPRC/Dice where labels or masks exist -> metrics.json, scores.csv, figures."""
    from medgen.anomaly.detect import detect
    from medgen.errors import UserError

    fg = None if foreground.strip().lower() in ("none", "off", "") else _float(foreground, "--foreground")

    def echo(msg: str = "") -> None:
        from medgen.progress import is_quiet

        if not is_quiet():
            typer.echo(msg, err=as_json)

    if all_steps and steps not in (None, 10):
        raise UserError("give either --steps N or --all-steps")
    result = detect(run, input=input, masks=masks, out=out, threshold=threshold, split=split, map=map_type, smooth=smooth,
                    score=score, noise_level=noise_level, force=force, echo=echo, top_percent=top_percent, foreground=fg,
                    detector=detector, steps=None if all_steps else steps, sampler=sampler, draws=draws, patch=patch, normal=normal,
                    batch_size=batch_size, seed=seed, memory=memory, neighbours=neighbours,
                    edge_margin=edge_margin, tune=tune)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))


def _float(text: str, option: str) -> float:
    from medgen.errors import UserError

    try:
        return float(text)
    except ValueError:
        raise UserError(f"bad {option} '{text}': expected a number or 'none'") from None
