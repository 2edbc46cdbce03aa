// The CUDA backend on a GPU against Eigen: the same scripted trajectories give
// the same decisions, statistics and outputs, on the caller's stream; bad
// tensors get a clear error. Exits with code 77 (CTest: skipped) and says why
// when no CUDA device is present.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <easycache/backends/cuda.cuh>
#include <easycache/easycache.hpp>
#include <easycache/view_traits.hpp>

#include "../backend_comparison.hpp"

using Catch::Matchers::Contains;
using easycache::cuda_dtype;
using easycache::cuda_tensor;

static_assert(easycache::is_tensor_v<cuda_tensor>);
static_assert(easycache::is_resizable_tensor_v<cuda_tensor>);
static_assert(easycache::detail::has_extrapolation<cuda_tensor>::value, "the linear predictor works on cuda_tensor");

// [cuda-view-route]
namespace my_gpu {
struct tensor {  // an engine's own device tensor
  float* ptr;
  std::size_t numel;
  cudaStream_t stream;
};
}  // namespace my_gpu

template <>
struct easycache::tensor_traits<my_gpu::tensor> : easycache::view_traits<my_gpu::tensor, easycache::cuda_tensor> {
  static easycache::cuda_tensor view(const my_gpu::tensor& t) { return easycache::cuda_view(t.ptr, t.numel, t.stream); }
};
// [cuda-view-route]

static_assert(easycache::is_tensor_v<my_gpu::tensor>, "one function makes a device tensor type usable");
static_assert(easycache::detail::has_check<my_gpu::tensor>::value &&
                  easycache::detail::has_same_storage<my_gpu::tensor>::value &&
                  easycache::detail::has_check_compatible<my_gpu::tensor>::value,
              "with cuda_tensor's checks");
static_assert(easycache::detail::has_extrapolation<my_gpu::tensor>::value &&
                  easycache::detail::has_output_reuse<my_gpu::tensor>::value,
              "and its predictors' fused kernels");

namespace {

void check(cudaError_t code) {
  if (code != cudaSuccess) FAIL("CUDA: " << cudaGetErrorString(code));
}

// Device memory owned by a shared pointer.
std::shared_ptr<void> device_memory(std::size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes ? bytes : 1));
  return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
}

std::vector<unsigned char> encode(const std::vector<double>& v, cuda_dtype dtype) {
  std::vector<unsigned char> bytes(v.size() * easycache::element_size(dtype));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (dtype == cuda_dtype::float32) {
      const float f = float(v[i]);
      std::memcpy(&bytes[4 * i], &f, 4);
    } else if (dtype == cuda_dtype::float16) {
      const __half h = __float2half_rn(float(v[i]));
      std::memcpy(&bytes[2 * i], &h, 2);
    } else {
      const __nv_bfloat16 b = __float2bfloat16_rn(float(v[i]));
      std::memcpy(&bytes[2 * i], &b, 2);
    }
  }
  return bytes;
}

std::vector<double> decode(const std::vector<unsigned char>& bytes, cuda_dtype dtype) {
  std::vector<double> v(bytes.size() / easycache::element_size(dtype));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (dtype == cuda_dtype::float32) {
      float f;
      std::memcpy(&f, &bytes[4 * i], 4);
      v[i] = f;
    } else if (dtype == cuda_dtype::float16) {
      __half h;
      std::memcpy(&h, &bytes[2 * i], 2);
      v[i] = __half2float(h);
    } else {
      __nv_bfloat16 b;
      std::memcpy(&b, &bytes[2 * i], 2);
      v[i] = __bfloat162float(b);
    }
  }
  return v;
}

// The script's tensors: views of device memory that the test allocates (and
// frees with the backend), on a non-blocking stream of the test's own.
struct cuda_backend {
  cuda_dtype dtype = cuda_dtype::float32;
  cudaStream_t stream = nullptr;
  std::vector<std::shared_ptr<void>> memory;

