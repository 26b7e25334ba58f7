"""sensitivity: could each extractor, at this n, tell a mildly degraded copy of the real images at all?

Beside the headline FIDs: real half A against real half B (what "as good as real" scores) and
against a 1-px-blurred, 70 %-contrast copy of B, each with its interval
(:func:`medgen.metrics.sensitivity.sensitivity_check`). "detects" is true when the degraded copy's
interval lies wholly above the real baseline's; when false, a good FID of synthetic images says
little about blur or lost contrast.
"""
from __future__ import annotations

from medgen.evaluation.groups.base import Context, MetricGroup, add_row, fmt_ci, headline

MIN_IMAGES = 8


class Sensitivity(MetricGroup):
    name = "sensitivity"
    needs = frozenset({"features"})
    scope = "run"
    title = "can the extractor see blur and lost contrast at this n"
    meanings = {"sensitivity": "FID of a blurred, contrast-reduced copy of real images over the real-vs-real FID "
                               "(>> 1 and 'detects': this extractor at this n sees such a defect)"}

    def compute(self, ctx: Context) -> dict:
        from medgen.evaluation.features import standardise
        from medgen.metrics.sensitivity import sensitivity_check

        if len(ctx.real) < MIN_IMAGES:
            return {name: {"skipped": f"needs at least {MIN_IMAGES} real images"} for name in ctx.features.names()}
        n_resamples = ctx.run.n_resamples or 200  # the check is an interval comparison: it always needs some
        out = {}
        for name in ctx.features.names():
            ext = ctx.features.get(name)
            ctx.echo(f"sensitivity: {name} features of the real images, halves and a degraded copy")
            out[name] = sensitivity_check(ctx.real.images, ext, n_resamples=n_resamples,
                                          standardise=standardise if ext.standardise else None)
        return out

    def headline(self, section: dict) -> dict[str, dict]:
        return {f"sensitivity/{name}": headline(d["ratio"], detects=d["detects_defect"])
                for name, d in section.items() if "ratio" in d}

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        rows = []
        for name, d in section.items():
            if "skipped" in d:
                rows.append((f"sensitivity [{name}]", "skipped", d["skipped"]))
                continue
            same, worse = d["real_vs_real"], d["real_vs_degraded"]
            rows.append((f"FID real/real vs real/degraded [{name}]",
                         f"{fmt_ci(same['value'], same)} vs {fmt_ci(worse['value'], worse)}",
                         f"{'detects' if d['detects_defect'] else 'CANNOT tell'} blur {d['degradation']['blur_sigma_px']} px + "
                         f"contrast x{d['degradation']['contrast']} at n {d['n_per_half']}/{d['n_per_half']}"))
        return rows

    def runs_columns(self, section: dict) -> dict:
        return {f"sees_defect/{n}": d["detects_defect"] for n, d in section.items() if "detects_defect" in d}
