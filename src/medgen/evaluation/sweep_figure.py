"""The curve of ``medgen evaluate --sweep``: each headline metric against the number of network
evaluations per image, one line per sampler, with the 95 % interval as error bars; for a sweep of
guidance scales at one number of evaluations, against the guidance scale. Quality against
sampling cost is read off a curve far more easily than off a table of columns."""
from __future__ import annotations

from pathlib import Path

from medgen.plots import _plt, save_figure

TICKS = [m * 10 ** e for e in range(6) for m in (1, 2, 5)]
MAX_PANELS = 6  # the first headline metrics (FID/KID/precision/recall ... of the first extractor first)


def _cost(row: dict):
    return row.get("nfe") if row.get("nfe") is not None else row.get("steps")


def x_axis(rows: list[dict]) -> str:
    """'guidance' when the settings share one cost and differ only in guidance scale (quality against
    the scale, a linear axis), else 'evaluations' (network evaluations per image, a log axis)."""
    rows = [r for r in rows if _cost(r) is not None]
    guidances = {r.get("guidance") for r in rows}
    return "guidance" if len({_cost(r) for r in rows}) == 1 and len(guidances) > 1 and None not in guidances else "evaluations"


def sweep_figure(rows: list[dict], path: Path, title: str = "") -> Path | None:
    """Write the figure to ``path``; None when there is nothing to draw (no numeric metric, or no
    setting with a number of steps)."""
    rows = [r for r in rows if _cost(r) is not None]
    guidances = {r.get("guidance") for r in rows}
    by_guidance = x_axis(rows) == "guidance"

    def _x(r):
        return r["guidance"] if by_guidance else _cost(r)

    def line(r):  # one line per sampler, and per guidance scale where the scales differ along a steps axis
        if by_guidance or len(guidances) <= 1 or r.get("guidance") is None:
            return str(r.get("sampler"))
        return f"{r.get('sampler')} guidance {r['guidance']:g}"
    keys = [k for k in (rows[0] if rows else {}) if "/" in k and all(isinstance(r.get(k), (int, float)) for r in rows)]
    keys = keys[:MAX_PANELS]
    if not keys:
        return None
    plt = _plt()
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False)
    lines = list(dict.fromkeys(line(r) for r in rows))
    for ax, key in zip(axes.flat, keys):
        for s in lines:
            mine = sorted((r for r in rows if line(r) == s), key=_x)
            xs, ys = [_x(r) for r in mine], [r[key] for r in mine]
            cis = [((r.get("intervals") or {}).get(key) or {}).get("ci") for r in mine]
            if all(ci is not None for ci in cis):
                err = [[y - ci[0] for y, ci in zip(ys, cis)], [ci[1] - y for y, ci in zip(ys, cis)]]
                ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=3, label=s)
            else:
                ax.plot(xs, ys, marker="o", ms=3, label=s)
        if by_guidance:
            ax.set_xlabel(f"guidance scale ({rows[0].get('sampler')} {rows[0].get('steps')} steps)")
        else:
            ax.set_xscale("log")
            # plain tick labels (1, 2, 5, 10, 20, ...): the figures' text is never parsed as mathtext
            # (medgen.plots), so the log axis' default "10^k" labels would print raw
            lo, hi = min(_x(r) for r in rows), max(_x(r) for r in rows)
            ticks = [t for t in TICKS if lo <= t <= hi] or [lo]
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("network evaluations per image")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    return save_figure(fig, path, title or f"quality against {'the guidance scale' if by_guidance else 'sampling steps'} (95 % intervals)")
