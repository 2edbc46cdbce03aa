// The controller's cost per step on at::Tensor (CPU, float32), against the
// same controller on host buffers (the fused passes Eigen uses) and memcpy.
// Built twice: as easycache_bench_overhead_torch (CPU float tensors take the
// fused host passes) and as easycache_bench_overhead_torch_aten
// (EASYCACHE_TORCH_ATEN_ONLY: the same tensors through ATen operations), so
// that the two paths are timed side by side. bench/overhead_torch.sh runs both
// and writes bench/results/overhead_torch.{md,csv}.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <easycache/backends/host_buffer.hpp>
#include <easycache/backends/torch.hpp>
#include <easycache/easycache.hpp>

namespace {

#if defined(EASYCACHE_TORCH_ATEN_ONLY)
constexpr const char* torch_row = "at::Tensor ATen path";
#else
constexpr const char* torch_row = "at::Tensor fused path";
#endif

// 1 M, HunyuanVideo 720p (16x33x90x160), 64 M elements.
const std::int64_t sizes[] = {1024 * 1024, 16 * 33 * 90 * 160, 64 * 1024 * 1024};

easycache::config config_for(const std::string& type) {
  easycache::config cfg;
  cfg.steps = std::size_t{1} << 40;  // never reach the last step
  cfg.record_trace = false;
  cfg.warmup_steps = type == "forced" ? cfg.steps : 2;
  cfg.threshold = type == "skip" ? std::numeric_limits<double>::infinity() : 0.0;
  return cfg;
}

// Runs steps whose type is `type` (after three that fill the history) and
// times the controller's work only: the denoiser writes nothing when timed.
template <class Tensor, class Make, class Fill>
void controller_steps(benchmark::State& state, const std::string& type, Make make, Fill fill) {
  const auto n = static_cast<std::size_t>(state.range(0));
  Tensor x = make(n, 0.0f), x_next = make(n, 0.5f), v = make(n, 1.0f), out = make(n, 0.0f);
  easycache::controller<Tensor> cache(config_for(type));
  std::size_t t = 0;
  for (int i = 0; i < 3; ++i, ++t) cache.step(t % 2 ? x_next : x, out, {t}, [&](const Tensor&, Tensor& o) { fill(o, v); });
  for (auto _ : state) {
    cache.step(t % 2 ? x_next : x, out, {t}, [](const Tensor&, Tensor&) {});
    ++t;
  }
  state.counters["elements"] = static_cast<double>(n);
}

std::vector<std::vector<float>> storage;  // the host buffers' memory, kept for the run

[[maybe_unused]] void host_buffer_steps(benchmark::State& state, const std::string& type) {
  using view = easycache::host_buffer<float>;
  storage.clear();
  controller_steps<view>(
      state, type,
      [](std::size_t n, float phase) {
        storage.emplace_back(n);
        for (std::size_t i = 0; i < n; ++i) storage.back()[i] = std::sin(phase + 0.001f * float(i % 4096));
        return view{storage.back().data(), n};
      },
      [](view& o, const view& v) { std::memcpy(o.data, v.data, v.size * sizeof(float)); });
}

void torch_steps(benchmark::State& state, const std::string& type) {
  controller_steps<at::Tensor>(
      state, type,
      [](std::size_t n, float phase) {
        const at::Tensor i = at::arange(static_cast<std::int64_t>(n), at::kFloat).remainder_(4096);
        return at::sin(i.mul_(0.001f).add_(phase));
      },
      [](at::Tensor& o, const at::Tensor& v) { o.copy_(v); });
}

[[maybe_unused]] void memcpy_latent(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<float> a(n, 1.0f), b(n);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n * sizeof(float));
    benchmark::DoNotOptimize(b.data());
  }
  state.counters["elements"] = static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);  // one thread, as the host passes run on the caller's
  for (const std::int64_t n : sizes) {
#if !defined(EASYCACHE_TORCH_ATEN_ONLY)
    benchmark::RegisterBenchmark("memcpy", memcpy_latent)->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif
    for (const char* type : {"skip", "compute", "forced"}) {
#if !defined(EASYCACHE_TORCH_ATEN_ONLY)
      benchmark::RegisterBenchmark((std::string("host_buffer/") + type).c_str(),
                                   [type](benchmark::State& st) { host_buffer_steps(st, type); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif
      benchmark::RegisterBenchmark((std::string(torch_row) + "/" + type).c_str(),
                                   [type](benchmark::State& st) { torch_steps(st, type); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
