#!/usr/bin/env bash
# bench/quality: quality at equal calls on the trained video DiT (per_call.cpp):
# Euler and UniPC at 2x, 3x and 4x fewer calls, fewer steps, a static cache, a
# TaylorSeer-style cache, the reference rule and easycache's quality mode, then
# its plots. Writes bench/results/quality_per_call.{md,csv},
# quality_per_call_errors.csv and the PNGs; then float16 tensors with the
# cached vectors in float or in float16 (half_precision.cpp: half_precision.{md,csv},
# half a minute). About 10 minutes on 2 cores.
#   bench/quality/run.sh [--seeds N]       the per-call table
#   bench/quality/run.sh --tau-sweep [...] also the tau sweep (main.cpp: the reference
#       at tau 0.025-0.2 with its baselines, the budget policy, the predictors and
#       mixed batches; quality.md, quality.csv, ...; about 12 minutes more)
set -euo pipefail
cd "$(dirname "$0")/../.."
sweep=0
if [[ "${1:-}" == "--tau-sweep" ]]; then sweep=1; shift; fi
scripts/deps.sh core
cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_BUILD_TESTS=OFF >/dev/null
cmake --build build/bench --target quality_per_call_bench quality_bench quality_half_precision
build/bench/bench/quality/quality_per_call_bench --out bench/results "$@"
if (( sweep )); then build/bench/bench/quality/quality_bench --out bench/results "$@"; fi
build/bench/bench/quality/quality_half_precision --out bench/results "$@"
scripts/deps.sh plots
/usr/bin/python3 bench/quality/plot.py bench/results
