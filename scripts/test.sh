#!/usr/bin/env bash
# Builds and runs every easycache test: g++ and clang++, C++17 and C++20, and
# AddressSanitizer + UndefinedBehaviorSanitizer builds, warnings as errors.
# The LibTorch backend (Debian's libtorch-dev, CPU) is built and tested in the two
# release builds, not under sanitizers (libtorch is not instrumented). The CUDA
# backend is compiled by nvcc in the g++ release build; its GPU tests report
# "skipped" where no GPU is (docs/gpu-tests.md runs them on one).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh core torch mpi

nvcc=$(command -v nvcc || true)
[[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
if [[ -n "$nvcc" ]]; then
  cuda=(-DEASYCACHE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc")
else
  # No Debian package provides a CUDA 13 toolkit, so this cannot be installed here;
  # say so loudly rather than fail every other check.
  echo "test.sh: WARNING: no nvcc (PATH, /usr/local/cuda/bin): the CUDA backend is NOT compiled" >&2
  cuda=(-DEASYCACHE_CUDA=OFF)
fi

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
run gcc-release -DCMAKE_CXX_COMPILER=g++ -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_TORCH=ON "${cuda[@]}"
run clang-cxx20-release -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_TEST_CXX_STANDARD=20 \
  -DEASYCACHE_TORCH=ON -DEASYCACHE_CUDA=OFF
run gcc-cxx20-sanitize -DCMAKE_CXX_COMPILER=g++ -DCMAKE_BUILD_TYPE=Debug -DEASYCACHE_TEST_CXX_STANDARD=20 \
  -DEASYCACHE_SANITIZE=address,undefined -DEASYCACHE_TORCH=OFF -DEASYCACHE_CUDA=OFF
run clang-sanitize -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DEASYCACHE_SANITIZE=address,undefined \
  -DEASYCACHE_TORCH=OFF -DEASYCACHE_CUDA=OFF

echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $failed
