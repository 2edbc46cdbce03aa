// The controller's cost per step on 16-bit host tensors, against float ones:
// host_buffer<float> (the reference), host_buffer<float16> and
// host_buffer<bfloat16> with float cached vectors (the default), float16 with
// 16-bit cached vectors (host_tensor_traits' third argument), and host_view
// (the dtype a run-time value) over float16. Built twice: with the F16C
// conversions where the CPU has them, and with EASYCACHE_DISABLE_F16C (the
// portable conversions). bench/overhead_half.sh runs both and writes
// bench/results/overhead_half.{md,csv}.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <string>
#include <vector>

#include <easycache/backends/host_buffer.hpp>
#include <easycache/easycache.hpp>
#include <easycache/view_traits.hpp>

namespace {

#if defined(EASYCACHE_DISABLE_F16C)
constexpr const char* variant = " portable";
#else
constexpr const char* variant = "";
#endif

// 1 M, Wan2.1 480p (16x21x60x104), HunyuanVideo 720p (16x33x90x160).
const std::int64_t sizes[] = {1024 * 1024, 16 * 21 * 60 * 104, 16 * 33 * 90 * 160};

// float16 with its cached vectors in float16 too.
struct half_cached_in_half {
  easycache::float16* data;
  std::size_t size;
};

}  // namespace

template <>
struct easycache::tensor_traits<half_cached_in_half>
    : easycache::host_tensor_traits<half_cached_in_half, easycache::float16, easycache::float16> {
  static easycache::float16* data(const half_cached_in_half& t) noexcept { return t.data; }
  static std::size_t size(const half_cached_in_half& t) noexcept { return t.size; }
};

namespace {

easycache::config config_for(const std::string& type) {
  easycache::config cfg;
  cfg.steps = std::size_t{1} << 40;  // never reach the last step
  cfg.record_trace = false;
  cfg.warmup_steps = type == "forced" ? cfg.steps : 2;
  cfg.threshold = type == "skip" ? std::numeric_limits<double>::infinity() : 0.0;
  return cfg;
}

template <class Element>
struct memory {
  std::deque<std::vector<Element>> blocks;
  Element* make(std::size_t n, float phase) {
    blocks.emplace_back(n);
    for (std::size_t i = 0; i < n; ++i) blocks.back()[i] = Element(std::sin(phase + 0.001f * float(i % 4096)));
    return blocks.back().data();
  }
};

// Runs steps whose type is `type` (after three that fill the history) and
// times the controller's work only: the denoiser writes nothing when timed.
template <class Tensor, class Element, class Wrap>
void controller_steps(benchmark::State& state, const std::string& type, Wrap wrap) {
  const auto n = static_cast<std::size_t>(state.range(0));
  memory<Element> m;
  Tensor x = wrap(m.make(n, 0.0f), n), x_next = wrap(m.make(n, 0.5f), n), out = wrap(m.make(n, 0.0f), n);
  const Element* v = m.make(n, 1.0f);
  easycache::controller<Tensor> cache(config_for(type));
  std::size_t t = 0;
  for (int i = 0; i < 3; ++i, ++t)
    cache.step(t % 2 ? x_next : x, out, {t}, [&](const Tensor&, Tensor& o) {
      std::memcpy(o.data, v, n * sizeof(Element));
    });
  for (auto _ : state) {
    cache.step(t % 2 ? x_next : x, out, {t}, [](const Tensor&, Tensor&) {});
    ++t;
  }
  state.counters["elements"] = static_cast<double>(n);
}

template <class Element>
easycache::host_buffer<Element> as_buffer(Element* p, std::size_t n) {
  return {p, n};
}

void memcpy_latent(benchmark::State& state, std::size_t element_bytes) {
  const auto n = static_cast<std::size_t>(state.range(0)) * element_bytes;
  std::vector<unsigned char> a(n, 1), b(n);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::DoNotOptimize(b.data());
  }
  state.counters["elements"] = static_cast<double>(state.range(0));
}

template <class F>
void add(const std::string& row, const char* type, std::int64_t n, F f) {
  benchmark::RegisterBenchmark((row + "/" + type).c_str(), [f, type](benchmark::State& st) { f(st, type); })
      ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  using easycache::bfloat16;
  using easycache::float16;
  const std::string f16 = std::string("float16") + variant;
  for (const std::int64_t n : sizes) {
    const bool reference = variant[0] == '\0';
    if (reference) {
      benchmark::RegisterBenchmark("memcpy 4 B/copy", [](benchmark::State& st) { memcpy_latent(st, 4); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("memcpy 2 B/copy", [](benchmark::State& st) { memcpy_latent(st, 2); })
          ->Arg(n)->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
    for (const char* type : {"skip", "compute", "forced"}) {
      if (reference)
        add("float", type, n, [](benchmark::State& st, const std::string& ty) {
          controller_steps<easycache::host_buffer<float>, float>(st, ty, as_buffer<float>);
        });
      add(f16 + " (float cache)", type, n, [](benchmark::State& st, const std::string& ty) {
        controller_steps<easycache::host_buffer<float16>, float16>(st, ty, as_buffer<float16>);
      });
      add(f16 + " (float16 cache)", type, n, [](benchmark::State& st, const std::string& ty) {
        controller_steps<half_cached_in_half, float16>(st, ty,
                                                       [](float16* p, std::size_t k) { return half_cached_in_half{p, k}; });
      });
      add(f16 + " host_view", type, n, [](benchmark::State& st, const std::string& ty) {
        controller_steps<easycache::host_view, float16>(st, ty,
                                                        [](float16* p, std::size_t k) { return easycache::host_view(p, k); });
      });
      if (reference)
        add("bfloat16 (float cache)", type, n, [](benchmark::State& st, const std::string& ty) {
          controller_steps<easycache::host_buffer<bfloat16>, bfloat16>(st, ty, as_buffer<bfloat16>);
        });
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
