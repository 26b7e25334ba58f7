"""``medgen report RUN``: one self-contained report.html (images embedded as data URIs, no
external requests) with the config, data summary, loss curves, samples, histograms, metric
tables and anomaly figures, whichever the run has."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from medgen.fsio import atomic_write_text
from medgen.rundir import RunDir

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>medgen report: {{ name }}</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
 header { background: #1d2330; color: #fff; padding: 16px 28px; }
 header h1 { margin: 0; font-size: 22px; } header p { margin: 4px 0 0; color: #c6cbd6; font-size: 14px; }
 main { max-width: 1180px; margin: 0 auto; padding: 8px 24px 40px; }
 section { background: #fff; border-radius: 8px; padding: 14px 20px; margin: 16px 0; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
 h2 { font-size: 18px; margin: 4px 0 10px; } h3 { font-size: 15px; margin: 12px 0 6px; }
 img { max-width: 100%; height: auto; border: 1px solid #e3e6eb; border-radius: 4px; }
 table { border-collapse: collapse; font-size: 13px; margin: 6px 0; } td, th { border: 1px solid #e3e6eb; padding: 4px 8px; text-align: left; vertical-align: top; }
 th { background: #f0f2f5; } pre { background: #f0f2f5; padding: 10px; overflow-x: auto; font-size: 12px; max-height: 420px; }
 .grid { display: flex; flex-wrap: wrap; gap: 14px; } .grid figure { margin: 0; flex: 1 1 420px; } figcaption { font-size: 12px; color: #5a6275; }
 .muted { color: #5a6275; font-size: 13px; } details { margin: 8px 0; } summary { cursor: pointer; color: #3b5bdb; font-size: 13px; } .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; background: #e7ecf5; font-size: 12px; }
</style></head><body>
<header><h1>{{ name }}</h1><p>{{ subtitle }}</p></header>
<main>
<section><h2>Run</h2>
<table>{% for k, v in overview %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% for note in notes %}<p class="muted">{{ note }}</p>{% endfor %}
</section>
{% if data %}<section><h2>Data</h2>
<table>{% for k, v in data %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{% if preview %}<figure><img alt="dataset preview" src="{{ preview }}"><figcaption>Training data preview (one row per class; red: masks).</figcaption></figure>{% endif %}
</section>{% endif %}
{% if curves %}<section><h2>Training curves</h2><img alt="loss curves" src="{{ curves }}"></section>{% endif %}
{% if samples %}<section><h2>Samples</h2><div class="grid">
{% for s in samples %}<figure><img alt="{{ s.caption }}" src="{{ s.src }}"><figcaption>{{ s.caption }}</figcaption></figure>{% endfor %}
</div></section>{% endif %}
{% for block in metric_blocks %}<section><h2>{{ block.title }}</h2>{{ block.html }}
{% if block.figures %}<div class="grid">{% for f in block.figures %}<figure><img alt="{{ f.caption }}" src="{{ f.src }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}</div>{% endif %}
</section>{% endfor %}
<section><h2>Resolved configuration</h2><p class="muted">Replay with <code>medgen train {{ config_path }} --data DATA --out NEW_RUN</code>.</p><pre>{{ config }}</pre></section>
</main></body></html>
"""


def data_uri(path: Path) -> str | None:
    path = Path(path)
    if not path.exists():
        return None
    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 12:
        return f"[{len(v)} values]"
    return html.escape(str(v))


