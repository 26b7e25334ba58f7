"""``medgen compare``: a thin Typer layer over :func:`medgen.compare.compare`.

Registered in cli.py with ``app.command("compare")(compare_cmd)``; UserError becomes exit code 2 there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer


def compare_cmd(
    runs: List[Path] = typer.Argument(..., metavar="RUN_A RUN_B [RUN ...]", help="Evaluated runs (medgen evaluate stored their features)."),
    features: str = typer.Option("domain", "--features", help="Which stored features to compare on (an extractor name used by medgen evaluate)."),
    resamples: int = typer.Option(1000, "--resamples", min=10, help="Bootstrap resamples."),
    level: float = typer.Option(0.95, "--level", min=0.5, max=0.999, help="Interval level."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap (results are reproducible)."),
    power: float = typer.Option(0.8, "--power", min=0.5, max=0.99, help="Power at which the smallest detectable difference is given."),
    write: bool = typer.Option(True, "--write/--no-write", help="Add the result to each run's metrics.json (section 'compare') for its report."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Is run A better than run B? Paired bootstrap of each metric's difference -> verdict per metric."""
    from medgen.compare import compare, format_table

    result = compare(runs, features=features, n_resamples=resamples, level=level, seed=seed, power=power, write=write)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo(format_table(result))
