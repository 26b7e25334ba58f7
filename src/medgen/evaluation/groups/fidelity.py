"""fidelity: precision, recall, density and coverage (Naeem et al. 2020) of the synthetic features, per extractor."""
from __future__ import annotations

import numpy as np

from medgen.evaluation.groups._feature_pairs import feature_pairs, section_rows
from medgen.evaluation.groups.base import Context, MetricGroup, headline

PRDC_K = 5
HEADLINE_KEYS = ("precision", "recall", "density", "coverage")


def prdc_section(f_real: np.ndarray, f_fake: np.ndarray) -> dict:
    from medgen.metrics import prdc

    k = min(PRDC_K, len(f_real) - 1, len(f_fake) - 1)
    if k < 1:
        return {"skipped": "precision/recall/density/coverage need at least 2 images on each side"}
    return {**prdc(f_real, f_fake, k=k), "k": int(k)}


class Fidelity(MetricGroup):
    name = "fidelity"
    needs = frozenset({"features"})
    title = "precision/recall/density/coverage"
    meanings = {
        "precision": "share of generated images that fall on the real data's manifold (fidelity)",
        "recall": "share of real images covered by the generated ones (diversity)",
        "density": "like precision, counting how many real neighbourhoods hold each generated image",
        "coverage": "share of real images with a generated image nearby",
    }

    def compute(self, ctx: Context) -> dict:
        return {name: {**prdc_section(f_real, f_fake), **settings} for name, f_real, f_fake, settings in feature_pairs(ctx)}

    def headline(self, section: dict) -> dict[str, dict]:
        return {f"{k}/{name}": headline(d[k]) for name, d in section.items() for k in HEADLINE_KEYS if k in d}

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        return section_rows(section, HEADLINE_KEYS, lambda k, name: k)
