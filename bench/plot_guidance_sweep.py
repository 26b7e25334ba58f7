"""Quality against the classifier-free guidance scale, drawn from ``bench_sample_quality.py`` outputs.

    python bench/plot_guidance_sweep.py OUT.png LABEL:G=RESULT.json [LABEL:G=RESULT.json ...]

Each RESULT.json is one ``bench_sample_quality.py PRESET --run=RUN --guidance=G`` (or the training
bench at the preset's guidance); LABEL groups them into lines (e.g. the preset's name). Four panels,
each with its target as a dashed line: class consistency (exact binomial 95 % interval), whole-image
radiomics recall, the whole-image radiomics FRD over the real-vs-real FRD (bootstrap interval over the
same real value), and the within-class spread in domain features over real (the smallest class).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

PANELS = [  # title, value, interval or None, target
    ("class consistency", lambda d: d["class_consistency"]["generated"]["value"],
     lambda d: d["class_consistency"]["generated"]["ci95"], 0.85),
    ("radiomics recall (whole image)", lambda d: d["radiomics"]["generated"]["recall"], None, 0.5),
    ("radiomics FRD, x real-vs-real", lambda d: d["radiomics"]["frd_ratio"],
     lambda d: [c / d["radiomics"]["frd_real_vs_real"] for c in d["radiomics"]["frd_ci95"]], 5.0),
    ("diversity (domain), x real", lambda d: d["domain"]["diversity"]["min_ratio"], None, 0.7),
]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.exit(__doc__)
    out, series = Path(argv[0]), {}
    for spec in argv[1:]:
        label_g, _, path = spec.partition("=")
        label, _, g = label_g.rpartition(":")
        if not (label and g and path):
            sys.exit(f"error: bad argument '{spec}': expected LABEL:G=RESULT.json")
        series.setdefault(label, {})[float(g)] = json.loads(Path(path).read_text())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.5 * len(PANELS), 3.2))
    for ax, (title, value, interval, target) in zip(axes, PANELS):
        for label, by_g in series.items():
            gs = sorted(by_g)
            ys = [value(by_g[g]) for g in gs]
            if interval is not None:
                cis = [interval(by_g[g]) for g in gs]
                ax.errorbar(gs, ys, yerr=[[y - c[0] for y, c in zip(ys, cis)], [c[1] - y for y, c in zip(ys, cis)]],
                            marker="o", ms=3, capsize=3, label=label)
            else:
                ax.plot(gs, ys, marker="o", ms=3, label=label)
        ax.axhline(target, ls="--", c="grey", lw=1, label="target")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("guidance scale")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(json.dumps({"figure": str(out), "series": {k: sorted(v) for k, v in series.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