  cuda_tensor make(const std::vector<double>& v) {
    const std::vector<unsigned char> bytes = encode(v, dtype);
    memory.push_back(device_memory(bytes.size()));
    const cuda_tensor t{memory.back().get(), v.size(), dtype, stream, nullptr};
    check(cudaMemcpyAsync(t.data, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, stream));
    check(cudaStreamSynchronize(stream));
    return t;
  }
  std::vector<double> values(const cuda_tensor& t) const {
    std::vector<unsigned char> bytes(t.size * easycache::element_size(t.dtype));
    check(cudaMemcpyAsync(bytes.data(), t.data, bytes.size(), cudaMemcpyDeviceToHost, stream));
    check(cudaStreamSynchronize(stream));
    return decode(bytes, t.dtype);
  }
  void write(const std::vector<double>& v, cuda_tensor& out) const {
    const std::vector<unsigned char> bytes = encode(v, out.dtype);
    check(cudaMemcpyAsync(out.data, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, stream));
    check(cudaStreamSynchronize(stream));
  }
};

struct stream_holder {
  cudaStream_t stream = nullptr;
  stream_holder() { check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
  ~stream_holder() { cudaStreamDestroy(stream); }
};

script::result run_cuda(cuda_dtype dtype, const easycache::config& cfg, std::size_t size = script::size) {
  stream_holder s;
  cuda_backend backend{dtype, s.stream, {}};
  return script::run<cuda_tensor>(backend, cfg, size);
}

easycache::config small() {
  easycache::config cfg;
  cfg.steps = 8;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.5;
  return cfg;
}

}  // namespace

TEST_CASE("float32 device tensors take Eigen's decisions with Eigen's statistics", "[cuda][gpu]") {
  for (const easycache::config& cfg : script::configurations(0.3)) {
    INFO(script::describe(cfg));
    const script::result reference = script::run_eigen<float>(cfg, script::size);
    REQUIRE(reference.stats.skips > 0);
    script::compare(run_cuda(cuda_dtype::float32, cfg), reference, cfg.branches, 1e-5);
  }
}

TEST_CASE("float16 and bfloat16 device tensors take Eigen's decisions where no decision is near a tie",
          "[cuda][gpu]") {
  for (const easycache::config& base : script::configurations(0.3)) {
    const easycache::config cfg = script::far_from_ties(base);
    INFO(script::describe(cfg));
    const script::result reference = script::run_eigen<double>(cfg, script::size);
    REQUIRE(script::margin(reference, cfg.threshold) > 0.05);
    script::compare(run_cuda(cuda_dtype::float16, cfg), reference, cfg.branches, 2e-2);
    script::compare(run_cuda(cuda_dtype::bfloat16, cfg), reference, cfg.branches, 5e-2);
  }
}

TEST_CASE("the linear predictor's skipped outputs are Eigen's on every dtype", "[cuda][gpu][predictor]") {
  // configurations() includes the predictor; this case also checks that the
  // comparison would see a backend that ignored the extrapolation.
  const easycache::config cfg = script::linear_predictor(script::configurations(0.3).front());
  REQUIRE(script::linear_predictor_effect(cfg) > 100 * 1e-5);
  script::compare(run_cuda(cuda_dtype::float32, cfg), script::run_eigen<float>(cfg, script::size), cfg.branches, 1e-5);
  const easycache::config far = script::far_from_ties(cfg);
  REQUIRE(script::linear_predictor_effect(far) > 4 * 5e-2);
  const script::result reference = script::run_eigen<double>(far, script::size);
  script::compare(run_cuda(cuda_dtype::float16, far), reference, far.branches, 2e-2);
  script::compare(run_cuda(cuda_dtype::bfloat16, far), reference, far.branches, 5e-2);
}

