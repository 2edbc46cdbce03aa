#!/usr/bin/env bash
# The whole GPU check in one command (docs/gpu-tests.md): builds the CUDA and
# LibTorch tests and examples for one GPU architecture, runs them with CTest,
# runs the CUDA test program under compute-sanitizer (memcheck, racecheck), runs
# bench/overhead_cuda, and prints a summary to paste.
#
#   scripts/gpu-check.sh --prepare   on a machine with Eigen and Catch2 installed:
#                                    copies them into .carry/ for a machine without
#   scripts/gpu-check.sh             the check; logs and results go to $OUT
#                                    (./gpu-check-out when OUT is unset)
#
# Installs nothing (no apt-get, no scripts/deps.sh): it uses nvcc, CMake and, for
# LibTorch, python3's torch where that has CMake files, else a system LibTorch;
# Eigen and Catch2 come from .carry/ when it exists, else from the system.
# Each stage has its own time limit, all of them together at most TIME_BUDGET_S;
# a stage that fails does not stop the others, and the exit code is 1 if any
# failed. Without a GPU the GPU stages report SKIPPED, not FAILED.
#
# Environment: OUT, JOBS (default: nproc), CUDA_ARCH (default 90),
# BUILD_DIR (default build/gpu-check), TIME_BUDGET_S (default 420),
# TIME_SCALE (multiplies every limit, budget included; default 1, for slow
# machines), EASYCACHE_WERROR (default OFF: a new warning of another host
# compiler must not cost the GPU run; CI builds with -Werror),
# EXPECT_GPU (1 or 0: overrides the GPU detection).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
root=$PWD
carry=$root/.carry
prefix=$carry/prefix

describe_tree() {
  local commit
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null) || return 0
  echo "commit $commit, $(git -C "$root" status --porcelain --untracked-files=no | wc -l) files changed since"
}

# Eigen and Catch2 laid out as under /usr, so that their CMake package files,
# which locate everything relative to themselves, work from the copy.
prepare() {
  local sources=(/usr/include/eigen3 /usr/share/eigen3/cmake /usr/include/catch2 /usr/lib/cmake/Catch2
                 /usr/lib/libCatch2WithMain.a)
  local source
  for source in "${sources[@]}"; do
    if [[ ! -e $source ]]; then
      echo "gpu-check.sh --prepare: $source is missing (Debian packages libeigen3-dev and catch2)" >&2
      exit 2
    fi
  done
  rm -rf "$carry"
  mkdir -p "$prefix/include" "$prefix/share/eigen3" "$prefix/lib/cmake"
  # -L: links would travel to the device as links to nothing. The timestamps are
  # kept so that preparing again does not make every build here out of date.
  local copy=(cp -rL --preserve=timestamps)
  "${copy[@]}" /usr/include/eigen3 /usr/include/catch2 "$prefix/include/"
  "${copy[@]}" /usr/share/eigen3/cmake "$prefix/share/eigen3/"
  "${copy[@]}" /usr/lib/cmake/Catch2 "$prefix/lib/cmake/"
  # Catch2's targets file refuses to load when this library is missing; nothing here links it.
  "${copy[@]}" /usr/lib/libCatch2WithMain.a "$prefix/lib/"
  # The GPU machine's copy of the tree may have no git: say there which tree was prepared.
  describe_tree >"$carry/source.txt"
  echo "gpu-check.sh --prepare: $(du -sh "$carry" | cut -f1) in $carry (carry it: [\".carry\"])"
}

if [[ ${1:-} == --prepare ]]; then
  prepare
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/gpu-check.sh [--prepare]" >&2
  exit 2
fi

