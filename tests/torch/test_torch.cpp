// The LibTorch backend against Eigen: the same scripted trajectories give the
// same decisions, statistics and outputs; bad tensors get a clear error.
//
// One executable for both devices: `--device cpu` (the default) or
// `--device cuda`, which exits with code 77 (CTest: skipped) when LibTorch has
// no CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/Event.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Optional.h>
#include <easycache/easycache.hpp>
#include <easycache/backends/torch.hpp>
#include <easycache/backends/host_buffer.hpp>

// After ATen: c10's logging header defines a glog-style CHECK (fatal on
// failure, silent on success) that would otherwise replace Catch's.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "../backend_comparison.hpp"

using Catch::Matchers::Contains;

static_assert(easycache::is_tensor_v<at::Tensor>);
static_assert(easycache::is_resizable_tensor_v<at::Tensor>);
static_assert(easycache::detail::has_extrapolation<at::Tensor>::value, "the linear predictor works on at::Tensor");

namespace {

at::Device device = at::kCPU;

// The script's tensors: [2, 2, 6, 8] (batch, channels, height, width) = 192 elements.
struct torch_backend {
  at::ScalarType dtype = at::kFloat;
  std::vector<std::int64_t> shape{2, 2, 6, 8};

  at::Tensor make(const std::vector<double>& v) const {
    at::Tensor host = at::empty({std::int64_t(v.size())}, at::kDouble);
    std::copy(v.begin(), v.end(), host.data_ptr<double>());
    return host.to(device, dtype).view(shape);
  }
  std::vector<double> values(const at::Tensor& t) const {
    const at::Tensor host = t.to(at::kCPU, at::kDouble).contiguous();
    return std::vector<double>(host.data_ptr<double>(), host.data_ptr<double>() + host.numel());
  }
  void write(const std::vector<double>& v, at::Tensor& out) const { out.copy_(make(v)); }
};

bool fused_on_this_device() {
#if defined(EASYCACHE_TORCH_ATEN_ONLY)
  return false;
#else
  return device == at::kCPU;
#endif
}

}  // namespace

// 16-bit host tensors that keep their cached vectors in 16 bits, as CPU at::Tensor does.
struct half_tensor {
  easycache::float16* data;
  std::size_t size;
};
struct bfloat16_tensor {
  easycache::bfloat16* data;
  std::size_t size;
};
template <>
struct easycache::tensor_traits<half_tensor>
    : easycache::host_tensor_traits<half_tensor, easycache::float16, easycache::float16> {
  static easycache::float16* data(const half_tensor& t) noexcept { return t.data; }
  static std::size_t size(const half_tensor& t) noexcept { return t.size; }
};
template <>
struct easycache::tensor_traits<bfloat16_tensor>
    : easycache::host_tensor_traits<bfloat16_tensor, easycache::bfloat16, easycache::bfloat16> {
  static easycache::bfloat16* data(const bfloat16_tensor& t) noexcept { return t.data; }
  static std::size_t size(const bfloat16_tensor& t) noexcept { return t.size; }
};

namespace {

// The script's values rounded to Element as ATen rounds them (through c10's conversion).
template <class Element, class Tensor>
struct sixteen_bit_backend {
  std::deque<std::vector<Element>> memory;
  using aten = std::conditional_t<std::is_same_v<Element, easycache::float16>, at::Half, at::BFloat16>;

  static Element rounded(double v) {
    const aten a = static_cast<aten>(static_cast<float>(v));  // double to float to 16 bits, as c10 converts
    Element e;
    std::memcpy(&e, &a, 2);
    return e;
  }
  Tensor make(const std::vector<double>& v) {
    memory.emplace_back(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) memory.back()[i] = rounded(v[i]);
    return {memory.back().data(), v.size()};
  }
  std::vector<double> values(const Tensor& t) const {
    std::vector<double> v(t.size);
    for (std::size_t i = 0; i < t.size; ++i) v[i] = static_cast<double>(static_cast<float>(t.data[i]));
    return v;
  }
  void write(const std::vector<double>& v, Tensor& out) const {
    for (std::size_t i = 0; i < v.size(); ++i) out.data[i] = rounded(v[i]);
  }
};

script::result run_torch(at::ScalarType dtype, const easycache::config& cfg) {
  torch_backend backend{dtype};
  return script::run<at::Tensor>(backend, cfg, script::size);
}

at::TensorOptions on_device(at::ScalarType dtype = at::kFloat) { return at::TensorOptions().dtype(dtype).device(device); }

easycache::config small() {
  easycache::config cfg;
  cfg.steps = 8;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.5;
  return cfg;
}

// v = x + 8, written into the prepared output.
void affine(const at::Tensor& x, at::Tensor& out) { at::add_out(out, x, at::full_like(x, 8.0)); }

}  // namespace

