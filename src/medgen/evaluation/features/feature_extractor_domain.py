"""``domain[:FILE]``: the offline default, a small CNN trained on the real training images of the
dataset (:mod:`medgen.evaluation.domain`): a classifier when there are >= 2 labels, else an
autoencoder. Trained once per dataset and cached; ``FILE`` loads a given cached
``domain-*.safetensors``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from medgen.errors import UserError
from medgen.evaluation.features.base import FeatureExtractor

USAGE = "domain"


def build(arg: str | None, *, domain_factory: Callable[[str | None], FeatureExtractor] | None = None, device: Any = None,
          **_: Any) -> FeatureExtractor:
    """``domain_factory`` trains (or reuses) the extractor on the images the orchestration chose."""
    if arg:
        from medgen.evaluation.domain import load_domain_extractor

        return load_domain_extractor(Path(arg).expanduser(), device=device)
    if domain_factory is None:
        raise UserError("the 'domain' feature extractor needs training images (a run or a prepared dataset), "
                        "or a cached file: --features domain:PATH")
    return domain_factory(arg)
