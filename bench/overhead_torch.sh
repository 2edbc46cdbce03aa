#!/usr/bin/env bash
# Times the controller on at::Tensor (CPU, float32, one thread): the fused
# host path and the ATen path side by side with host buffers and memcpy, and
# writes bench/results/overhead_torch.{csv,md} (medians of the repetitions).
#   bench/overhead_torch.sh [google-benchmark options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh core torch bench
cmake -S . -B build/bench-torch -G Ninja -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_BUILD_TESTS=OFF \
  -DEASYCACHE_BUILD_EXAMPLES=OFF -DEASYCACHE_BUILD_BENCHMARKS=ON -DEASYCACHE_TORCH=ON >/dev/null
cmake --build build/bench-torch --target easycache_bench_overhead_torch easycache_bench_overhead_torch_aten
options=(--benchmark_repetitions=3 --benchmark_min_time=0.2 --benchmark_report_aggregates_only=true "$@")
csv=bench/results/overhead_torch.csv
echo "row,step,elements,microseconds" >"$csv"
for program in easycache_bench_overhead_torch easycache_bench_overhead_torch_aten; do
  build/bench-torch/bench/$program "${options[@]}" --benchmark_format=csv 2>/dev/null |
    awk -F, '/_median"?,/ { name=$1; gsub(/"/, "", name); sub(/_median$/, "", name);
                            n=split(name, part, "/"); step=(n==4 ? part[2] : "copy");
                            elements=(n==4 ? part[3] : part[2]);
                            printf "%s,%s,%s,%.1f\n", part[1], step, elements, $3 }' >>"$csv"
done
{
  echo "| elements | step | memcpy µs | host_buffer µs | at::Tensor fused µs | at::Tensor ATen µs | fused / host_buffer | ATen / fused |"
  echo "|---|---|---|---|---|---|---|---|"
  awk -F, 'NR > 1 { t[$1 "|" $2 "|" $3] = $4; if ($2 != "copy") { key[$3 "|" $2] = 1; e[$3 "|" $2] = $3; s[$3 "|" $2] = $2 } }
    END { for (k in key) { n = e[k]; st = s[k];
            m = t["memcpy|copy|" n]; h = t["host_buffer|" st "|" n];
            f = t["at::Tensor fused path|" st "|" n]; a = t["at::Tensor ATen path|" st "|" n];
            printf "| %s | %s | %s | %s | %s | %s | %.2f | %.2f |\n", n, st, m, h, f, a, f / h, a / f } }' "$csv" | sort -t'|' -k2,2n -k3,3
} >bench/results/overhead_torch.md
cat bench/results/overhead_torch.md
echo "command: bench/overhead_torch.sh $*" >>bench/results/overhead_torch.md