TEST_CASE("float32 and float64 tensors take Eigen's decisions with Eigen's statistics", "[torch]") {
  for (const easycache::config& cfg : script::configurations(0.3)) {
    INFO(script::describe(cfg));
    const script::result reference = script::run_eigen<double>(cfg, script::size);
    REQUIRE(reference.stats.skips > 0);
    REQUIRE(script::margin(reference, cfg.threshold) > 1e-3);
    script::compare(run_torch(at::kDouble, cfg), reference, cfg.branches, 1e-9);
    script::compare(run_torch(at::kFloat, cfg), script::run_eigen<float>(cfg, script::size), cfg.branches, 1e-5);
  }
}

#if !defined(EASYCACHE_TORCH_ATEN_ONLY)
TEST_CASE("CPU float32 and float64 tensors take the fused host passes: Eigen's results bit for bit", "[torch][fused]") {
  if (device != at::kCPU) return;  // CUDA tensors take the ATen path
  for (const easycache::config& cfg : script::configurations(0.3)) {
    INFO(script::describe(cfg));
    // The same passes as Eigen's: every statistic and output equal, not close,
    // the trace's realized_error included.
    const script::result torch_double = run_torch(at::kDouble, cfg), torch_float = run_torch(at::kFloat, cfg);
    const script::result eigen_double = script::run_eigen<double>(cfg, script::size);
    const script::result eigen_float = script::run_eigen<float>(cfg, script::size);
    script::compare(torch_double, eigen_double, cfg.branches, 0.0);
    script::compare(torch_float, eigen_float, cfg.branches, 0.0);
    std::size_t measured = 0;
    for (std::size_t i = 0; i < eigen_float.trace.size(); ++i) {
      INFO("evaluation " << i);
      for (const auto* pair : {&torch_double, &torch_float}) {
        const double got = pair->trace[i].realized_error;
        const double want = (pair == &torch_double ? eigen_double : eigen_float).trace[i].realized_error;
        CHECK((got == want || (std::isnan(got) && std::isnan(want))));
      }
      measured += std::isfinite(eigen_float.trace[i].realized_error);
    }
    CHECK(measured > 0);
  }
}
#endif

TEST_CASE("float16 and bfloat16 tensors take Eigen's decisions where no decision is near a tie", "[torch]") {
  for (const easycache::config& base : script::configurations(0.3)) {
    const easycache::config cfg = script::far_from_ties(base);
    INFO(script::describe(cfg));
    const script::result reference = script::run_eigen<double>(cfg, script::size);
    // The rounding of 16-bit elements moves the statistics by well under 5%.
    REQUIRE(script::margin(reference, cfg.threshold) > 0.05);
    const script::result half = run_torch(at::kHalf, cfg);
    script::compare(half, reference, cfg.branches, 2e-2);
    script::compare(run_torch(at::kBFloat16, cfg), reference, cfg.branches, 5e-2);
    // CPU tensors take the fused passes, which measure the realized error; the
    // ATen path (CUDA) does not: NaN, never a wrong number.
    std::size_t measured = 0;
    for (const auto& r : half.trace) measured += !std::isnan(r.realized_error);
    if (fused_on_this_device())
      CHECK(measured > 0);
    else
      CHECK(measured == 0);
  }
}

#if !defined(EASYCACHE_TORCH_ATEN_ONLY)
TEST_CASE("CPU float16 and bfloat16 tensors take the fused host passes: a 16-bit host tensor's results bit for bit",
          "[torch][fused]") {
  if (device != at::kCPU) return;
  for (const easycache::config& cfg : script::configurations(0.3)) {
    INFO(script::describe(cfg));
    sixteen_bit_backend<easycache::float16, half_tensor> half;
    sixteen_bit_backend<easycache::bfloat16, bfloat16_tensor> bf16;
    const script::result want_half = script::run<half_tensor>(half, cfg, script::size);
    const script::result want_bf16 = script::run<bfloat16_tensor>(bf16, cfg, script::size);
    REQUIRE(want_half.stats.skips > 0);
    script::compare(run_torch(at::kHalf, cfg), want_half, cfg.branches, 0.0);
    script::compare(run_torch(at::kBFloat16, cfg), want_bf16, cfg.branches, 0.0);
  }
}
#endif