OUT=${OUT:-$root/gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
jobs=${JOBS:-$(nproc)}
arch=${CUDA_ARCH:-90}
build=${BUILD_DIR:-$root/build/gpu-check}
scale=${TIME_SCALE:-1}
werror=${EASYCACHE_WERROR:-OFF}
start=$(date +%s)
deadline=$((start + ${TIME_BUDGET_S:-420} * scale))
state=$build/state   # one file per stage result, so that stages can run side by side
mkdir -p "$state" "$build/logs"
rm -f "$state"/* "$build/logs"/*
# $OUT receives at most 8 files (the device tool's limit): these logs and the
# benchmark's .md and .csv.
summary_file=$OUT/summary.txt
build_log=$OUT/build.log
ctest_log=$OUT/ctest.log
bench_out=$OUT/overhead_cuda
rm -f "$summary_file" "$OUT/memcheck.log" "$OUT/racecheck.log" "$OUT/bench.log" "$bench_out.md" "$bench_out.csv"
: >"$build_log"
: >"$ctest_log"

# --- the machine -------------------------------------------------------------

find_tool() {  # name, then fallbacks: the first executable found, else empty
  local name=$1 candidate
  shift
  for candidate in "$(command -v "$name" 2>/dev/null)" "$@"; do
    [[ -n $candidate && -x $candidate ]] && { echo "$candidate"; return; }
  done
}
nvcc=$(find_tool nvcc "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" /usr/local/cuda/bin/nvcc)
cuda_root=
[[ -n $nvcc ]] && cuda_root=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
sanitizer=$(find_tool compute-sanitizer "$cuda_root/bin/compute-sanitizer" \
            "$cuda_root/compute-sanitizer/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer)

gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
if [[ -n ${EXPECT_GPU:-} ]]; then
  has_gpu=$EXPECT_GPU
elif [[ -n $gpu || -e /dev/nvidia0 ]]; then
  has_gpu=1
else
  has_gpu=0
fi

if command -v ninja >/dev/null 2>&1; then generator=Ninja; else generator="Unix Makefiles"; fi

# LibTorch: python3's torch (a CUDA build on the GPU machine) when it has CMake
# files, else whatever find_package(Torch) finds (Debian's libtorch-dev, CPU only).
torch_prefix=
torch_cuda=0
torch_info=$(python3 -c 'import os, torch
p = torch.utils.cmake_prefix_path
print(p if os.path.isfile(os.path.join(p, "Torch", "TorchConfig.cmake")) else "")
print(torch.__version__, torch.version.cuda or "")' 2>/dev/null)
if [[ -n $(sed -n 1p <<<"$torch_info") ]]; then
  torch_prefix=$(sed -n 1p <<<"$torch_info")
  read -r torch_version torch_cuda_version <<<"$(sed -n 2p <<<"$torch_info")"
  [[ -n ${torch_cuda_version:-} ]] && torch_cuda=1
  torch_desc="python3's torch $torch_version (CUDA ${torch_cuda_version:-none}), $torch_prefix"
else
  torch_desc="the system's LibTorch (find_package(Torch); Debian's is CPU only)"
fi

prefix_path=()
[[ -d $prefix ]] && prefix_path+=("$prefix")
[[ -n $torch_prefix ]] && prefix_path+=("$torch_prefix")
deps_args=()
if [[ ${#prefix_path[@]} -gt 0 ]]; then
  deps_args+=("-DCMAKE_PREFIX_PATH=$(IFS=';'; echo "${prefix_path[*]}")")
fi
if [[ -d $prefix ]]; then
  deps_args+=("-DEigen3_DIR=$prefix/share/eigen3/cmake" "-DCatch2_DIR=$prefix/lib/cmake/Catch2")
  deps_desc="Eigen and Catch2 from $prefix"
else
  deps_desc="Eigen and Catch2 from the system (no .carry/: see --prepare)"
fi

# --- stages ------------------------------------------------------------------

# stage NAME LIMIT LOG COMMAND...: runs COMMAND with output to LOG, under
# LIMIT·TIME_SCALE seconds and what is left of the budget; records
# PASSED or FAILED (why) and returns the command's status.
stage() {
  local name=$1 limit=$(($2 * scale)) log=$3 left rc
  shift 3
  left=$((deadline - $(date +%s)))
  if ((left < 5)); then
    echo "FAILED (not run: the time budget was spent)" >"$state/$name"
    return 125
  fi
  ((limit > left)) && limit=$left
  printf '\n=== %s (limit %ss): %s\n' "$name" "$limit" "$*" >>"$log"
  local began
  began=$(date +%s)
  if command -v timeout >/dev/null 2>&1; then
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  else
    "$@" >>"$log" 2>&1
  fi
  rc=$?
  local took=$(($(date +%s) - began))
  echo "=== $name: exit $rc after ${took}s" >>"$log"
  case $rc in
    0) echo "PASSED (${took}s)" >"$state/$name" ;;
    124 | 137) echo "FAILED (timed out after ${limit}s)" >"$state/$name" ;;
    *) echo "FAILED (exit $rc, ${took}s)" >"$state/$name" ;;
  esac
  return $rc
}
mark() { echo "$2" >"$state/$1"; }  # NAME RESULT: a stage decided without running a command
result() { cat "$state/$1" 2>/dev/null || echo "FAILED (no result)"; }
progress() { echo "gpu-check: $1: $(result "$1")"; }

cuda_dir=$build/cuda
torch_dir=$build/torch
bench_bin=$build/bench/easycache_bench_overhead_cuda
common_args=(-G "$generator" -DCMAKE_BUILD_TYPE=Release "-DEASYCACHE_WERROR=$werror" -DEASYCACHE_MPI=OFF
             -DEASYCACHE_INSTALL=OFF -DEASYCACHE_BUILD_BENCHMARKS=OFF -DEASYCACHE_BUILD_TESTS=ON
             -DEASYCACHE_BUILD_EXAMPLES=ON "${deps_args[@]}")
cuda_targets=(easycache_cuda_host_tests easycache_core_as_cuda_tests easycache_cuda_tests easycache_cuda_example)
torch_targets=(easycache_torch_tests easycache_libtorch)

# The CUDA build and the LibTorch build are separate trees: a LibTorch that does
# not configure (or that changes the CUDA architectures, as TorchConfig does)
# then costs the LibTorch tests only.
cuda_build() {
  local log=$build/logs/cuda.log
  if [[ -z $nvcc ]]; then
    mark configure.cuda "FAILED (no nvcc on PATH or in /usr/local/cuda/bin)"
    mark build.cuda "FAILED (not run: no nvcc)"
    return
  fi
  stage configure.cuda 90 "$log" cmake -S "$root" -B "$cuda_dir" "${common_args[@]}" -DEASYCACHE_TORCH=OFF \
    -DEASYCACHE_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc" "-DCMAKE_CUDA_ARCHITECTURES=$arch" \
    "-DEASYCACHE_CUDA_ARCHITECTURES=$arch" || { mark build.cuda "FAILED (not run: configure.cuda failed)"; return; }
  stage build.cuda 240 "$log" nice -n 10 cmake --build "$cuda_dir" -j "$jobs" --target "${cuda_targets[@]}"
}

# bench/CMakeLists.txt needs Google Benchmark for its other target, which the
# GPU machine lacks: the CUDA benchmark, one source, is compiled by nvcc directly.
bench_build() {
  local log=$build/logs/bench.log
  [[ -n $nvcc ]] || { mark build.bench "FAILED (no nvcc)"; return; }
  mkdir -p "$(dirname "$bench_bin")"
  stage build.bench 150 "$log" nice -n 10 "$nvcc" -std=c++17 -O3 -DNDEBUG "-arch=sm_$arch" -I "$root/include" \
    -o "$bench_bin" "$root/bench/overhead_cuda.cu"
}

torch_build() {
  local log=$build/logs/torch.log
  local cuda_args=()
  # A CUDA LibTorch looks for the CUDA toolkit; give it this nvcc and the architecture.
  [[ -n $nvcc ]] && cuda_args=("-DCMAKE_CUDA_COMPILER=$nvcc" "-DCUDAToolkit_ROOT=$cuda_root"
                                "-DCMAKE_CUDA_ARCHITECTURES=$arch")
  TORCH_CUDA_ARCH_LIST="${arch:0:${#arch}-1}.${arch: -1}" \
    stage configure.torch 90 "$log" cmake -S "$root" -B "$torch_dir" "${common_args[@]}" -DEASYCACHE_TORCH=ON \
    -DEASYCACHE_CUDA=OFF "${cuda_args[@]}" || { mark build.torch "FAILED (not run: configure.torch failed)"; return; }
  stage build.torch 240 "$log" nice -n 10 cmake --build "$torch_dir" -j "$jobs" --target "${torch_targets[@]}"
}

echo "gpu-check: building in $build ($generator, $jobs jobs, sm_$arch); logs in $OUT"
# Side by side where there are cores enough (the GPU machine), else one after another.
if ((jobs >= 8)); then
  cuda_build &
  bench_build &
  torch_build &
  wait
else
  cuda_build
  bench_build
  torch_build
fi
for part in cuda bench torch; do
  [[ -f $build/logs/$part.log ]] && cat "$build/logs/$part.log" >>"$build_log"
done
for name in configure.cuda build.cuda build.bench configure.torch build.torch; do progress "$name"; done

# --- tests -------------------------------------------------------------------

if [[ $(result build.cuda) == PASSED* ]]; then
  (cd "$cuda_dir" && stage ctest.cuda 150 "$ctest_log" ctest --output-on-failure --timeout 120 -j 4 \
    -R '^(cuda\.|example\.cuda$)')
else
  mark ctest.cuda "FAILED (not run: build.cuda did not pass)"
fi
if [[ $(result build.torch) == PASSED* ]]; then
  (cd "$torch_dir" && stage ctest.torch 150 "$ctest_log" ctest --output-on-failure --timeout 120 -j 2 \
    -R '^(torch\.|example\.libtorch$)')
else
  mark ctest.torch "FAILED (not run: build.torch did not pass)"
fi

# A test's own row, read off CTest's line for it. GPU tests that report Skipped
# are SKIPPED where there is no GPU (or, for torch.cuda, no CUDA LibTorch), and
# FAILED where there is one: there they must run.
tests=(cuda.host_passes cuda.core_as_cuda cuda.gpu example.cuda torch.cpu torch.cuda example.libtorch)
test_result() {
  local name=$1 line
  line=$(grep -E "Test +#[0-9]+: ${name//./\\.} " "$ctest_log" | tail -n 1)
  case $line in
    "") echo "FAILED (did not run)" ;;
    *" Passed"*) echo "PASSED" ;;
    *Skipped*)
      case $name in
        cuda.gpu | example.cuda)
          if ((has_gpu)); then echo "FAILED (skipped on a machine with a GPU)"; else echo "SKIPPED (no GPU)"; fi ;;
        torch.cuda)
          if ((has_gpu && torch_cuda)); then
            echo "FAILED (skipped with a GPU and a CUDA LibTorch)"
          elif ((has_gpu)); then
            echo "SKIPPED (this LibTorch has no CUDA)"
          else
            echo "SKIPPED (no GPU)"
          fi ;;
        *) echo "FAILED (skipped)" ;;
      esac ;;
    *) echo "FAILED (${line##*\*\*\*})" ;;
  esac
}
for name in "${tests[@]}"; do
  mark "test.$name" "$(test_result "$name")"
  progress "test.$name"
done

# --- benchmark (before the sanitizers: quick, and what a short budget should keep)

if ((!has_gpu)); then
  mark bench "SKIPPED (no GPU)"
elif [[ $(result build.bench) != PASSED* ]]; then
  mark bench "FAILED (not run: build.bench did not pass)"
else
  EASYCACHE_BENCH_OUT=$bench_out stage bench 120 "$OUT/bench.log" "$bench_bin"
fi
progress bench

# --- compute-sanitizer ---------------------------------------------------------

# TOOL LIMIT LOG CLEAN_REGEX PROGRAM [ARGS...]: compute-sanitizer's TOOL on
# PROGRAM; PASSED needs exit 0 and the tool's clean summary line in LOG.
sanitize() {
  local tool=$1 limit=$2 log=$3 clean=$4 program=$5
  shift 5
  local options=(--tool "$tool" --error-exitcode 99 --print-limit 50)
  [[ $tool == memcheck ]] && options+=(--leak-check full)
  : >"$log"
  if ((!has_gpu)); then mark "$tool" "SKIPPED (no GPU)"; return; fi
  if [[ -z $sanitizer ]]; then mark "$tool" "SKIPPED (no compute-sanitizer)"; return; fi
  if [[ ! -x $program ]]; then mark "$tool" "FAILED (not run: $program was not built)"; return; fi
  stage "$tool" "$limit" "$log" "$sanitizer" "${options[@]}" "$program" "$@"
  # compute-sanitizer does not work on every runtime the GPU machine is lent with (gVisor).
  if grep -q "Device not supported" "$log"; then
    mark "$tool" "SKIPPED (compute-sanitizer: device not supported on this machine)"
  elif [[ $(result "$tool") == PASSED* ]]; then
    local verdict
    verdict=$(grep -oE '(ERROR|RACECHECK) SUMMARY: .*' "$log" | tail -n 1)
    if grep -qE "$clean" <<<"$verdict"; then
      mark "$tool" "$(result "$tool" | sed 's/)$//'); $verdict)"
    else
      mark "$tool" "FAILED (no clean summary: ${verdict:-none})"
    fi
  fi
}
cuda_tests=$cuda_dir/tests/easycache_cuda_tests
sanitize memcheck 150 "$OUT/memcheck.log" "ERROR SUMMARY: 0 errors" "$cuda_tests"
progress memcheck
# Racecheck checks shared memory, where a reduction block works; the
# 3·2^20-element test adds blocks, not code paths, and racecheck is slow.
sanitize racecheck 150 "$OUT/racecheck.log" "RACECHECK SUMMARY: [0-9]+ hazards displayed \(0 errors" \
  "$cuda_tests" '~large tensors*'
progress racecheck

# --- summary -----------------------------------------------------------------

stages=(configure.cuda build.cuda build.bench configure.torch build.torch ctest.cuda ctest.torch)
for name in "${tests[@]}"; do stages+=("test.$name"); done
stages+=(bench memcheck racecheck)
failed=0
{
  tree=$(describe_tree)
  [[ -z $tree && -f $carry/source.txt ]] && tree="$(cat "$carry/source.txt") (as of --prepare)"
  echo "easycache gpu-check, $(date -u '+%Y-%m-%d %H:%M UTC'), ${tree:-commit unknown}"
  echo "GPU: ${gpu:-none found (nvidia-smi)}"
  echo "nvcc: ${nvcc:-none}$([[ -n $nvcc ]] && echo " ($("$nvcc" --version | grep -o 'release [0-9.]*'))"), sm_$arch"
  echo "compute-sanitizer: ${sanitizer:-none}"
  echo "CMake: $(cmake --version | head -n 1 | grep -o '[0-9][0-9.]*'), $generator, $jobs jobs, EASYCACHE_WERROR=$werror"
  echo "LibTorch: $torch_desc"
  echo "$deps_desc"
  echo "compiler warnings in build.log: $(grep -cE ': warning|warning #' "$build_log")"
  echo
  for name in "${stages[@]}"; do
    printf '%-22s %s\n' "$name" "$(result "$name")"
    [[ $(result "$name") == FAILED* ]] && failed=1
  done
  echo
  if [[ -f $bench_out.md ]]; then
    echo "bench/overhead_cuda (µs per step; GB/s by docs/performance.md's byte model; / copy: against a D2D copy):"
    cat "$bench_out.md"
  else
    echo "bench/overhead_cuda: no table (stage bench: $(result bench))"
  fi
  echo
  echo "total $(($(date +%s) - start))s; logs: $OUT"
  if ((failed)); then echo "RESULT: FAILED"; else echo "RESULT: no stage failed"; fi
} >"$summary_file"
echo
cat "$summary_file"
exit $failed