namespace {
// The script with each step's tensors on the other of two streams; before a
// step, its stream waits for the work queued on the previous step's stream
// (the ordering cuda_tensor's documentation asks of the caller).
struct alternating_streams_backend : cuda_backend {
  stream_holder first, second;
  cudaEvent_t queued = nullptr;
  alternating_streams_backend() {
    check(cudaEventCreateWithFlags(&queued, cudaEventDisableTiming));
    stream = first.stream;
  }
  ~alternating_streams_backend() { cudaEventDestroy(queued); }
  void begin_step(std::size_t t) {
    cudaStream_t next = t % 2 ? second.stream : first.stream;
    check(cudaEventRecord(queued, stream));
    check(cudaStreamWaitEvent(next, queued, 0));
    stream = next;
  }
};
}  // namespace

TEST_CASE("a controller whose steps move between streams decides and predicts as on one", "[cuda][gpu][predictor]") {
  for (const easycache::config& cfg : {script::configurations(0.3).front(),
                                       script::linear_predictor(script::configurations(0.3).front())}) {
    INFO(script::describe(cfg));
    alternating_streams_backend backend;
    const script::result got = script::run<cuda_tensor>(backend, cfg, script::size);
    script::compare(got, script::run_eigen<float>(cfg, script::size), cfg.branches, 1e-5);
  }
}

TEST_CASE("large tensors: every block's partial sum is counted, and runs repeat bit for bit", "[cuda][gpu]") {
  // 3 * 2^20 elements: more than the most blocks of a reduction times its threads.
  easycache::config cfg = script::configurations(0.3).front();
  cfg.steps = 8;
  cfg.branches = 1;
  const std::size_t n = std::size_t{3} << 20;
  const script::result reference = script::run_eigen<float>(cfg, n);
  const script::result first = run_cuda(cuda_dtype::float32, cfg, n);
  script::compare(first, reference, 1, 1e-5);
  const script::result second = run_cuda(cuda_dtype::float32, cfg, n);
  for (std::size_t i = 0; i < first.trace.size(); ++i) {
    INFO("evaluation " << i);
    CHECK((first.trace[i].input_change == second.trace[i].input_change ||
           (std::isnan(first.trace[i].input_change) && std::isnan(second.trace[i].input_change))));
    CHECK((first.trace[i].accumulated_error == second.trace[i].accumulated_error ||
           std::isnan(first.trace[i].accumulated_error)));
  }
}

// The same device memory seen as the user's type.
struct viewed_backend {
  cuda_backend device;
  my_gpu::tensor make(const std::vector<double>& v) {
    const cuda_tensor t = device.make(v);
    return {static_cast<float*>(t.data), t.size, t.stream};
  }
  std::vector<double> values(const my_gpu::tensor& t) const {
    return device.values(easycache::cuda_view(t.ptr, t.numel, t.stream));
  }
  void write(const std::vector<double>& v, my_gpu::tensor& out) const {
    cuda_tensor view = easycache::cuda_view(out.ptr, out.numel, out.stream);
    device.write(v, view);
  }
};

TEST_CASE("a device tensor type viewed as cuda_tensor takes cuda_tensor's decisions and outputs",
          "[cuda][gpu][view_traits]") {
  for (const easycache::config& cfg : script::configurations(0.3)) {
    if (easycache::detail::needs_scoped_statistics(cfg)) continue;
    INFO(script::describe(cfg));
    const script::result reference = run_cuda(cuda_dtype::float32, cfg);
    stream_holder s;
    viewed_backend backend{cuda_backend{cuda_dtype::float32, s.stream, {}}};
    script::compare(script::run<my_gpu::tensor>(backend, cfg, script::size), reference, cfg.branches, 0.0);
  }
}

