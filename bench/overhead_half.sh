#!/usr/bin/env bash
# Times the controller on 16-bit host tensors (float16, bfloat16; F16C and
# portable conversions; float or 16-bit cached vectors; host_view) side by
# side with float host buffers and memcpy, one thread, and writes
# bench/results/overhead_half.{csv,md} (medians of the repetitions).
#   bench/overhead_half.sh [google-benchmark options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh core bench
cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DEASYCACHE_BUILD_TESTS=OFF \
  -DEASYCACHE_BUILD_EXAMPLES=OFF -DEASYCACHE_BUILD_BENCHMARKS=ON >/dev/null
cmake --build build/bench --target easycache_bench_overhead_half easycache_bench_overhead_half_portable
options=(--benchmark_repetitions=5 --benchmark_min_time=0.2 --benchmark_report_aggregates_only=true "$@")
csv=bench/results/overhead_half.csv
echo "row,step,elements,microseconds" >"$csv"
for program in easycache_bench_overhead_half easycache_bench_overhead_half_portable; do
  build/bench/bench/$program "${options[@]}" --benchmark_format=csv 2>/dev/null |
    awk -F, '/_median"?,/ { name=$1; gsub(/"/, "", name); sub(/_median$/, "", name);
                            n=split(name, part, "/"); step=(n==4 ? part[2] : "copy");
                            elements=(n==4 ? part[3] : part[2]);
                            printf "%s,%s,%s,%.1f\n", part[1], step, elements, $3 }' >>"$csv"
done
rows=("float16 (float cache)" "float16 portable (float cache)" "float16 (float16 cache)"
      "float16 portable (float16 cache)" "bfloat16 (float cache)" "float16 host_view")
{
  printf "| elements | step | memcpy 4 B µs | memcpy 2 B µs | float µs |"
  for r in "${rows[@]}"; do printf " %s µs (× float) |" "$r"; done
  printf "\n|---|---|---|---|---|"
  for r in "${rows[@]}"; do printf -- "---|"; done
  printf "\n"
  awk -F, -v rows="$(IFS='|'; echo "${rows[*]}")" '
    NR > 1 { t[$1 "|" $2 "|" $3] = $4; if ($2 != "copy") { key[$3 "|" $2] = 1; e[$3 "|" $2] = $3; s[$3 "|" $2] = $2 } }
    END { count = split(rows, r, "|");
          for (k in key) { n = e[k]; st = s[k]; f = t["float|" st "|" n];
            line = sprintf("| %s | %s | %s | %s | %s |", n, st, t["memcpy 4 B|copy|" n], t["memcpy 2 B|copy|" n], f);
            for (i = 1; i <= count; ++i) { v = t[r[i] "|" st "|" n]; line = line sprintf(" %s (%.2f) |", v, v / f) }
            print line } }' "$csv" | sort -t'|' -k2,2n -k3,3
} >bench/results/overhead_half.md
cat bench/results/overhead_half.md
echo "command: bench/overhead_half.sh $*" >>bench/results/overhead_half.md
