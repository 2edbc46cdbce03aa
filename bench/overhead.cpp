// The controller's own cost per step, without the denoiser, against memcpy.
//
// For each latent size it times, on float host buffers:
//   skip        a decision step that skips (dx reduction, then out = x + delta)
//   compute     a decision step that computes (dx reduction, then the commit)
//   forced      a forced computed step (warm-up, last step: the commit only)
// the same three step types done the unfused way (one pass per operation, as a
// literal reading of the algorithm would do them), and memcpy of one latent.
// Bandwidth counts the bytes each step type must move (the byte model in
// docs/performance.md), so that its ratio to memcpy's bandwidth says how close
// a step is to the memory system's limit.
//
//   build/bench/bench/easycache_bench_overhead [--benchmark_min_time=0.2]
// writes bench/results/overhead.md and overhead.csv (or the paths in
// EASYCACHE_BENCH_OUT, without extension).
#include <benchmark/benchmark.h>

#include <easycache/easycache.hpp>
#include <easycache/host_buffer.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using view = easycache::host_buffer<float>;

struct latent_size {
  const char* name;
  std::size_t elements;
};

// From an image latent to past every cache: 1x16x64x64 (64 K), Wan2.1 480p
// (16x21x60x104), HunyuanVideo 720p (16x33x90x160), up to 64 M elements.
const latent_size sizes[] = {
    {"image 1x16x64x64", 16u * 64 * 64},       {"256 K", 256u * 1024},
    {"1 M", 1024u * 1024},                     {"Wan 480p 16x21x60x104", 16u * 21 * 60 * 104},
    {"4 M", 4u * 1024 * 1024},                 {"Hunyuan 720p 16x33x90x160", 16u * 33 * 90 * 160},
    {"16 M", 16u * 1024 * 1024},               {"64 M", 64u * 1024 * 1024},
};

// Elements moved per element of the latent (reads + writes) by each step type.
struct byte_model {
  double fused, unfused;
};
const std::map<std::string, byte_model> traffic = {
    {"skip", {6, 7}},       // fused: R x,x_prev | R x,delta W out,x_prev; unfused adds a separate copy pass
    {"compute", {8, 16}},   // fused: R x,x_prev | R x,v,x_last,delta W x_last,delta
    {"forced", {6, 14}},    // fused: the commit alone
    {"memcpy", {2, 2}},
};

std::vector<float> filled(std::size_t n, float phase) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::sin(phase + 0.001f * static_cast<float>(i % 4096));
  return v;
}

// Runs the controller with a configuration that makes every measured step of
// the wanted type, and times only steps of that type.
void controller_step(benchmark::State& state, const std::string& type) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  std::vector<float> x = filled(n, 0.0f), x_next = filled(n, 0.5f), v = filled(n, 1.0f);
  std::vector<float> out(n);
  easycache::config cfg;
  cfg.steps = std::size_t{1} << 40;  // never reach the last step
  cfg.record_trace = false;
  cfg.warmup_steps = type == "forced" ? cfg.steps : 2;
  cfg.threshold = type == "skip" ? std::numeric_limits<double>::infinity() : 0.0;
  easycache::controller<view> cache(cfg);
  view out_view{out.data(), n};
  // The "denoiser" has already written its output: the controller's work only.
  auto denoiser = [&](const view&, view& o) { std::memcpy(o.data, v.data(), n * sizeof(float)); };
  std::size_t t = 0;
  auto one_step = [&](bool timed_denoiser) {
    view in{(t % 2 ? x_next : x).data(), n};
    if (timed_denoiser) {
      cache.step(in, out_view, {t}, denoiser);
    } else {
      cache.step(in, out_view, {t}, [](const view&, view&) {});
    }
    ++t;
  };
  for (int i = 0; i < 3; ++i) one_step(true);  // warm-up steps fill the history with real outputs
  for (auto _ : state) one_step(false);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(traffic.at(type).fused * double(n) * sizeof(float)));
  state.counters["elements"] = static_cast<double>(n);
}

