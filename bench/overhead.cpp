// The controller's own cost per step, without the denoiser, against memcpy.
//
// For each latent size it times, on float host buffers:
//   skip        a decision step that skips (dx reduction, then out = x + delta)
//   compute     a decision step that computes (dx reduction, then the commit)
//   forced      a forced computed step (warm-up, last step: the commit only)
// the same fused passes split over two threads (the library itself runs on the
// caller's thread; this measures what a second core would give),
// the same three step types done the unfused way (one pass per operation, as a
// literal reading of the algorithm would do them), and memcpy of one latent.
// Bandwidth counts the bytes each step type must move (the byte model in
// docs/performance.md), so that its ratio to memcpy's bandwidth says how close
// a step is to the memory system's limit.
//
//   build/bench/bench/easycache_bench_overhead --benchmark_repetitions=5 --benchmark_min_time=0.1
// writes bench/results/overhead.md and overhead.csv (or the paths in
// EASYCACHE_BENCH_OUT, without extension).
#include <benchmark/benchmark.h>

#include <atomic>
#include <functional>
#include <thread>

#include <easycache/detail/host_kernels.hpp>
#include <easycache/detail/simd.hpp>
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>

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

#include <unistd.h>

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

// A second thread that runs one job at a time while the caller runs its own
// half; it spins between jobs, so that a step pays no wake-up latency.
class helper_thread {
 public:
  helper_thread() : thread_([this] { loop(); }) {}
  ~helper_thread() {
    stop_.store(true, std::memory_order_release);
    thread_.join();
  }
  // Runs `theirs` on the helper and `mine` here; returns when both are done.
  void run(const std::function<void()>& theirs, const std::function<void()>& mine) {
    job_ = &theirs;
    const unsigned ticket = posted_.fetch_add(1, std::memory_order_acq_rel) + 1;
    mine();
    while (finished_.load(std::memory_order_acquire) != ticket) std::this_thread::yield();
  }