TEST_CASE("the linear predictor's skipped outputs are Eigen's on every dtype", "[torch][predictor]") {
  // configurations() includes the predictor; this case also checks that the
  // comparison would see a backend that ignored the extrapolation.
  const easycache::config cfg = script::linear_predictor(script::configurations(0.3).front());
  REQUIRE(script::linear_predictor_effect(cfg) > 100 * 1e-5);
  script::compare(run_torch(at::kDouble, cfg), script::run_eigen<double>(cfg, script::size), cfg.branches, 1e-9);
  script::compare(run_torch(at::kFloat, cfg), script::run_eigen<float>(cfg, script::size), cfg.branches, 1e-5);
  const easycache::config far = script::far_from_ties(cfg);
  REQUIRE(script::linear_predictor_effect(far) > 4 * 5e-2);
  const script::result reference = script::run_eigen<double>(far, script::size);
  script::compare(run_torch(at::kHalf, far), reference, far.branches, 2e-2);
  script::compare(run_torch(at::kBFloat16, far), reference, far.branches, 5e-2);
}

namespace {
// The script on LibTorch's current stream, which alternates between two CUDA
// streams from step to step (each waits for the work queued on the other);
// on the CPU, the one default stream.
struct alternating_streams_backend : torch_backend {
  std::vector<c10::Stream> streams;
  c10::optional<c10::StreamGuard> current;

  void begin_step(std::size_t t) {
    if (!device.is_cuda()) return;
    const c10::impl::DeviceGuardImplInterface* cuda = c10::impl::getDeviceGuardImpl(device.type());
    if (streams.empty())
      for (int i = 0; i < 2; ++i) streams.push_back(cuda->getStreamFromGlobalPool(device));
    const c10::Stream next = streams[t % 2];
    c10::Event queued(device.type());
    queued.record(cuda->getStream(device));
    queued.block(next);
    current.reset();
    current.emplace(next);
  }
};
}  // namespace

TEST_CASE("a controller whose steps move between streams decides and predicts as on one", "[torch][predictor]") {
  for (const easycache::config& cfg : {script::configurations(0.3).front(),
                                       script::linear_predictor(script::configurations(0.3).front())}) {
    INFO(script::describe(cfg));
    alternating_streams_backend backend;
    script::result got = script::run<at::Tensor>(backend, cfg, script::size);
    backend.current.reset();
    script::compare(got, script::run_eigen<float>(cfg, script::size), cfg.branches, 1e-5);
  }
}

TEST_CASE("the controller writes into the caller's tensor, or sizes an undefined one", "[torch]") {
  easycache::controller<at::Tensor> cache(small());
  at::Tensor out = at::empty({3, 4}, on_device());  // caller's memory
  const void* memory = out.data_ptr();
  for (std::size_t t = 0; t < 8; ++t) {
    const at::Tensor x = at::full({3, 4}, double(t), on_device());
    cache.step(x, out, {t}, affine);
    CHECK(out.data_ptr() == memory);
    CHECK(at::equal(out, x + 8.0));
  }
  CHECK(cache.stats().skips == 4);

  // The returning overload: a new tensor of x's shape, dtype and device.
  easycache::controller<at::Tensor> owning(small());
  for (std::size_t t = 0; t < 8; ++t) {
    const at::Tensor x = at::full({2, 3, 2}, double(t), on_device(at::kHalf));
    const at::Tensor v = owning.step(x, {t}, [](const at::Tensor& in) { return in + 8.0; });
    CHECK(v.sizes() == x.sizes());
    CHECK(v.scalar_type() == at::kHalf);
    CHECK(v.device() == x.device());
    CHECK(at::equal(v, x + 8.0));
  }
  CHECK(owning.stats().skips == 4);
}

