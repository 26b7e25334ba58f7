"""Feature extractors for distribution metrics (FID/KID/PRDC) and feature-space memorisation.

Every extractor maps a batch of images ``(N, C, *spatial)`` in [0, 1] to features ``(N, F)`` and
describes itself (:meth:`FeatureExtractor.describe`: name, weights file and its SHA-256, feature
size, preprocessing). Results always name the extractor that produced them; an extractor whose
weights are missing is an error, never silently replaced by another one or by random weights.

One module per extractor (``feature_extractor_NAME.py``, whose docstring says what ``--features
NAME[:ARG]`` means), found by name through :mod:`medgen.evaluation.features.registry`; the 2-D
ImageNet-style networks share :mod:`medgen.evaluation.features.torch_image` (weights lookup in the
torch hub cache, TorchScript and torchvision state dicts, grey-to-RGB, slices of volumes). Several
extractors are comma-separated; the first one is also used for feature-space memorisation.
"""
from __future__ import annotations

from medgen.evaluation.features.base import FeatureExtractor, standardise
from medgen.evaluation.features.feature_extractor_radiomics import RadiomicsExtractor
from medgen.evaluation.features.registry import (
    extractor_names,
    extractor_usage,
    get_extractor,
    parse_feature_specs,
    register_feature_extractor,
)
from medgen.evaluation.features.torch_image import TorchImageExtractor

__all__ = [
    "FeatureExtractor",
    "RadiomicsExtractor",
    "TorchImageExtractor",
    "extractor_names",
    "extractor_usage",
    "get_extractor",
    "parse_feature_specs",
    "register_feature_extractor",
    "standardise",
]
