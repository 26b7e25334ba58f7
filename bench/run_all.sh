#!/usr/bin/env bash
# make bench: every benchmark prints one JSON line per figure (medgen, its plain reference, the
# ratio, the target and whether it is met). All lines also go to $BENCH_OUT, and the Markdown
# table for the README is printed at the end. BENCH_QUICK=1: a short sanity run (not for reporting).
# BENCH_COMPILE=1: also the torch.compile rows on a CPU (on a GPU they always run; 2.5-3 min more here).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
OUT=${BENCH_OUT:-/tmp/medgen-bench.jsonl}
: > "$OUT"
start=$SECONDS
for b in bench_trainer_overhead bench_sampler_quality bench_latent_cache bench_families bench_speed_options bench_prepare bench_features bench_memory; do
  t=$SECONDS
  "$PY" "$b.py" | tee -a "$OUT"
  echo "# $b: $((SECONDS - t)) s" >&2
done
echo "# all benchmarks: $((SECONDS - start)) s; JSON lines in $OUT" >&2
echo
"$PY" report.py "$OUT"
