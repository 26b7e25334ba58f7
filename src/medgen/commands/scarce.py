"""``medgen scarce``: a thin Typer layer over :func:`medgen.scarce.run.scarce_benchmark`.

Registered in cli.py with ``app.command("scarce")(scarce_cmd)``; UserError becomes exit code 2 there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def scarce_cmd(
    run: Path = typer.Argument(..., metavar="RUN", help="A generator run (class-conditional, or trained on the class only)."),
    class_name: str = typer.Option(..., "--class", help="The scarce class (a label of the run's dataset)."),
    k: int = typer.Option(..., "--k", min=1, help="Real training images of the class kept (every one the generator saw is among them)."),
    seeds: int = typer.Option(5, "--seeds", min=2, help="Classifier seeds per training set."),
    n_add: Optional[int] = typer.Option(None, "--n-add", min=0, help="Images of the class added in each topped-up set (default: back to the class's full training count)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Sampler for the synthetic images (default: the run's)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampling steps (default: the run's)."),
    resamples: int = typer.Option(1000, "--resamples", min=10, help="Bootstrap resamples of the intervals."),
    force: bool = typer.Option(False, "--force", help="Replace an existing RUN/scarce/CLASS-K<K>.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (progress goes to stderr)."),
) -> None:
    """Scarce-class benchmark: cut to K, then + classical augmentation / + synthetic / + both, with intervals and verdicts."""
    from medgen.scarce.run import format_scarce_table, scarce_benchmark

    echo = (lambda m="": typer.echo(m, err=True)) if as_json else typer.echo
    result = scarce_benchmark(run, class_name, k, seeds=seeds, n_add=n_add, sampler=sampler, steps=steps,
                              n_resamples=resamples, force=force, echo=echo)
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else format_scarce_table(result))
