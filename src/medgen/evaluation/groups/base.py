"""What a metric group is, and what it is given.

A group is one module with one :class:`MetricGroup` subclass, registered by name in
:mod:`medgen.evaluation.groups.registry`. It declares what it needs (``needs``: ``features``,
``pixels``, ``model``, ``training split``) and when it runs (``scope``: ``synthetic`` groups compare
the real set with every synthetic set, one per sweep setting; ``run`` groups run once per
evaluation); ``compute(ctx)`` returns its metrics.json section. The evaluation, the terminal tables,
the HTML report and ``medgen runs`` read a section back only through the same group:
``headline`` (the summary numbers), ``table_rows`` / ``extra_tables`` (the terminal),
``extra_html`` (the report) and ``runs_columns`` (``medgen runs``).

Headline values are dicts ``{"value": v}`` so that a group can add ``"ci": [low, high]`` (and the
method and n it rests on) to any of them without any other module changing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from medgen.data.imageset import ImageSet

__all__ = ["Context", "FeatureCache", "MetricGroup", "RunInputs", "add_row", "feature_ref", "fmt", "fmt_ci", "headline",
           "interval_headline"]


class FeatureCache:
    """Extractors built on first use; features of the real, training and test images computed once per extractor."""

    def __init__(self, specs: list[tuple[str, str | None]], domain_factory: Callable, device: Any, echo: Callable):
        self.specs = specs
        self.domain_factory = domain_factory
        self.device = device
        self.echo = echo
        self._ext: dict = {}
        self._cache: dict = {}

    def names(self) -> list[str]:
        return [n for n, _ in self.specs]

    def get(self, name: str):
        from medgen.evaluation.features import get_extractor

        if name not in self._ext:
            self._ext[name] = get_extractor(name, dict(self.specs)[name], domain_factory=self.domain_factory, device=self.device)
        return self._ext[name]

    def of(self, name: str, key: str, images: np.ndarray) -> np.ndarray:
        if (name, key) not in self._cache:
            self.echo(f"features: {name} of {len(images)} {key} images")
            self._cache[(name, key)] = self.get(name)(images)
        return self._cache[(name, key)]

    def describe(self) -> list[dict]:
        return [self._ext[n].describe() for n in self.names() if n in self._ext]


@dataclass
class RunInputs:
    """What run-scope groups need besides the image sets."""

    family: str | None = None
    batch_size: int = 16
    sample: Any = None                # the run's ``sample`` config (sampler, steps, seed, guidance, batch size)
    cache_dir: Path | None = None     # where generated images are cached
    fingerprint: str | None = None    # the checkpoint's, when the run generates its synthetic images
    given_fake: ImageSet | None = None  # the synthetic set given (--fake, two sets); None when the run generates it
    utility: dict = field(default_factory=dict)  # ratio, mix, seeds, settings
    n_resamples: int = 1000           # bootstrap resamples of every interval (0: no intervals)
    run_dir: Path | None = None       # the run's folder (None when two image sets are compared)
    seg_utility: dict = field(default_factory=dict)  # pairs, k_real, k_runs, seeds, settings, n_synthetic, steps


@dataclass
class Context:
    """Everything a group may use; which parts are set depends on the mode (a run, or two image sets)."""

    real: ImageSet
    features: FeatureCache
    echo: Callable
    fake: ImageSet | None = None          # the synthetic set of this setting (synthetic-scope groups)
    settings: dict = field(default_factory=dict)  # sampler/steps/seed/guidance of this synthetic set
    fig_dir: Path | None = None
    memorisation_sets: tuple | None = None  # (train, test, test_is_the_real_set) of a prepared dataset
    train: ImageSet | None = None          # the real training split (utility)
    test: ImageSet | None = None           # the real test split (utility)
    model: Any = None                      # the run's model (None without a run)
    run: RunInputs = field(default_factory=RunInputs)
    _fake_features: dict = field(default_factory=dict)

    def fake_features(self, name: str) -> np.ndarray:
        if name not in self._fake_features:
            self.echo(f"features: {name} of {len(self.fake)} synthetic images")
            self._fake_features[name] = self.features.get(name)(self.fake.images)
        return self._fake_features[name]

    def counts(self) -> dict:
        return {"n_real": len(self.real), "n_fake": len(self.fake)}


def feature_ref(ext) -> dict:
    """How a section names the extractor behind it (and, for the trained domain CNN, how good it is)."""
    d = {"name": ext.name, "weights": str(ext.weights) if ext.weights else None}
    if getattr(ext, "meta", None):
        d["training"] = {k: v for k, v in ext.describe()["training"].items()
                         if k in ("kind", "val_accuracy", "chance_accuracy", "val_reconstruction_mse", "mean_image_mse")}
    return d


def add_row(table, *cells: Any) -> None:
    """Add a row of plain text to a Rich table (labels like "[domain]" are not Rich markup)."""
    from rich.markup import escape

    table.add_row(*(escape(str(c)) for c in cells))


def headline(value: Any, **extra: Any) -> dict:
    return {"value": value, **extra}


def interval_headline(value: Any, ci: dict | None) -> dict:
    """A headline value with its interval (``ci``: a dict of :mod:`medgen.metrics.intervals`), if any."""
    if not ci:
        return headline(value)
    return headline(value, ci=[ci["low"], ci["high"]], level=ci["level"], method=ci["method"], n=ci["n"],
                    n_resamples=ci["n_resamples"])


def fmt_ci(value: Any, ci: dict | None) -> str:
    """'12.3 [10.9, 14.1]' (or the value alone)."""
    return fmt(value) if not ci else f"{fmt(value)} [{fmt(ci['low'])}, {fmt(ci['high'])}]"


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class MetricGroup:
    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    scope: ClassVar[str] = "synthetic"  # "synthetic": once per synthetic set; "run": once per evaluation
    in_all: ClassVar[bool] = True       # chosen by --metrics all (utility is asked for by name or --utility)
    title: ClassVar[str] = ""           # a phrase for help texts
    #: what the headline numbers mean, by key prefix (the report is read by people who did not write the config)
    meanings: ClassVar[dict[str, str]] = {}

    def compute(self, ctx: Context) -> dict:
        raise NotImplementedError

    def headline(self, section: dict) -> dict[str, dict]:
        """{"fid/domain": {"value": 12.3}, ...}: the numbers for summaries and sweep rows."""
        return {}

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        """(metric, value, settings) rows of the terminal's headline table."""
        return []

    def extra_tables(self, section: dict) -> list:
        """Rich tables of their own (the utility table)."""
        return []

    def extra_html(self, section: dict) -> str:
        """An HTML block for the report beyond the headline rows."""
        return ""

    def runs_columns(self, section: dict) -> dict:
        """The few numbers worth a column in ``medgen runs``."""
        return {}

    def figures(self, section: dict) -> list[str]:
        """Figure files the section wrote."""
        f = section.get("figure") if isinstance(section, dict) else None
        return [f] if f else []
