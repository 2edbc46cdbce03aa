#!/usr/bin/env bash
# Builds and runs easycache's main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh core
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_BUILD_TESTS=OFF >/dev/null
cmake --build build/demo --target quickstart guidance
build/demo/examples/quickstart
build/demo/examples/guidance