// The same step types, one pass per operation.
void unfused_step(benchmark::State& state, const std::string& type) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  std::vector<float> x = filled(n, 0.0f), v = filled(n, 1.0f), x_prev = filled(n, 0.3f), x_last = filled(n, 0.2f),
                     v_last = filled(n, 0.9f), delta = filled(n, 0.7f), out(n);
  auto mean_abs_diff = [n](const float* a, const float* b) {
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) s += std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    return s / static_cast<double>(n);
  };
  for (auto _ : state) {
    double stats = 0;
    if (type != "forced") stats += mean_abs_diff(x.data(), x_prev.data());         // dx
    std::memcpy(x_prev.data(), x.data(), n * sizeof(float));                        // x_prev = x
    if (type == "skip") {
      for (std::size_t i = 0; i < n; ++i) out[i] = x[i] + delta[i];                 // x + delta
    } else {
      stats += mean_abs_diff(v.data(), v_last.data());                               // |v - v_last|
      stats += mean_abs_diff(x.data(), x_last.data());                               // |x - x_last|
      double norm = 0;
      for (std::size_t i = 0; i < n; ++i) norm += std::abs(static_cast<double>(v[i]));  // |v|
      stats += norm;
      std::memcpy(x_last.data(), x.data(), n * sizeof(float));
      std::memcpy(v_last.data(), v.data(), n * sizeof(float));
      for (std::size_t i = 0; i < n; ++i) delta[i] = v[i] - x[i];
    }
    benchmark::DoNotOptimize(stats);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(traffic.at(type).unfused * double(n) * sizeof(float)));
}

void memcpy_latent(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  std::vector<float> a = filled(n, 0.0f), b(n);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n * sizeof(float));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(2 * n * sizeof(float)));
}

// Collects the runs to print the summary table after the console output.
class collecting_reporter : public benchmark::ConsoleReporter {
 public:
  struct result {
    std::string name;
    double seconds_per_step = 0;
    double bytes_per_second = 0;
  };
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      const auto found = run.counters.find("bytes_per_second");
      results.push_back({run.benchmark_name(), run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit),
                         found == run.counters.end() ? 0.0 : double(found->second)});
    }
  }
  std::vector<result> results;
};

}  // namespace

int main(int argc, char** argv) {
  for (const latent_size& s : sizes) {
    const auto n = static_cast<std::int64_t>(s.elements);
    benchmark::RegisterBenchmark("memcpy", memcpy_latent)->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
    for (const char* type : {"skip", "compute", "forced"}) {
      benchmark::RegisterBenchmark((std::string("fused/") + type).c_str(),
                                   [type](benchmark::State& st) { controller_step(st, type); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark((std::string("unfused/") + type).c_str(),
                                   [type](benchmark::State& st) { unfused_step(st, type); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  collecting_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  const char* out_env = std::getenv("EASYCACHE_BENCH_OUT");
  const std::string base = out_env ? out_env : "bench/results/overhead";
  std::ofstream md(base + ".md"), csv(base + ".csv");
  csv << "size,elements,implementation,step,microseconds,GB_per_s,ratio_to_memcpy,passes\n";
  md << "| latent | elements | memcpy GB/s | step | fused µs | fused GB/s | fused / memcpy | unfused µs | unfused GB/s "
        "| unfused / memcpy |\n|---|---|---|---|---|---|---|---|---|---|\n";
  auto find = [&](const std::string& name, std::size_t n) -> const collecting_reporter::result* {
    const std::string full = name + "/" + std::to_string(n) + "/real_time";
    for (const auto& r : reporter.results)
      if (r.name == full) return &r;
    return nullptr;
  };
  const std::map<std::string, std::pair<int, int>> passes = {{"skip", {2, 3}}, {"compute", {2, 8}}, {"forced", {1, 7}}};
  for (const latent_size& s : sizes) {
    const auto* copy = find("memcpy", s.elements);
    if (!copy) continue;
    for (const char* type : {"skip", "compute", "forced"}) {
      const auto* fused = find(std::string("fused/") + type, s.elements);
      const auto* unfused = find(std::string("unfused/") + type, s.elements);
      if (!fused || !unfused) continue;
      char line[512];
      std::snprintf(line, sizeof line, "| %s | %zu | %.1f | %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |\n", s.name,
                    s.elements, copy->bytes_per_second / 1e9, type, fused->seconds_per_step * 1e6,
                    fused->bytes_per_second / 1e9, fused->bytes_per_second / copy->bytes_per_second,
                    unfused->seconds_per_step * 1e6, unfused->bytes_per_second / 1e9,
                    unfused->bytes_per_second / copy->bytes_per_second);
      md << line;
      for (const auto* r : {fused, unfused}) {
        const bool is_fused = r == fused;
        csv << '"' << s.name << "\"," << s.elements << ',' << (is_fused ? "fused" : "unfused") << ',' << type << ','
            << r->seconds_per_step * 1e6 << ',' << r->bytes_per_second / 1e9 << ','
            << r->bytes_per_second / copy->bytes_per_second << ','
            << (is_fused ? passes.at(type).first : passes.at(type).second) << '\n';
      }
    }
  }
  std::printf("\nwrote %s.md and %s.csv\n", base.c_str(), base.c_str());
  benchmark::Shutdown();
  return 0;
}
