"""distribution: Fréchet distance (FID; FRD on radiomics features) and the unbiased KID, per extractor."""
from __future__ import annotations

import numpy as np

from medgen.evaluation.groups._feature_pairs import feature_pairs, interval_key, section_rows, store_features
from medgen.evaluation.groups.base import Context, MetricGroup, interval_headline

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
HEADLINE_KEYS = ("fid", "kid_mean", "kid_std")


def distances(f_real: np.ndarray, f_fake: np.ndarray, n_resamples: int = 0) -> dict:
    """FID and KID (and their intervals with ``n_resamples``); the KID value and its interval read
    the same whole-set kernels, computed once."""
    from medgen.metrics import fid_from_features, kid
    from medgen.metrics._arrays import as_features
    from medgen.metrics.kid import kid_kernels

    if len(f_real) < 2 or len(f_fake) < 2:
        return {"skipped": "FID and KID need at least 2 images on each side"}
    size = int(min(KID_SUBSET_SIZE, len(f_real), len(f_fake)))
    # Sets of equal size <= the subset size: every subset is both whole sets, so one is enough.
    subsets = 1 if len(f_real) == len(f_fake) == size else KID_SUBSETS
    kernels = kid_kernels(as_features(f_real), as_features(f_fake)) if subsets > 1 or n_resamples else None
    k_mean, k_std = kid(f_real, f_fake, subsets=subsets, subset_size=KID_SUBSET_SIZE, kernels=kernels)
    out = {"fid": fid_from_features(f_real, f_fake), "kid_mean": k_mean, "kid_std": k_std,
           "kid_subsets": subsets, "kid_subset_size": size, "feature_dim": int(f_real.shape[1])}
    if n_resamples:
        from medgen.metrics.feature_intervals import fid_ci, kid_ci

        out["intervals"] = {"fid": fid_ci(f_real, f_fake, n_resamples=n_resamples),
                            "kid": kid_ci(f_real, f_fake, n_resamples=n_resamples, kernels=kernels)}
    return out


def _is_frd(key: str, extractor: str) -> bool:
    return key == "fid" and extractor == "radiomics"  # the Fréchet distance of radiomics features is the FRD


class Distribution(MetricGroup):
    name = "distribution"
    needs = frozenset({"features"})
    title = "FID/FRD and KID"
    meanings = {
        "fid": "Fréchet distance between real and generated feature distributions (lower = closer)",
        "frd": "Fréchet distance on radiomics features (lower = closer)",
        "kid_mean": "kernel inception distance, unbiased (about 0 = indistinguishable; lower = closer)",
        "kid_std": "spread of KID over subsets",
    }

    def compute(self, ctx: Context) -> dict:
        out = {}
        for name, f_real, f_fake, settings in feature_pairs(ctx):
            d = distances(f_real, f_fake, ctx.run.n_resamples)
            if name == "radiomics" and "fid" in d:
                d["frd"] = d["fid"]
            if "fid" in d:
                store_features(ctx, name, f_real, f_fake)
            out[name] = {**d, **settings}
        return out

    def headline(self, section: dict) -> dict[str, dict]:
        return {f"{'frd' if _is_frd(k, name) else k}/{name}": interval_headline(d[k], (d.get("intervals") or {}).get(interval_key(k)))
                for name, d in section.items() for k in HEADLINE_KEYS if k in d}

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        return section_rows(section, HEADLINE_KEYS,
                            lambda k, name: "FRD" if _is_frd(k, name) else k.upper() if k == "fid" else k)

    def runs_columns(self, section: dict) -> dict:
        out: dict = {}
        for d in section.values():  # the first extractor's distances; the FRD of radiomics
            for k in ("fid", "kid_mean", "frd"):
                if isinstance(d.get(k), (int, float)) and k not in out:
                    out[k] = d[k]
        return out
