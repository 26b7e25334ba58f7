"""Evaluation of synthetic images: fidelity, distribution, intensity, memorisation, reconstruction, utility.

``evaluate(...)`` is the entry point (``medgen evaluate`` on the command line). The wing is made of
registries, like ``models/``:

* metric groups, one module each in :mod:`medgen.evaluation.groups` (registered in its
  ``registry.py``), the metric maths in :mod:`medgen.metrics`;
* feature extractors, one ``feature_extractor_*.py`` module each in
  :mod:`medgen.evaluation.features` (registered in its ``registry.py``);
* the small CNNs trained on the data (:mod:`medgen.evaluation.classifier`), used by the offline
  ``domain`` extractor (:mod:`medgen.evaluation.domain`) and the train-on-synthetic /
  test-on-real table (:mod:`medgen.evaluation.utility`).

See docs/evaluation.md, and docs/extending.md for adding a group or an extractor.

These modules import only numpy at module level (torch, scikit-learn, matplotlib and
pyradiomics are imported where they are used), so importing this package stays cheap.
"""
from __future__ import annotations

from medgen.data.imageset import load_image_set

# Bound explicitly: the function `evaluate` must win over the submodule of the same name.
from medgen.evaluation.evaluate import evaluate, summary_tables
from medgen.evaluation.features import get_extractor, parse_feature_specs
from medgen.evaluation.utility import utility_table

__all__ = ["evaluate", "get_extractor", "load_image_set", "parse_feature_specs", "summary_tables", "utility_table"]
