"""intensity: pixel-intensity histograms, KS and Wasserstein distances, MSE over all pairs and the
bimodality check, over all images and per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medgen.evaluation.groups.base import Context, MetricGroup, fmt, fmt_ci, interval_headline

GMM_MAX_SAMPLES = 5000  # pixels per side for the 2-component mixture of the bimodality check


class Intensity(MetricGroup):
    name = "intensity"
    needs = frozenset({"pixels"})
    title = "histograms, KS, Wasserstein, bimodality"
    meanings = {
        "intensity/ks": "Kolmogorov-Smirnov statistic of pixel intensities, real vs generated (0 = same)",
        "intensity/wasserstein": "Wasserstein distance of pixel intensities (0 = same)",
    }

    def compute(self, ctx: Context) -> dict:
        from medgen.metrics import compare_intensities, compare_intensities_by_class, mse_all_pairs

        real, fake = ctx.real, ctx.fake
        kw = {"value_range": (0.0, 1.0), "gmm_max_samples": GMM_MAX_SAMPLES}
        overall = compare_intensities(real.images, fake.images, **kw)
        out = {"all": {**overall, "mse_all_pairs": mse_all_pairs(real.images, fake.images)}, "by_class": None}
        if ctx.run.n_resamples and min(len(real), len(fake)) >= 2:
            from medgen.metrics.intensity_intervals import intensity_intervals

            a = out["all"]
            values = {"ks": a["ks_statistic"], "wasserstein": a["wasserstein"], "mse": a["mse_all_pairs"]["mse"]}
            a["intervals"] = intensity_intervals(real.images, fake.images, values, value_range=(0.0, 1.0),
                                                 n_resamples=ctx.run.n_resamples)
        if real.labels is not None and fake.labels is not None:
            out["by_class"] = compare_intensities_by_class(real.images, real.labels, fake.images, fake.labels, **kw)
        if ctx.fig_dir is not None:
            out["figure"] = str(_histogram_figure(out, ctx.fig_dir / "histograms.png"))
        return {**out, "settings": {**ctx.settings, **ctx.counts(), "value_range": [0.0, 1.0]}}

    def headline(self, section: dict) -> dict[str, dict]:
        a = section.get("all")
        if not a:
            return {}
        ci = a.get("intervals") or {}
        out = {"intensity/ks": interval_headline(a["ks_statistic"], ci.get("ks")),
               "intensity/wasserstein": interval_headline(a["wasserstein"], ci.get("wasserstein"))}
        if "mse_all_pairs" in a:
            out["intensity/mse"] = interval_headline(a["mse_all_pairs"]["mse"], ci.get("mse"))
        return out

    def table_rows(self, section: dict) -> list[tuple[str, str, str]]:
        a = section["all"]
        ci = a.get("intervals") or {}
        rows = [("KS (all)", fmt_ci(a["ks_statistic"], ci.get("ks")), f"p {fmt(a['ks_pvalue'])} (pixels as independent)"),
                ("Wasserstein (all)", fmt_ci(a["wasserstein"], ci.get("wasserstein")), "")]
        if "mse_all_pairs" in a:  # absent from metrics.json files written before it existed
            m = a["mse_all_pairs"]
            rows.append(("MSE (all pairs)", fmt_ci(m["mse"], ci.get("mse")), f"real-real {fmt(m['real_baseline'])}"))
        rows.append(("bimodality coef. real/synth", f"{fmt(a['bimodality']['real']['bimodality_coefficient'])} / "
                     f"{fmt(a['bimodality']['fake']['bimodality_coefficient'])}", "BC > 0.555 suggests two modes"))
        for label, r in (section.get("by_class") or {}).items():
            if "ks_statistic" in r:
                rows.append((f"KS [{label}]", fmt(r["ks_statistic"]), f"W1 {fmt(r['wasserstein'])}"))
        return rows


def _histogram_figure(result: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("all images", result["all"])]
    for label, r in (result.get("by_class") or {}).items():
        if "histogram" in r:
            panels.append((f"class {label}", r))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.0 * ncols, 2.9 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (title, r) in zip(axes.ravel(), panels):
        edges = np.asarray(r["histogram"]["bin_edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        ax.fill_between(centres, r["histogram"]["real_density"], step="mid", alpha=0.45, label="real")
        ax.fill_between(centres, r["histogram"]["fake_density"], step="mid", alpha=0.45, label="synthetic")
        ax.set_yscale("symlog", linthresh=0.1)
        bm = r["bimodality"]
        ax.set_title(f"{title}: KS {r['ks_statistic']:.3f}, W1 {r['wasserstein']:.3g}\n"
                     f"BC real {bm['real']['bimodality_coefficient']:.2f} / synthetic {bm['fake']['bimodality_coefficient']:.2f}",
                     fontsize=8)
        ax.set_xlabel("intensity", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