TEST_CASE("bad tensors are refused with the bad value named, and the controller stays usable", "[torch][errors]") {
  easycache::controller<at::Tensor> cache(small());
  auto step = [&](std::size_t t, const at::Tensor& x) {
    at::Tensor out;
    cache.step(x, out, {t}, affine);
    return out;
  };
  const at::Tensor wide = at::zeros({4, 6}, on_device());
  CHECK_THROWS_WITH(step(0, wide.t()), Contains("not contiguous (sizes [6, 4], strides [1, 6])"));
  CHECK_THROWS_WITH(step(0, at::zeros({4}, on_device(at::kInt))), Contains("dtype Int"));
  CHECK_THROWS_WITH(step(0, at::Tensor()), Contains("undefined"));
  CHECK_THROWS_WITH(step(0, at::zeros({4}, at::TensorOptions().device(at::kMeta))), Contains("device meta"));
  CHECK_THROWS_AS(step(0, wide.t()), easycache::error);

  for (std::size_t t = 0; t < 3; ++t) step(t, at::full({4, 6}, double(t), on_device()));
  // dtype changed mid-generation: refused before the denoiser runs; step 3 can be retried.
  int calls = 0;
  at::Tensor out;
  const at::Tensor half = at::full({4, 6}, 3.0, on_device(at::kHalf));
  CHECK_THROWS_WITH(cache.step(half, out, {3}, [&](const at::Tensor& in, at::Tensor& o) {
                      ++calls;
                      affine(in, o);
                    }),
                    Contains("dtype Half on " + device.str() + ", the generation started with dtype Float"));
  CHECK(calls == 0);
  // An output of another dtype, and one sharing the input's memory.
  at::Tensor wrong = at::empty({4, 6}, on_device(at::kDouble));
  const at::Tensor x3 = at::full({4, 6}, 3.0, on_device());
  CHECK_THROWS_WITH(cache.step(x3, wrong, {3}, affine), Contains("output at::Tensor has dtype Double"));
  at::Tensor alias = x3;
  CHECK_THROWS_WITH(cache.step(x3, alias, {3}, affine), Contains("must not share memory"));
  at::Tensor inside = x3.view({24}).narrow(0, 0, 24).view({4, 6});
  CHECK_THROWS_WITH(cache.step(x3, inside, {3}, affine), Contains("must not share memory"));
  // The generation goes on as if nothing had happened.
  for (std::size_t t = 3; t < 8; ++t) {
    const at::Tensor x = at::full({4, 6}, double(t), on_device());
    CHECK(at::equal(step(t, x), x + 8.0));
  }
  std::string pattern;
  for (const auto& r : cache.trace()) pattern += r.action == easycache::action::skip ? 'S' : 'C';
  CHECK(pattern == "CCSSSSCC");  // as without the refused calls

  // A denoiser output of another dtype is refused before it is cached.
  easycache::controller<at::Tensor> other(small());
  const at::Tensor x0 = at::zeros({4, 6}, on_device());
  CHECK_THROWS_WITH(other.step(x0, out, {0}, [](const at::Tensor& in) { return (in + 8.0).to(at::kDouble); }),
                    Contains("at::Tensor changed within a generation: dtype Double"));
  at::Tensor fresh;  // `out` holds the refused tensor the denoiser returned
  CHECK_NOTHROW(other.step(x0, fresh, {0}, affine));
}

TEST_CASE("a returning denoiser that returns its input (or a view) is refused; out is not rebound", "[torch][errors]") {
  easycache::controller<at::Tensor> cache(small());
  const at::Tensor x = at::zeros({4, 6}, on_device());
  at::Tensor out = at::full({4, 6}, -1.0, on_device());
  const at::Tensor mine = out;
  CHECK_THROWS_WITH(cache.step(x, out, {0}, [](const at::Tensor& in) { return in; }),
                    Contains("the denoiser returned its input"));
  CHECK_THROWS_WITH(cache.step(x, out, {0}, [](const at::Tensor& in) { return in.view({24}).view({4, 6}); }),
                    Contains("the denoiser returned its input"));
  CHECK(out.is_same(mine));  // still the caller's own tensor, unchanged
  CHECK(at::equal(out, at::full({4, 6}, -1.0, on_device())));
  // Usable at once, with the same `out`.
  for (std::size_t t = 0; t < 8; ++t) {
    const at::Tensor xt = at::full({4, 6}, double(t), on_device());
    cache.step(xt, out, {t}, [](const at::Tensor& in) { return in + 8.0; });
    CHECK(at::equal(out, xt + 8.0));
  }
  CHECK(cache.stats().steps == 8);
}

TEST_CASE("a non-finite output where the statistics do not look is never cached", "[torch][errors]") {
  easycache::config cfg = small();
  cfg.steps = 12;
  cfg.threshold = std::numeric_limits<double>::infinity();
  cfg.sampling = easycache::statistics_sampling{2, 0, 0};
  for (const double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    easycache::controller<at::Tensor> cache(cfg);
    for (std::size_t t = 0; t < 12; ++t) {
      const at::Tensor x = at::full({8}, double(t), on_device());
      at::Tensor out;
      cache.step(x, out, {t}, [&](const at::Tensor& in) {
        at::Tensor v = in + 8.0;
        if (t == 1) v[3] = bad;  // an element the stride-2 statistics skip
        return v;
      });
      if (t >= 2) CHECK(at::isfinite(out).all().item<bool>());
    }
    CHECK(cache.trace()[2].reason == easycache::reason::degenerate_statistics);
    CHECK(cache.stats().skips > 0);
  }
}

