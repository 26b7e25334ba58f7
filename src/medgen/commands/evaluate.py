"""``medgen evaluate``: a thin Typer layer over :func:`medgen.evaluation.evaluate`.

Registered in cli.py with ``app.command("evaluate")(evaluate_cmd)``; UserError becomes exit code 2 there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from medgen.evaluation.features.registry import extractor_usage
from medgen.evaluation.groups.registry import metrics_help
from medgen.samplers import help_text as sampler_help


def evaluate_cmd(
    run: Optional[Path] = typer.Argument(None, metavar="RUN", help="A trained run directory (omit to compare --real with --fake)."),
    real: Optional[str] = typer.Option(None, "--real", help="Real images: a folder, or a prepared dataset (DIR, DIR@SPLIT; default its test split). With a RUN: replaces its test split."),
    fake: Optional[str] = typer.Option(None, "--fake", help="Synthetic images: a folder (e.g. RUN/samples/...) or a prepared dataset (DIR@SPLIT). With a RUN: used instead of generating."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help=metrics_help()),
    features: Optional[str] = typer.Option(None, "--features", help=f"Feature extractor NAME[:PATH]: {extractor_usage()} (domain: the offline default); comma list for several."),
    utility: bool = typer.Option(False, "--utility", help="Add the train-on-real/synthetic/mixed, test-on-real classifier table (conditional runs)."),
    n: Optional[int] = typer.Option(None, "--n", min=2, help="Number of synthetic images (default: min(test split size, evaluate.n_samples or 200))."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help=f"Sampler settings to compare: SAMPLER:STEPS[:GUIDANCE], comma-separated, one synthetic set each (SAMPLER: {sampler_help()}; GUIDANCE: a classifier-free guidance scale for a conditional run, default the run's; 'none' turns the config's sweep off)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (progress goes to stderr)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Without a RUN: output folder for metrics.json and figures (default ./evaluation)."),
    utility_ratio: float = typer.Option(1.0, "--utility-ratio", min=0.0, help="Utility: synthetic images per real training image, per class."),
    utility_mix: float = typer.Option(1.0, "--utility-mix", min=0.0, help="Utility: synthetic images added per real image in the mixed training set."),
    utility_seeds: int = typer.Option(3, "--utility-seeds", min=1, help="Utility: number of seeds (mean and std are reported)."),
    seg_utility: bool = typer.Option(False, "--seg-utility", help="Add the seg_utility group (alone unless --metrics names others): a U-Net trained on real, real+synthetic, synthetic and K real pairs, Dice/HD95 on real test pairs → metrics.json and RUN/evaluation/seg_utility.json."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="--seg-utility: a pairs folder from medgen sample --masks (default: generate on the training masks)."),
    k_real: str = typer.Option("", "--k-real", help="--seg-utility: comma list of K for the K-real-pairs rows; refused unless the generator saw at most K real pairs (see --k-run)."),
    k_run: Optional[List[Path]] = typer.Option(None, "--k-run", metavar="RUN_K", help="--seg-utility: a mask-conditioned run trained on K real pairs only (train --subset id=@FILE); adds the K rows for the K pairs it saw (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Without a RUN: replace the metrics.json an earlier evaluation left in --out."),
    resamples: Optional[int] = typer.Option(None, "--resamples", min=0, help="Bootstrap resamples of the 95 % intervals (default: the run's evaluate.n_resamples, else 1000; 0 = none)."),
) -> None:
    """Fidelity, distribution, intensity, memorisation and utility of synthetic images → metrics.json."""
    from medgen.errors import UserError

    seg_options = None
    if seg_utility or pairs is not None or k_real.strip() or k_run:
        if not seg_utility and "seg_utility" not in (metrics or ""):
            raise UserError("--pairs, --k-real and --k-run are options of --seg-utility")
        if run is None:
            raise UserError("--seg-utility needs a RUN (its dataset gives the real pairs)")
        try:
            ks = tuple(int(k) for k in k_real.split(",") if k.strip())
        except ValueError:
            raise UserError(f"bad --k-real '{k_real}': a comma list of whole numbers, e.g. 4,8,16") from None
        seg_options = {"pairs": pairs, "k_real": ks, "k_runs": list(k_run or []), "seeds": utility_seeds}
        metrics = metrics or "seg_utility"  # a mask-conditioned run has no unconditional samples to compare
    from medgen.evaluation.evaluate import evaluate, summary_tables

    if run is None and (real is None or fake is None):
        raise UserError("give a RUN, or both --real and --fake")
    if run is not None and out is not None:
        raise UserError("--out is for comparing --real with --fake; a RUN's results go to RUN/metrics.json and RUN/evaluation/")
    if run is None:
        from medgen.fsio import refuse_overwrite

        refuse_overwrite(Path(out or "evaluation") / "metrics.json", force, "an earlier evaluation's metrics.json")

    def echo(msg: str = "") -> None:
        from medgen.progress import is_quiet

        if not is_quiet():
            typer.echo(msg, err=as_json)  # with --json, stdout holds only the JSON

    result = evaluate(run=run, real=real, fake=fake, metrics=metrics, features=features, utility=utility, n=n, sweep=sweep,
                      out=out, echo=echo, utility_ratio=utility_ratio, utility_mix=utility_mix, utility_seeds=utility_seeds,
                      n_resamples=resamples, seg_utility=seg_options)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console

    con = Console()
    for table in summary_tables(result):
        con.print(table)
    figures = list(_figures(result))
    if figures:
        con.print("figures: " + ", ".join(figures))
    for note in result.get("notes", []):
        con.print(f"note: {note}")
    con.print(f"results: {result['output']}")


def _figures(result: dict):
    from medgen.evaluation.groups import all_groups

    for group in all_groups():
        section = result.get(group.name)
        if isinstance(section, dict):
            yield from group.figures(section)
    if result.get("sweep_figure"):  # the curve of --sweep
        yield result["sweep_figure"]
