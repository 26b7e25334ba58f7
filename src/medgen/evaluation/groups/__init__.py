"""Metric groups of ``medgen evaluate``, one module each, found through :mod:`.registry`."""
from medgen.evaluation.groups.base import Context, MetricGroup, RunInputs
from medgen.evaluation.groups.registry import all_groups, get_group, group_names, parse_groups, register_group

__all__ = ["Context", "MetricGroup", "RunInputs", "all_groups", "get_group", "group_names", "parse_groups", "register_group"]
