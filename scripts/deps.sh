#!/usr/bin/env bash
# Installs the Debian packages easycache needs, only those missing (idempotent).
#   scripts/deps.sh [group...]   groups: core (default), torch, mpi, fuzz, valgrind, bench, train, plots
# nvcc is not among them: Debian ships CUDA only in non-free; the CUDA backend is
# compiled with the toolkit in /usr/local/cuda (or any nvcc on PATH) where there is one.
set -euo pipefail

declare -A groups=(
  # clang's sanitizer and libFuzzer runtimes are in libclang-rt-14-dev, which clang
  # only recommends (not installed with --no-install-recommends).
  [core]="cmake ninja-build g++ clang libclang-rt-14-dev libeigen3-dev catch2"
  [torch]="libtorch-dev"
  [mpi]="libopenmpi-dev openmpi-bin"
  [fuzz]="clang libclang-rt-14-dev"
  [valgrind]="valgrind"
  [bench]="libbenchmark-dev"
  [train]="python3-torch python3-sklearn python3-numpy libopenblas0-pthread"   # model training (not in CI); OpenBLAS: torch uses the reference BLAS otherwise
  [plots]="python3-matplotlib python3-numpy"             # bench/quality plots (not in CI)
)

wanted=()
for group in "${@:-core}"; do
  [[ -n "${groups[$group]+x}" ]] || { echo "deps.sh: unknown group '$group'" >&2; exit 2; }
  for package in ${groups[$group]}; do wanted+=("$package"); done
done

missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps.sh: run as root or install sudo to add: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
