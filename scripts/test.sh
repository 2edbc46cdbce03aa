#!/usr/bin/env bash
# Builds and runs every easycache test: g++ and clang++, C++17 and C++20, and
# AddressSanitizer + UndefinedBehaviorSanitizer builds, warnings as errors; runs
# the thread tests alone under ThreadSanitizer; then fuzzes for about 60 s
# (libFuzzer, from the committed corpora: step() and the configuration 30 s,
# the rest of the API 30 s) and runs the release test programs under valgrind
# memcheck.
# The LibTorch backend (Debian's libtorch-dev, CPU) is built and tested in the two
# release builds, not under sanitizers (libtorch is not instrumented). The CUDA
# backend is compiled by nvcc in the g++ release build; its GPU tests report
# "skipped" where no GPU is (docs/gpu-tests.md runs them on one).
set -euo pipefail
cd "$(dirname "$0")/.."
# bench: Google Benchmark, for the configure.benchmarks test (configure only).
scripts/deps.sh core torch mpi fuzz valgrind bench

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

# ThreadSanitizer on the one program that runs controllers in concurrent threads
# (tests/test_threads.cpp; the rest of the suite is single-threaded): built
# alone, in a tree of its own, and run directly (the tree's other tests are not built).
tsan() {
  echo "=== tsan"
  local dir=build/tsan
  cmake -S . -B "$dir" -G Ninja -DEASYCACHE_WERROR=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
    -DEASYCACHE_SANITIZE=thread -DEASYCACHE_TORCH=OFF -DEASYCACHE_CUDA=OFF -DEASYCACHE_MPI=OFF \
    -DEASYCACHE_BUILD_EXAMPLES=OFF -DEASYCACHE_INSTALL=OFF >/dev/null
  cmake --build "$dir" -j "$jobs" --target easycache_thread_tests
  if TSAN_OPTIONS=halt_on_error=1 "$dir/tests/easycache_thread_tests" >"$dir/tsan.log" 2>&1; then
    summary+=("tsan: $(grep -E '^All tests passed' "$dir/tsan.log"), no data race (ThreadSanitizer)")
  else
    tail -n 80 "$dir/tsan.log"
    summary+=("tsan: FAILED (see $dir/tsan.log)")
    failed=1
  fi
}

# libFuzzer on the two targets (tests/fuzz), one process each, 30 s each, each
# starting from a copy of its committed corpus so that the corpus itself is never modified.
fuzz() {
  echo "=== fuzz"
  local dir=build/fuzz
  cmake -S . -B "$dir" -G Ninja -DEASYCACHE_WERROR=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DEASYCACHE_BUILD_FUZZERS=ON -DEASYCACHE_BUILD_TESTS=OFF -DEASYCACHE_BUILD_EXAMPLES=OFF -DEASYCACHE_INSTALL=OFF >/dev/null
  cmake --build "$dir" -j "$jobs"
  local target corpus
  for target in controller:corpus api:corpus_api; do
    corpus=${target#*:}
    target=${target%%:*}
    rm -rf "$dir/$corpus" "$dir/artifacts-$target"
    mkdir -p "$dir/$corpus" "$dir/artifacts-$target"
    cp tests/fuzz/"$corpus"/* "$dir/$corpus/"
    if "$dir/tests/fuzz/easycache_fuzz_$target" -max_total_time=30 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$dir/artifacts-$target/" "$dir/$corpus" >"$dir/fuzz-$target.log" 2>&1; then
      grep -E '^(#[0-9]+[[:space:]]+DONE|Done|stat::number_of_executed_units)' "$dir/fuzz-$target.log" || true
      summary+=("fuzz $target: $(grep -E '^Done' "$dir/fuzz-$target.log"), no crash, leak, timeout or invariant violation")
    else
      tail -n 80 "$dir/fuzz-$target.log"
      echo "fuzz $target: failing input(s) in $dir/artifacts-$target/: $(ls "$dir/artifacts-$target")"
      summary+=("fuzz $target: FAILED (see $dir/fuzz-$target.log and $dir/artifacts-$target/)")
      failed=1
    fi
  done
}

# valgrind memcheck on the release build's programs: each Catch2 executable runs
# all its test cases in one process; the fuzz corpus replay and the examples too.
memcheck() {
  echo "=== valgrind"
  local dir=build/gcc-release clean=0 total=0
  # Not the allocation tests: they replace the global operator new, as valgrind
  # does, and under valgrind the two replacements mismatch (as under sanitizers).
  local programs=("tests/easycache_tests"
                  "tests/fuzz/easycache_fuzz_replay $PWD/tests/fuzz/corpus"
                  "tests/fuzz/easycache_fuzz_api_replay $PWD/tests/fuzz/corpus_api" "examples/quickstart" "examples/guidance")
  for program in "${programs[@]}"; do
    total=$((total + 1))
    local name=${program%% *}
    # shellcheck disable=SC2086
    if valgrind -q --error-exitcode=1 --leak-check=full "$dir"/$program >"$dir/valgrind-${name##*/}.log" 2>&1; then
      clean=$((clean + 1))
    else
      tail -n 60 "$dir/valgrind-${name##*/}.log"
      echo "valgrind: $name is not clean"
      failed=1
    fi
  done
  summary+=("valgrind: $clean of $total programs clean (memcheck, --leak-check=full)")
}

tsan
fuzz
memcheck

echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $failed
