#!/usr/bin/env bash
# make bench: every benchmark prints one JSON line (figures and the ratio to its reference).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
for b in bench_trainer_overhead bench_samplers bench_latent_cache bench_prepare; do
  "$PY" "$b.py"
done