 private:
  void loop() {
    unsigned seen = 0;
    while (!stop_.load(std::memory_order_acquire)) {
      const unsigned posted = posted_.load(std::memory_order_acquire);
      if (posted == seen) continue;
      (*job_)();
      seen = posted;
      finished_.store(posted, std::memory_order_release);
    }
  }
  const std::function<void()>* job_ = nullptr;
  std::atomic<unsigned> posted_{0}, finished_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The fused passes of each step type, each split in two halves over two threads.
void two_thread_step(benchmark::State& state, const std::string& type) {
  namespace host = easycache::detail::host;
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  const std::size_t half = n / 2 / 8 * 8;
  std::vector<float> x = filled(n, 0.0f), v = filled(n, 1.0f), x_prev = filled(n, 0.3f), x_last = filled(n, 0.2f),
                     delta = filled(n, 0.7f), out(n);
  helper_thread helper;
  double sums[2] = {};
  auto reduce = [&](std::size_t part) {
    const std::size_t begin = part ? half : 0, count = part ? n - half : half;
    sums[part] = host::sum_abs_diff(x.data() + begin, x_prev.data() + begin, count, {});
  };
  auto apply = [&](std::size_t part) {
    const std::size_t begin = part ? half : 0, count = part ? n - half : half;
    host::add(x.data() + begin, delta.data() + begin, out.data() + begin, x_prev.data() + begin, count);
  };
  auto commit = [&](std::size_t part) {
    const std::size_t begin = part ? half : 0, count = part ? n - half : half;
    const auto c = host::commit(x.data() + begin, v.data() + begin, x_last.data() + begin, delta.data() + begin,
                                count, true, {});
    sums[part] += c.output_change + c.input_change + c.output_norm;
  };
  const std::function<void()> reduce_1 = [&] { reduce(1); }, reduce_0 = [&] { reduce(0); };
  const std::function<void()> apply_1 = [&] { apply(1); }, apply_0 = [&] { apply(0); };
  const std::function<void()> commit_1 = [&] { commit(1); }, commit_0 = [&] { commit(0); };
  for (auto _ : state) {
    if (type != "forced") helper.run(reduce_1, reduce_0);
    if (type == "skip") {
      helper.run(apply_1, apply_0);
    } else {
      helper.run(commit_1, commit_0);
    }
    benchmark::DoNotOptimize(sums);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(traffic.at(type).fused * double(n) * sizeof(float)));
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

// A copy with ordinary (cached) vector stores: the fastest a pass that writes
// through the cache can be. glibc's memcpy uses `rep movsb` or non-temporal
// stores depending on the size, which on some machines is far slower or far
// faster than that, so both baselines are reported.
void copy_loop_latent(benchmark::State& state) {
  namespace simd = easycache::detail::simd;
  const std::size_t n = static_cast<std::size_t>(state.range(0));
  std::vector<float> a = filled(n, 0.0f), b(n);
  for (auto _ : state) {
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) simd::store(b.data() + i, simd::load(a.data() + i));
    for (; i < n; ++i) b[i] = a[i];
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(2 * n * sizeof(float)));
}

// Collects the runs to print the summary table after the console output.
class collecting_reporter : public benchmark::ConsoleReporter {
 public:
  // Colours only on a terminal, so that a saved console log is plain text.
  collecting_reporter() : ConsoleReporter(isatty(fileno(stdout)) ? OO_ColorTabular : OO_Tabular) {}
  struct result {
    std::string name;
    double seconds_per_step = 0;
    double bytes_per_second = 0;
  };
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      // One figure per benchmark: the median of the repetitions when there are
      // several (this machine's bandwidth drifts by tens of percent), else the run.
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      const bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
      if (!(median || single) || run.error_occurred) continue;
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
    benchmark::RegisterBenchmark("copy_loop", copy_loop_latent)->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
    for (const char* type : {"skip", "compute", "forced"}) {
      benchmark::RegisterBenchmark((std::string("fused/") + type).c_str(),
                                   [type](benchmark::State& st) { controller_step(st, type); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark((std::string("unfused/") + type).c_str(),
                                   [type](benchmark::State& st) { unfused_step(st, type); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark((std::string("two_threads/") + type).c_str(),
                                   [type](benchmark::State& st) { two_thread_step(st, type); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  collecting_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  const char* out_env = std::getenv("EASYCACHE_BENCH_OUT");
  const std::string base = out_env ? out_env : "bench/results/overhead";
  std::ofstream md(base + ".md"), csv(base + ".csv");
  csv << "size,elements,implementation,step,microseconds,GB_per_s,ratio_to_memcpy,ratio_to_copy_loop,passes\n";
  md << "| latent | elements | memcpy GB/s | copy loop GB/s | step | fused µs | fused GB/s | fused / memcpy "
        "| fused / copy loop | unfused µs | unfused / memcpy | 2 threads µs | 2 threads / memcpy |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  auto find = [&](const std::string& name, std::size_t n) -> const collecting_reporter::result* {
    const std::string full = name + "/" + std::to_string(n) + "/real_time";
    for (const auto& r : reporter.results)
      if (r.name == full || r.name == full + "_median") return &r;
    return nullptr;
  };
  const std::map<std::string, std::pair<int, int>> passes = {{"skip", {2, 3}}, {"compute", {2, 8}}, {"forced", {1, 7}}};
  for (const latent_size& s : sizes) {
    const auto* copy = find("memcpy", s.elements);
    const auto* loop = find("copy_loop", s.elements);
    if (!copy || !loop) continue;
    for (const char* type : {"skip", "compute", "forced"}) {
      const auto* fused = find(std::string("fused/") + type, s.elements);
      const auto* unfused = find(std::string("unfused/") + type, s.elements);
      const auto* threads = find(std::string("two_threads/") + type, s.elements);
      if (!fused || !unfused || !threads) continue;
      char line[512];
      std::snprintf(line, sizeof line,
                    "| %s | %zu | %.1f | %.1f | %s | %.1f | %.1f | %.2f | %.2f | %.1f | %.2f | %.1f | %.2f |\n", s.name,
                    s.elements, copy->bytes_per_second / 1e9, loop->bytes_per_second / 1e9, type,
                    fused->seconds_per_step * 1e6, fused->bytes_per_second / 1e9,
                    fused->bytes_per_second / copy->bytes_per_second, fused->bytes_per_second / loop->bytes_per_second,
                    unfused->seconds_per_step * 1e6, unfused->bytes_per_second / copy->bytes_per_second,
                    threads->seconds_per_step * 1e6, threads->bytes_per_second / copy->bytes_per_second);
      md << line;
      const std::pair<const char*, const collecting_reporter::result*> rows[] = {
          {"fused", fused}, {"unfused", unfused}, {"two_threads", threads}};
      for (const auto& [implementation, r] : rows) {
        const bool is_unfused = r == unfused;
        csv << '"' << s.name << "\"," << s.elements << ',' << implementation << ',' << type << ','
            << r->seconds_per_step * 1e6 << ',' << r->bytes_per_second / 1e9 << ','
            << r->bytes_per_second / copy->bytes_per_second << ',' << r->bytes_per_second / loop->bytes_per_second
            << ',' << (is_unfused ? passes.at(type).second : passes.at(type).first) << '\n';
      }
    }
  }
  std::printf("\nwrote %s.md and %s.csv\n", base.c_str(), base.c_str());
  benchmark::Shutdown();
  return 0;
}