TEST_CASE("a new generation may change dtype and shape", "[torch]") {
  easycache::controller<at::Tensor> cache(small());
  for (const auto dtype : {at::kFloat, at::kBFloat16, at::kDouble}) {
    at::Tensor out;
    for (std::size_t t = 0; t < 8; ++t) {
      const at::Tensor x = at::full({dtype == at::kDouble ? 5 : 3, 2}, double(t), on_device(dtype));
      cache.step(x, out, {t}, affine);
      CHECK(at::equal(out, x + 8.0));
    }
    CHECK(cache.stats().skips == 4);
  }
}

TEST_CASE("autograd never sees easycache's operations", "[torch]") {
  easycache::controller<at::Tensor> cache(small());
  at::Tensor out;
  for (std::size_t t = 0; t < 8; ++t) {
    const at::Tensor x = at::full({4}, double(t), on_device()).requires_grad_(true);
    cache.step(x, out, {t}, [](const at::Tensor& in) {
      at::NoGradGuard no_grad;
      return in + 8.0;
    });
    CHECK_FALSE(out.requires_grad());
  }
  CHECK(cache.stats().skips == 4);

  // A loop under InferenceMode: the output easycache allocates is a normal
  // tensor, which the caller may update in place after the loop.
  at::Tensor result;  // undefined: easycache allocates it at step 0
  {
    c10::InferenceMode inference;
    for (std::size_t t = 0; t < 8; ++t) {
      const at::Tensor x = at::full({4}, double(t), on_device());
      CHECK(x.is_inference());
      cache.step(x, result, {t}, affine);
    }
  }
  CHECK(cache.stats().skips == 4);
  CHECK_FALSE(result.is_inference());
  CHECK_NOTHROW(result.mul_(2.0));
}

namespace {
// Replaces the CPU allocator; each call needs a higher priority than the last.
void use_cpu_allocator(c10::Allocator* allocator) {
  static std::uint8_t priority = 100;
  c10::SetCPUAllocator(allocator, ++priority);
}

// Counts the storage that CPU tensors allocate.
struct counting_allocator final : c10::Allocator {
  c10::Allocator* base = nullptr;
  mutable std::size_t count = 0;
  c10::DataPtr allocate(std::size_t n) const override {
    ++count;
    return base->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return base->raw_deleter(); }
};
}  // namespace

TEST_CASE("no tensor storage is allocated after step 0 (CPU, float32 and float64)", "[torch][allocations]") {
  if (device != at::kCPU) return;  // counts CPU storage only
  static counting_allocator counter;
  if (!counter.base) counter.base = c10::GetCPUAllocator();
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    for (const easycache::config& cfg : script::configurations(0.3)) {
      INFO(script::describe(cfg) << ", dtype " << dtype);
      easycache::controller<at::Tensor> cache(cfg);
      const at::Tensor x = at::empty({2, 2, 6, 8}, on_device(dtype));
      std::vector<at::Tensor> outs;
      for (std::size_t b = 0; b < cfg.branches; ++b) outs.push_back(at::empty_like(x));
      at::Tensor square = at::empty_like(x);
      std::size_t after_first = 0;
      use_cpu_allocator(&counter);
      for (std::size_t t = 0; t < cfg.steps; ++t) {
        x.fill_(static_cast<double>(t) * 0.25);  // no allocation: a scalar fill
        for (std::size_t b = 0; b < cfg.branches; ++b)
          cache.step(x, outs[b], {t, 0.0, b}, [&](const at::Tensor& in, at::Tensor& v) {
            at::mul_out(square, in, in);  // v = x + x² (no scalar operand: those allocate)
            at::add_out(v, in, square);
          });
        if (t == 0) after_first = counter.count;
      }
      use_cpu_allocator(counter.base);
      CHECK(cache.stats().skips > 0);
      CHECK(counter.count == after_first);
    }
  }
}

int main(int argc, char* argv[]) {
  std::vector<char*> args(argv, argv + argc);
  for (auto it = args.begin() + 1; it != args.end(); ++it)
    if (std::strcmp(*it, "--device") == 0 && it + 1 != args.end()) {
      device = at::Device(*(it + 1));
      args.erase(it, it + 2);
      break;
    }
  if (device.is_cuda() && !at::hasCUDA()) {
    std::printf("SKIPPED: LibTorch CUDA tests: this LibTorch has no CUDA device (at::hasCUDA() is false)\n");
    return 77;
  }
  std::printf("LibTorch tests on %s\n", device.str().c_str());
  return Catch::Session().run(int(args.size()), args.data());
}
