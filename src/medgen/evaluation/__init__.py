"""Evaluation of synthetic images: fidelity, distribution, intensity, memorisation, utility.

``evaluate(...)`` is the entry point (``medgen evaluate`` on the command line); the metric maths
lives in :mod:`medgen.metrics`, the feature extractors in :mod:`medgen.evaluation.features`
(and the offline ``domain`` CNN in :mod:`medgen.evaluation.domain`), the train-on-synthetic /
test-on-real table in :mod:`medgen.evaluation.utility`. See docs/evaluation.md.

These modules import only numpy at module level (torch, scikit-learn, matplotlib and
pyradiomics are imported where they are used), so importing this package stays cheap.
"""
from __future__ import annotations

# Bound explicitly: the function `evaluate` must win over the submodule of the same name.
from medgen.evaluation.evaluate import evaluate, load_image_set, summary_tables
from medgen.evaluation.features import get_extractor, parse_feature_specs
from medgen.evaluation.utility import utility_table

__all__ = ["evaluate", "get_extractor", "load_image_set", "parse_feature_specs", "summary_tables", "utility_table"]