def dict_table(d: dict, depth: int = 0) -> str:
    """Nested metric dicts as nested tables (leaves formatted to 4 significant digits)."""
    rows = []
    for k, v in d.items():
        if isinstance(v, dict) and depth < 3:
            cell = dict_table(v, depth + 1)
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and depth < 3:
            keys = list(dict.fromkeys(k2 for x in v for k2 in x))[:12]
            cell = "<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in keys) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{_fmt(x.get(c, ''))}</td>" for c in keys) + "</tr>" for x in v[:50]) + "</table>"
        else:
            cell = _fmt(v)
        rows.append(f"<tr><th>{html.escape(str(k))}</th><td>{cell}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _meaning(key: str) -> str:
    """What a headline number means, from the metric group that wrote it (by key prefix)."""
    from medgen.evaluation.groups import all_groups

    for group in all_groups():
        for prefix, text in group.meanings.items():
            if key.startswith(prefix):
                return text
    return ""


def key_table(key: str, value: dict) -> str:
    """The few numbers a reader looks for first, with what they mean; everything else is folded below."""
    rows: list[tuple[str, object, str]] = []
    if key == "evaluation":
        cis = value.get("summary_intervals") or {}

        def with_ci(k, v):  # "12.3 [10.9, 14.1]" and the method and n it rests on
            ci = cis.get(k)
            return v if not ci else f"{_fmt(v)} [{_fmt(ci['ci'][0])}, {_fmt(ci['ci'][1])}]"

        def meaning(k):
            ci = cis.get(k)
            return _meaning(k) + (f" ({round(ci['level'] * 100)} % {ci['method']}, n {ci['n']})" if ci else "")

        rows = [(k, with_ci(k, v), meaning(k)) for k, v in (value.get("summary") or {}).items() if isinstance(v, (int, float))]
    elif key == "compare":
        for pair, res in value.items():
            for metric, d in (res.get("metrics") or {}).items():
                for c in d.get("comparisons", []):
                    rows.append((f"{metric}: {Path(c['a']).name} - {Path(c['b']).name}",
                                 f"{_fmt(c['difference'])} [{_fmt(c['low'])}, {_fmt(c['high'])}]",
                                 f"{c['verdict']}; smallest detectable {_fmt(c['smallest_detectable_difference'])}; {res.get('correction', '')}"))
    elif key == "anomaly":
        im, px, pf = value.get("image") or {}, value.get("pixel") or {}, value.get("pixel_foreground") or {}
        rows = [("image AUROC", im.get("auroc"), "ranking of anomalous above normal images (0.5 = chance)"),
                ("image AUPRC", im.get("auprc"), "average precision, anomalous = positive"),
                ("false-positive rate on held-out normals", im.get("fpr_at_threshold"), f"target {value.get('threshold', {}).get('target_fpr', '')}"),
                ("pixel AUROC (all / foreground)", f"{_fmt(px.get('auroc'))} / {_fmt(pf.get('auroc'))}", "lesion pixels ranked above normal pixels"),
                ("best Dice / Dice at threshold", f"{_fmt(px.get('dice_best'))} / {_fmt(px.get('dice_at_threshold'))}", "segmentation overlap with the masks")]
    elif key == "training":
        rows = [("steps", value.get("steps"), "optimiser steps in all stages")]
        for stage, d in (value.get("stages") or {}).items():
            if isinstance(d, dict):
                val = ", ".join(f"{k} {_fmt(v)}" for k, v in (d.get("val") or {}).items())
                rows.append((f"{stage}", f"{d.get('steps', '-')} steps, {_fmt(d.get('seconds', '-'))} s" + (f"; validation {val}" if val else ""), ""))
    rows = [r for r in rows if r[1] is not None]
    out = ""
    if rows:
        out += "<table><tr><th>figure</th><th>value</th><th>meaning</th></tr>" + "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td><td class=\"muted\">{html.escape(m)}</td></tr>" for k, v, m in rows) + "</table>"
    if key == "evaluation":
        from medgen.evaluation.groups import all_groups

        out += "".join(g.extra_html(value[g.name]) for g in all_groups() if isinstance(value.get(g.name), dict))
    return out


def _figures(folder: Path, captions: dict[str, str]) -> list[dict]:
    out = []
    for name, caption in captions.items():
        for p in sorted(folder.glob(name)):
            src = data_uri(p)
            if src:
                out.append({"src": src, "caption": f"{caption} ({p.relative_to(folder.parent) if folder.parent in p.parents else p.name})"})
    return out


