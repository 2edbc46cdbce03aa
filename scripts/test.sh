#!/usr/bin/env bash
# Builds and runs every easycache test: g++ and clang++, C++17 and C++20, and
# AddressSanitizer + UndefinedBehaviorSanitizer builds, warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh core mpi

jobs=$(nproc)
summary=()
run() {
  local name=$1
  shift
  echo "=== $name"
  cmake -S . -B "build/$name" -G Ninja -DEASYCACHE_WERROR=ON "$@" >/dev/null
  cmake --build "build/$name" -j "$jobs"
  local log="build/$name/ctest.log"
  if ! (cd "build/$name" && ctest --output-on-failure -j "$jobs" | tee ctest.log); then
    summary+=("$name: $(grep -E 'tests passed' "$log" || echo 'ctest failed')")
    failed=1
    return
  fi
  summary+=("$name: $(grep -E 'tests passed' "$log")")
}

failed=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1
run gcc-release -DCMAKE_CXX_COMPILER=g++ -DCMAKE_BUILD_TYPE=Release
run clang-cxx20-release -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_TEST_CXX_STANDARD=20
run gcc-cxx20-sanitize -DCMAKE_CXX_COMPILER=g++ -DCMAKE_BUILD_TYPE=Debug -DEASYCACHE_TEST_CXX_STANDARD=20 \
  -DEASYCACHE_SANITIZE=address,undefined
run clang-sanitize -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DEASYCACHE_SANITIZE=address,undefined

echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $failed
