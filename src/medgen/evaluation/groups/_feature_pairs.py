"""Real and synthetic features of every chosen extractor, z-scored where the extractor asks for it,
with the settings block every feature-space section records."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from medgen.evaluation.groups.base import Context, feature_ref


def against_real(ctx: Context, name: str, f_other: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """(real features, ``f_other``, standardisation info): both z-scored with the real images'
    statistics where extractor ``name`` asks for it (info None where it does not)."""
    from medgen.evaluation.features import standardise

    f_real = ctx.features.of(name, "real", ctx.real.images)
    if not ctx.features.get(name).standardise:
        return f_real, f_other, None
    (f_real, f_other), info = standardise(f_real, f_other)
    return f_real, f_other, info


def feature_pairs(ctx: Context) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict]]:
    for name in ctx.features.names():
        ext = ctx.features.get(name)
        f_real, f_fake, norm_info = against_real(ctx, name, ctx.fake_features(name))
        settings = {**ctx.settings, **ctx.counts(), "features": feature_ref(ext),
                    **({"standardisation": norm_info} if norm_info else {})}
        yield name, f_real, f_fake, {"settings": settings}


def interval_key(key: str) -> str:
    """The key of a headline number's interval in a section's "intervals" ("kid_mean" -> "kid")."""
    return "kid" if key == "kid_mean" else key


def store_features(ctx: Context, name: str, f_real: np.ndarray, f_fake: np.ndarray) -> None:
    """Keep the features beside the result (``medgen compare`` reads them; nothing is extracted again)."""
    import hashlib

    from medgen.feature_store import save_features

    if ctx.fig_dir is None:
        return
    ids = ctx.real.ids if ctx.real.ids is not None else [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest()
                                                         for im in ctx.real.images]
    ext = ctx.features.get(name)
    save_features(ctx.fig_dir, name, f_real, f_fake, extractor_info=feature_ref(ext), real_ids=list(ids),
                  real_source={k: v for k, v in ctx.real.source.items() if isinstance(v, (str, int, float))},
                  generated_info=dict(ctx.settings))


def section_rows(section: dict, keys: tuple[str, ...], label) -> list[tuple[str, str, str]]:
    """Rows per extractor: ``label(key, extractor)`` names each metric."""
    from medgen.evaluation.groups.base import fmt_ci

    rows = []
    for name, d in section.items():
        if "skipped" in d:
            rows.append((name, "skipped", d["skipped"]))
            continue
        for k in keys:
            ci = (d.get("intervals") or {}).get(interval_key(k))
            rows.append((f"{label(k, name)} [{name}]", fmt_ci(d.get(k), ci), f"n {d['settings']['n_real']}/{d['settings']['n_fake']}"
                         + (f", {round(ci['level'] * 100)} % {ci['method']}" if ci else "")))
    return rows
