"""Metric groups by name: one module per group, one registration line at the bottom of this file.

The order of registration is the order of ``--metrics`` help, of metrics.json's ``metrics`` list,
of the summary and of the terminal table.
"""
from __future__ import annotations

from typing import Sequence

from medgen.errors import UserError
from medgen.evaluation.groups.base import MetricGroup

__all__ = ["all_groups", "get_group", "group_names", "metrics_help", "parse_groups", "register_group"]

_REGISTRY: dict[str, MetricGroup] = {}


def register_group(group: MetricGroup) -> None:
    if not group.name or group.name in _REGISTRY:
        raise ValueError(f"metric group '{group.name}' is unnamed or registered twice")
    _REGISTRY[group.name] = group


def get_group(name: str) -> MetricGroup:
    return _REGISTRY[name]


def all_groups() -> list[MetricGroup]:
    return list(_REGISTRY.values())


def group_names(in_all_only: bool = False) -> tuple[str, ...]:
    return tuple(g.name for g in _REGISTRY.values() if g.in_all or not in_all_only)


def metrics_help() -> str:
    return f"Comma list of groups: {', '.join(group_names())}, all (default: the run's evaluate.metrics)."


def parse_groups(metrics: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """'fidelity,utility' / ['all'] -> registered names in registration order; 'all' means every
    group that ``in_all`` (the others are named, or asked for with their own option)."""
    items = default if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
    names = [p.strip().lower() for item in items for p in str(item).split(",") if p.strip()]
    if "all" in names:
        names = [n for n in names if n != "all"] + list(group_names(in_all_only=True))
    bad = [n for n in names if n not in _REGISTRY]
    if bad:
        raise UserError(f"unknown metric group(s) {', '.join(bad)}; choose from {', '.join(group_names())}, all")
    return [g for g in group_names() if g in names]


# ---- registrations: one line per group module ---------------------------------------------------
from medgen.evaluation.groups.distribution import Distribution  # noqa: E402
from medgen.evaluation.groups.fidelity import Fidelity  # noqa: E402
from medgen.evaluation.groups.intensity import Intensity  # noqa: E402
from medgen.evaluation.groups.memorisation import Memorisation  # noqa: E402
from medgen.evaluation.groups.reconstruction import Reconstruction  # noqa: E402
from medgen.evaluation.groups.seg_utility import SegUtility  # noqa: E402
from medgen.evaluation.groups.sensitivity import Sensitivity  # noqa: E402
from medgen.evaluation.groups.utility import Utility  # noqa: E402

register_group(Reconstruction())
register_group(Fidelity())
register_group(Distribution())
register_group(Sensitivity())
register_group(Intensity())
register_group(Memorisation())
register_group(Utility())
register_group(SegUtility())
