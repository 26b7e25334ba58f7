"""The terminal view of a result: the headline table (rows from each registered group), the sweep,
and the groups' own tables."""
from __future__ import annotations

from medgen.evaluation.groups.base import add_row, fmt
from medgen.evaluation.groups.registry import all_groups

__all__ = ["add_row", "summary_tables"]


def _data_rows(t, result: dict) -> None:
    real, fake = result.get("real") or {}, result.get("fake") or {}
    add_row(t, "data", "real", f"{real.get('n_images')} images", f"{real.get('path', real.get('kind'))} [{real.get('split', '')}]")
    if fake:
        fk = ", ".join(f"{k} {fake[k]}" for k in ("sampler", "steps", "seed") if fake.get(k) is not None)
        add_row(t, "", "synthetic", f"{fake.get('n_images')} images", fk or str(fake.get("path", fake.get("kind"))))
    for f in result.get("features", []):
        tr = f.get("training") or {}
        quality = ""
        if "val_accuracy" in tr:
            quality = f"val accuracy {tr['val_accuracy']:.3f} (chance {tr['chance_accuracy']:.3f})"
        elif "val_reconstruction_mse" in tr:
            quality = f"val MSE {tr['val_reconstruction_mse']:.4g} (mean image {tr['mean_image_mse']:.4g})"
        add_row(t, "features", f["name"], f"{f.get('dim')}-d", " ".join(x for x in (f.get("weights") or "", quality) if x))


def _sweep_table(rows: list[dict]):
    from rich.table import Table

    from medgen.evaluation.generation import setting_name

    keys = [k for k in rows[0] if "/" in k]
    st = Table("metric", *(setting_name(r, rows) for r in rows), title="sweep (one column per setting)",
               title_justify="left")
    add_row(st, "seconds / image", *(fmt(r.get("seconds_per_image")) for r in rows))
    for k in keys:  # with its 95 % interval where the row has one
        add_row(st, k, *(fmt(r.get(k)) if not (ci := (r.get("intervals") or {}).get(k)) else
                         f"{fmt(r.get(k))} [{fmt(ci['ci'][0])}, {fmt(ci['ci'][1])}]" for r in rows))
    return st


def summary_tables(result: dict) -> list:
    """Rich tables of a result: headline metrics with their settings, the sweep, the groups' own tables."""
    from rich.table import Table

    t = Table("group", "metric", "value", "settings", title=f"medgen evaluate: {result.get('run') or 'image sets'}",
              title_justify="left")
    _data_rows(t, result)
    extra = []
    for group in all_groups():
        section = result.get(group.name)
        if not section:
            continue
        for metric, value, settings in group.table_rows(section):
            add_row(t, group.name, metric, value, settings)
        extra += group.extra_tables(section)
    tables = [t]
    if result.get("sweep"):
        tables.append(_sweep_table(result["sweep"]))
    return tables + extra
