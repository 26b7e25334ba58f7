"""Real and synthetic features of every chosen extractor, z-scored where the extractor asks for it,
with the settings block every feature-space section records."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from medgen.evaluation.groups.base import Context, feature_ref


def feature_pairs(ctx: Context) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict]]:
    from medgen.evaluation.features import standardise

    for name in ctx.features.names():
        ext = ctx.features.get(name)
        f_real = ctx.features.of(name, "real", ctx.real.images)
        f_fake = ctx.fake_features(name)
        norm_info = None
        if ext.standardise:
            (f_real, f_fake), norm_info = standardise(f_real, f_fake)
        settings = {**ctx.settings, **ctx.counts(), "features": feature_ref(ext),
                    **({"standardisation": norm_info} if norm_info else {})}
        yield name, f_real, f_fake, {"settings": settings}


def section_rows(section: dict, keys: tuple[str, ...], label) -> list[tuple[str, str, str]]:
    """Rows per extractor: ``label(key, extractor)`` names each metric."""
    from medgen.evaluation.groups.base import fmt

    rows = []
    for name, d in section.items():
        if "skipped" in d:
            rows.append((name, "skipped", d["skipped"]))
            continue
        for k in keys:
            rows.append((f"{label(k, name)} [{name}]", fmt(d.get(k)), f"n {d['settings']['n_real']}/{d['settings']['n_fake']}"))
    return rows
