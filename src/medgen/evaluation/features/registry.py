"""Feature extractors by name, as torch-fidelity's registry: one ``feature_extractor_*.py`` module per
extractor, one registration line at the bottom of this file.

A module provides ``build(arg, *, domain_factory=None, device=None, **_) -> FeatureExtractor``
(``arg`` is what follows the colon in ``--features NAME:ARG``) and ``USAGE`` (how ``--features``
names it, for help texts). The order of registration is the order in messages and help texts.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from medgen.errors import UserError
from medgen.evaluation.features.base import FeatureExtractor

__all__ = ["extractor_names", "extractor_usage", "get_extractor", "parse_feature_specs", "register_feature_extractor"]


@dataclass(frozen=True)
class _Entry:
    build: Callable[..., FeatureExtractor]
    usage: str


_REGISTRY: dict[str, _Entry] = {}


def register_feature_extractor(name: str, build: Callable[..., FeatureExtractor], usage: str | None = None) -> None:
    if name in _REGISTRY:
        raise ValueError(f"feature extractor '{name}' is registered twice")
    _REGISTRY[name] = _Entry(build, usage or name)


def extractor_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def extractor_usage() -> str:
    """'domain, radiomics[:foreground], inception:FILE, ...' for help texts."""
    return ", ".join(e.usage for e in _REGISTRY.values())


def parse_feature_specs(spec: str | Sequence[str] | None) -> list[tuple[str, str | None]]:
    """'domain' / 'inception:/w/pt.pth' / 'domain,radiomics' -> [(name, arg or None), ...]."""
    if spec is None:
        return [("domain", None)]
    names = extractor_names()
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not parts:
        raise UserError("--features is empty; choose from " + ", ".join(names))
    out = []
    for part in parts:
        name, sep, arg = part.partition(":")
        name = name.strip().lower()
        if name not in _REGISTRY:
            hint = difflib.get_close_matches(name, names, n=1)
            raise UserError(f"unknown feature extractor '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                            + f"; choose from {', '.join(names)} (NAME or NAME:PATH)")
        out.append((name, arg.strip() or None if sep else None))
    chosen = [n for n, _ in out]
    if len(set(chosen)) != len(chosen):
        raise UserError(f"--features names an extractor twice: {','.join(chosen)}")
    return out


def get_extractor(name: str, arg: str | None = None, *, domain_factory: Callable[[str | None], FeatureExtractor] | None = None,
                  device: Any = None) -> FeatureExtractor:
    """Build the extractor ``name``. ``domain`` needs ``domain_factory`` (the orchestration knows which
    training images to use); it is called with ``arg``."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UserError(f"unknown feature extractor '{name}'; choose from {', '.join(extractor_names())}")
    return entry.build(arg, domain_factory=domain_factory, device=device)


# ---- registrations: one line per extractor module ----------------------------------------------
from medgen.evaluation.features import (  # noqa: E402 - the modules register after the registry exists
    feature_extractor_domain,
    feature_extractor_inception,
    feature_extractor_radimagenet,
    feature_extractor_radiomics,
    feature_extractor_resnet50,
)

register_feature_extractor("domain", feature_extractor_domain.build, feature_extractor_domain.USAGE)
register_feature_extractor("inception", feature_extractor_inception.build, feature_extractor_inception.USAGE)
register_feature_extractor("resnet50", feature_extractor_resnet50.build, feature_extractor_resnet50.USAGE)
register_feature_extractor("radimagenet", feature_extractor_radimagenet.build, feature_extractor_radimagenet.USAGE)
register_feature_extractor("radiomics", feature_extractor_radiomics.build, feature_extractor_radiomics.USAGE)
