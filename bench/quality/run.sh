#!/usr/bin/env bash
# bench/quality: builds and runs the quality benchmark on the trained video DiT,
# then draws its plots. Writes bench/results/quality.{md,csv}, quality_steps.csv,
# quality_patterns.csv, quality_steps.png and quality_tradeoff.png.
#   bench/quality/run.sh [--seeds N] [--repeats N]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh core
cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_BUILD_TESTS=OFF >/dev/null
cmake --build build/bench --target quality_bench
build/bench/bench/quality/quality_bench --out bench/results "$@"
scripts/deps.sh plots
/usr/bin/python3 bench/quality/plot.py bench/results
