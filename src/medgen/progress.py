"""Progress bars with ETA (Rich) that every long step uses; silent in quiet mode or when not a TTY
unless forced, so scripts and CI logs stay readable."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    return _QUIET


def console():
    from rich.console import Console

    return Console(stderr=True, quiet=_QUIET)


def _enabled() -> bool:
    if _QUIET:
        return False
    return sys.stderr.isatty() or os.environ.get("MEDGEN_PROGRESS") == "1"


@contextmanager
def progress_bar(description: str, total: int | None):
    """Yields ``advance(n=1, **fields)``; a no-op when progress is disabled."""
    if not _enabled():
        yield lambda n=1, **_: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console(), transient=False) as prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            prog.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total) as advance:
        for item in items:
            yield item
            advance()
