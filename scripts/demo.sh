#!/usr/bin/env bash
# Builds and runs easycache's main demo: the trained video DiT of models/ sampled
# like Wan2.1 with and without EasyCache (examples/demo; images go to out/demo/).
#   scripts/demo.sh [--repeats N] [--out DIR] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh core
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_BUILD_TESTS=OFF -DEASYCACHE_TORCH=OFF \
  -DEASYCACHE_CUDA=OFF -DEASYCACHE_MPI=OFF >/dev/null
cmake --build build/demo --target demo
build/demo/examples/demo "$@"