TEST_CASE("outputs go to the caller's memory, or to memory easycache allocates once", "[cuda][gpu]") {
  stream_holder s;
  cuda_backend backend{cuda_dtype::float32, s.stream, {}};
  auto plus8 = [&](const cuda_tensor& in, cuda_tensor& out) {
    std::vector<double> v = backend.values(in);
    for (double& e : v) e += 8.0;
    backend.write(v, out);
  };
  easycache::controller<cuda_tensor> cache(small());
  cuda_tensor owned;  // no memory: the controller allocates it on first use
  const void* first = nullptr;
  for (std::size_t t = 0; t < 8; ++t) {
    const cuda_tensor x = backend.make(std::vector<double>(1000, double(t)));
    cache.step(x, owned, {t}, plus8);
    if (t == 0) first = owned.data;
    CHECK(owned.data == first);
    CHECK(owned.storage != nullptr);
    CHECK(backend.values(owned) == std::vector<double>(1000, double(t) + 8.0));
  }
  CHECK(cache.stats().skips == 4);

  cuda_tensor caller = backend.make(std::vector<double>(1000, 0.0));
  for (std::size_t t = 0; t < 8; ++t) {
    const cuda_tensor x = backend.make(std::vector<double>(1000, double(t)));
    cache.step(x, caller, {t}, plus8);
    CHECK(caller.storage == nullptr);
    CHECK(backend.values(caller) == std::vector<double>(1000, double(t) + 8.0));
  }
}

TEST_CASE("bad device tensors are refused with the bad value named", "[cuda][gpu][errors]") {
  stream_holder s;
  cuda_backend backend{cuda_dtype::float32, s.stream, {}};
  auto plus8 = [&](const cuda_tensor& in, cuda_tensor& out) {
    std::vector<double> v = backend.values(in);
    for (double& e : v) e += 8.0;
    backend.write(v, out);
  };
  easycache::controller<cuda_tensor> cache(small());
  cuda_tensor out;
  std::vector<float> host(16, 1.0f);
  CHECK_THROWS_WITH(cache.step(easycache::cuda_view(host.data(), 16), out, {0}, plus8),
                    Contains("is not CUDA device memory"));
  CHECK_THROWS_WITH(cache.step(easycache::cuda_view(static_cast<float*>(nullptr), 16), out, {0}, plus8),
                    Contains("null data pointer and 16 elements"));
  for (std::size_t t = 0; t < 3; ++t) cache.step(backend.make(std::vector<double>(16, double(t))), out, {t}, plus8);
  // dtype changed mid-generation: refused before the denoiser runs.
  backend.dtype = cuda_dtype::float16;
  int calls = 0;
  CHECK_THROWS_WITH(cache.step(backend.make(std::vector<double>(16, 3.0)), out, {3},
                               [&](const cuda_tensor&, cuda_tensor&) { ++calls; }),
                    Contains("dtype float16, the generation started with float32"));
  CHECK(calls == 0);
  backend.dtype = cuda_dtype::float32;
  // An output view of another size; an output overlapping the input.
  cuda_tensor small_view = backend.make(std::vector<double>(8, 0.0));
  const cuda_tensor x3 = backend.make(std::vector<double>(16, 3.0));
  CHECK_THROWS_WITH(cache.step(x3, small_view, {3}, plus8), Contains("output cuda_tensor has 8 elements of float32"));
  cuda_tensor overlapping{static_cast<float*>(x3.data) + 4, 16, cuda_dtype::float32, s.stream, nullptr};
  CHECK_THROWS_WITH(cache.step(x3, overlapping, {3}, plus8), Contains("must not share memory"));
  // The generation goes on.
  for (std::size_t t = 3; t < 8; ++t) {
    cache.step(backend.make(std::vector<double>(16, double(t))), out, {t}, plus8);
    CHECK(backend.values(out) == std::vector<double>(16, double(t) + 8.0));
  }
  CHECK(cache.stats().skips == 4);
}

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t code = cudaGetDeviceCount(&devices);
  if (code != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: the CUDA GPU tests need an NVIDIA GPU: cudaGetDeviceCount: %s (%d devices)\n",
                code != cudaSuccess ? cudaGetErrorString(code) : "no error", devices);
    return 77;
  }
  cudaDeviceProp properties{};
  cudaGetDeviceProperties(&properties, 0);
  std::printf("CUDA GPU tests on %s (sm_%d%d)\n", properties.name, properties.major, properties.minor);
  return Catch::Session().run(argc, argv);
}