def write_report(run_dir: str | Path) -> Path:
    import jinja2

    from medgen.data.dataset import PreparedDataset
    from medgen.report.curves import loss_curves
    from medgen.runs import run_status

    run = RunDir.open(run_dir)
    cfg_text = run.config_path.read_text()
    cfg = run.config_mapping()
    data = run.data()
    metrics = run.metrics()
    status = run.status()
    overview = [("preset / profile", f"{cfg.get('preset') or '-'} / {cfg.get('profile') or '-'}"),
                ("model family", (cfg.get("model") or {}).get("family")), ("status", run_status(run.root)),
                ("training steps", status.get("steps", "-")), ("description", cfg.get("description", ""))]
    notes = [f"WARNING: {w}" for w in status.get("warnings", [])]  # medgen.engine.guards: a model that does not follow its input
    if status.get("pretrained"):  # medgen.demo.install_pretrained: weights shipped in the package, not trained here
        made = data.get("trained_on") or {}
        notes.append("Pretrained checkpoint shipped with medgen (made with medgen itself: "
                     f"`{data.get('command') or 'medgen train ... --profile pretrain'}`, {data.get('steps', '?')} steps, on "
                     f"{made.get('source', 'unknown data')} drawn with seed {made.get('seed', '?')}, {made.get('n', '?')} images); "
                     "not trained on this machine.")
    init = data.get("init_from")
    if init:
        notes.append(f"Fine-tuned from {init['from']} ({init['loaded']} tensors loaded, {len(init['skipped'])} skipped).")
    data_rows, preview = [], None
    if data.get("dataset"):
        data_rows = [("dataset", data["dataset"]), ("content hash", (data.get("content_hash") or "")[:16]),
                     ("subset", data.get("subset") or "all"), ("training / validation items", f"{data.get('n_train')} / {data.get('n_val')}"),
                     ("image", f"{(data.get('info') or {}).get('channels')} x {(data.get('info') or {}).get('size')}"),
                     ("labels", ", ".join((data.get("info") or {}).get("labels", []))), ("normalisation", data.get("normalize"))]
        try:
            preview = data_uri(PreparedDataset(data["dataset"]).root / "preview.png")
        except Exception:  # the dataset may have moved; the report still renders
            notes.append(f"dataset folder {data['dataset']} is not available; preview omitted")
    curves = None
    records = run.read_log()
    if records:
        run.root.joinpath("report_assets").mkdir(exist_ok=True)
        p = loss_curves(records, run.root / "report_assets" / "curves.png")
        curves = data_uri(p) if p else None
    samples = []
    for folder in sorted(p for p in run.samples.glob("*") if p.is_dir()):
        info = {}
        if (folder / "samples.json").exists():
            info = json.loads((folder / "samples.json").read_text())
        for name, what in (("grid.png", "samples"), ("histogram.png", "intensity histogram, real vs generated"), ("interpolation.png", "latent interpolation")):
            src = data_uri(folder / name)
            if src:
                settings = f"{info.get('sampler', '')} {info.get('steps', '')} steps, seed {info.get('seed', '')}" if info else ""
                samples.append({"src": src, "caption": f"{folder.name}: {what} {('(' + settings + ')') if settings else ''}"})
    blocks = []
    titles = {"training": "Training summary", "evaluation": "Evaluation", "anomaly": "Anomaly detection", "utility": "Downstream utility",
              "compare": "Comparisons with other runs (medgen compare)"}
    for key, value in metrics.items():
        if not isinstance(value, dict):
            continue
        figs = []
        if key == "evaluation":
            figs = _figures(run.root / "evaluation", {"*.png": "evaluation figure"})
        if key == "anomaly":
            for d in sorted(run.root.glob("detect/*")):
                figs += _figures(d, {"figure.png": "original / reconstruction / error map / ground truth", "scores.png": "anomaly scores, normal vs anomalous"})
        head = key_table(key, value)
        body = f"<details><summary>All values</summary>{dict_table(value)}</details>" if head else dict_table(value)
        blocks.append({"title": titles.get(key, key.capitalize()), "html": head + body, "figures": figs})
    page = jinja2.Environment(autoescape=True).from_string(TEMPLATE).render(
        name=run.root.name, subtitle=f"medgen report — {cfg.get('description', '')}", overview=overview, notes=notes,
        data=data_rows, preview=preview, curves=curves, samples=samples,
        metric_blocks=[{**b, "html": jinja2.utils.markupsafe.Markup(b["html"])} for b in blocks],
        config=cfg_text, config_path=run.config_path)
    atomic_write_text(run.report_path, page)
    return run.report_path
