"""``medgen runs``: a table of run directories with preset, data, steps, key metrics and status."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from medgen.fsio import read_json


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def run_status(root: Path) -> str:
    st = read_json(root / "status.json", {}) or {}
    state = st.get("state", "unknown")
    if state == "running" and not _alive(st.get("pid")):
        state = "crashed"
    if state in ("crashed", "failed", "interrupted") and st.get("resumable", any((root / "checkpoints").glob("step-*"))):
        state += " (resumable)"
    return state


def key_metrics(metrics: dict) -> dict:
    """The few numbers worth a column: each metric group's (FID/KID/FRD, memorisation), then the same leaf
    names found anywhere else in metrics.json (other sections, older layouts)."""
    from medgen.evaluation.groups import all_groups

    out: dict = {}
    evaluation = metrics.get("evaluation")
    if isinstance(evaluation, dict):
        for group in all_groups():
            section = evaluation.get(group.name)
            if isinstance(section, dict):
                for k, v in group.runs_columns(section).items():
                    out.setdefault(k, v)

    def walk(prefix, node):  # other sections, and metrics.json files in older layouts
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            leaf = prefix.split(".")[-1].lower()
            if leaf in ("fid", "kid", "kid_mean", "frd", "image_auroc", "pixel_auroc", "fraction_flagged", "accuracy_mixed") and leaf not in out:
                out[leaf] = node

    walk("", metrics)
    return out


def list_runs(root: str | Path = "runs") -> list[dict]:
    root = Path(root)
    if (root / "config.yaml").exists():
        candidates = [root]
    else:
        candidates = sorted(p.parent for p in root.glob("**/config.yaml") if "checkpoints" not in p.parts)
    rows = []
    for run in candidates:
        try:
            cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
        except yaml.YAMLError:
            cfg = {}
        data = read_json(run / "data.json", {}) or {}
        metrics = read_json(run / "metrics.json", {}) or {}
        st = read_json(run / "status.json", {}) or {}
        rows.append({
            "run": str(run), "preset": cfg.get("preset") or "-", "profile": cfg.get("profile") or "-",
            "family": (cfg.get("model") or {}).get("family", "-"), "data": Path(data.get("dataset", "-")).name,
            "subset": data.get("subset") or {}, "steps": st.get("steps", (metrics.get("training") or {}).get("steps")),
            "status": run_status(run), "metrics": key_metrics(metrics),
        })
    return rows
