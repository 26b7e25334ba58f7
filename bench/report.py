"""The benchmarks' JSON lines (a file, or stdin) as a Markdown table for the README:
figure | medgen | reference | ratio | target | met, then the machine(s) they were measured on. A ratio
taken per repeat shows the lowest and highest repeat's beside the median: the machine's noise. Rows
that count their floating-point operations show the achieved TFLOP/s beside medgen's figure.

    python bench/report.py /tmp/medgen-bench.jsonl
    bench/run_all.sh | python bench/report.py
"""
from __future__ import annotations

import json
import sys


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, (int, float)):
        v = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v} {unit}".strip()


def machine_line(m: dict) -> str:
    dev = m.get("device") or "cpu"
    quick = " - QUICK sanity run (BENCH_QUICK=1), not for reporting" if m.get("quick") else ""
    return (f"{m.get('cpus')} CPU cores ({m.get('threads')} torch threads), device: {dev}, torch {m.get('torch')}, "
            f"Python {m.get('python')}, {m.get('platform')}{quick}")


def table(records: list[dict]) -> str:
    rows = ["| figure | medgen | reference | ratio | target | met |", "|---|---|---|---|---|---|"]
    machines: list[str] = []
    for r in records:
        unit = r.get("unit", "")
        ref = fmt(r.get("reference"), unit) if r.get("reference") is not None else ""
        ref = f"{ref} ({r['reference_name']})" if ref else r.get("reference_name", "-")
        met = "-" if r.get("target_met") is None else fmt(r["target_met"])
        ratio = fmt(r.get("ratio"))
        if r.get("ratio_range"):
            ratio += " ({} to {})".format(*(fmt(v) for v in r["ratio_range"]))
        value = fmt(r.get("medgen"), unit)
        tflops = r.get("achieved_tflops")
        if tflops is not None:
            value += f" ({fmt(tflops)} TFLOP/s)"
        rows.append(f"| {r['figure']} | {value} | {ref} | {ratio} | "
                    f"{r.get('target') or '-'} | {met} |")
        line = machine_line(r.get("machine", {}))
        if line not in machines:
            machines.append(line)
    return "\n".join(rows + [""] + [f"Measured on: {m}" for m in machines])


def main() -> None:
    src = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    records = []
    for line in src:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # progress output mixed into the stream
        if isinstance(rec, dict) and "figure" in rec:
            records.append(rec)
    print(table(records))


if __name__ == "__main__":
    main()
