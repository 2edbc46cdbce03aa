// The CUDA backend's cost per step, without the denoiser, against a
// device-to-device copy: the GPU half of bench/overhead (docs/performance.md).
//
// For each latent size and float32 / float16 it times, on one stream, steps of
// each type (skip, compute, forced, as bench/overhead.cpp makes them) and
// cudaMemcpyAsync of one latent; the median of 5 repetitions of 20 steps, each
// repetition timed with CUDA events around whole steps (decision steps include
// their one device→host read of the sums).
//
//   build-bench/bench/easycache_bench_overhead_cuda
// writes bench/results/overhead_cuda.md (or the path in EASYCACHE_BENCH_OUT, without
// extension). Needs an NVIDIA GPU; exits 77 without one.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <easycache/backends/cuda.cuh>
#include <easycache/easycache.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

struct latent_size {
  const char* name;
  std::size_t elements;
};
const latent_size sizes[] = {
    {"image 1x16x64x64", 16u * 64 * 64},          {"1 M", 1024u * 1024},
    {"Wan 480p 16x21x60x104", 16u * 21 * 60 * 104}, {"Hunyuan 720p 16x33x90x160", 16u * 33 * 90 * 160},
    {"64 M", 64u * 1024 * 1024},
};

// Elements moved per latent element (docs/performance.md, byte model).
double traffic(const std::string& type) { return type == "skip" ? 6 : type == "compute" ? 8 : type == "forced" ? 6 : 2; }

template <class T>
__global__ void fill(T* data, std::size_t n, float phase) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n) data[i] = static_cast<T>(__sinf(phase + 0.001f * static_cast<float>(i % 4096)));
}

template <class T>
T* device_latent(std::size_t n, float phase) {
  T* p = nullptr;
  check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  fill<<<static_cast<unsigned>((n + 255) / 256), 256>>>(p, n, phase);
  check(cudaDeviceSynchronize(), "fill");  // the steps run on another stream
  return p;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds per step of `type` for a latent of n elements of T.
template <class T>
double step_seconds(std::size_t n, const std::string& type, cudaStream_t stream) {
  T* x = device_latent<T>(n, 0.0f);
  T* x_next = device_latent<T>(n, 0.5f);
  T* v = device_latent<T>(n, 1.0f);
  T* out = device_latent<T>(n, 0.0f);
  easycache::config cfg;
  cfg.steps = std::size_t{1} << 40;  // never the last step
  cfg.record_trace = false;
  cfg.warmup_steps = type == "forced" ? cfg.steps : 2;
  cfg.threshold = type == "skip" ? std::numeric_limits<double>::infinity() : 0.0;
  easycache::controller<easycache::cuda_tensor> cache(cfg);
  easycache::cuda_tensor out_view = easycache::cuda_view(out, n, stream);
  std::size_t t = 0;
  auto one_step = [&](bool write) {
    easycache::cuda_tensor in = easycache::cuda_view(t % 2 ? x_next : x, n, stream);
    cache.step(in, out_view, {t}, [&](const easycache::cuda_tensor& input, easycache::cuda_tensor& o) {
      // The denoiser's output is already in place: the controller's work only.
      if (write) check(cudaMemcpyAsync(o.data, v, n * sizeof(T), cudaMemcpyDeviceToDevice, input.stream), "copy");
    });
    ++t;
  };
  for (int i = 0; i < 3; ++i) one_step(true);
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  std::vector<double> seconds;
  const int steps = 20;
  for (int repetition = 0; repetition < 5; ++repetition) {
    check(cudaEventRecord(start, stream), "record");
    for (int i = 0; i < steps; ++i) one_step(false);
    check(cudaEventRecord(stop, stream), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    seconds.push_back(static_cast<double>(ms) / 1e3 / steps);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  for (T* p : {x, x_next, v, out}) cudaFree(p);
  return median(seconds);
}

template <class T>
double copy_seconds(std::size_t n, cudaStream_t stream) {
  T* a = device_latent<T>(n, 0.0f);
  T* b = device_latent<T>(n, 0.0f);
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  std::vector<double> seconds;
  for (int repetition = 0; repetition < 5; ++repetition) {
    check(cudaEventRecord(start, stream), "record");
    for (int i = 0; i < 20; ++i) check(cudaMemcpyAsync(b, a, n * sizeof(T), cudaMemcpyDeviceToDevice, stream), "copy");
    check(cudaEventRecord(stop, stream), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    seconds.push_back(static_cast<double>(ms) / 1e3 / 20);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  return median(seconds);
}

template <class T>
void run_type(const char* dtype, std::ofstream& md, std::ofstream& csv, cudaStream_t stream) {
  for (const latent_size& s : sizes) {
    const double copy = copy_seconds<T>(s.elements, stream);
    const double copy_bandwidth = 2.0 * static_cast<double>(s.elements * sizeof(T)) / copy;
    for (const char* type : {"skip", "compute", "forced"}) {
      const double step = step_seconds<T>(s.elements, type, stream);
      const double bandwidth = traffic(type) * static_cast<double>(s.elements * sizeof(T)) / step;
      char line[256];
      std::snprintf(line, sizeof line, "| %s | %s | %zu | %.0f | %s | %.1f | %.0f | %.2f |\n", s.name, dtype,
                    s.elements, copy_bandwidth / 1e9, type, step * 1e6, bandwidth / 1e9, bandwidth / copy_bandwidth);
      std::fputs(line, stdout);
      md << line;
      csv << '"' << s.name << "\"," << dtype << ',' << s.elements << ',' << type << ',' << step * 1e6 << ','
          << bandwidth / 1e9 << ',' << bandwidth / copy_bandwidth << '\n';
    }
  }
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: bench/overhead_cuda needs an NVIDIA GPU\n");
    return 77;
  }
  cudaDeviceProp properties{};
  check(cudaGetDeviceProperties(&properties, 0), "properties");
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  const char* out_env = std::getenv("EASYCACHE_BENCH_OUT");
  const std::string base = out_env ? out_env : "bench/results/overhead_cuda";
  std::ofstream md(base + ".md"), csv(base + ".csv");
  md << "GPU: " << properties.name << "\n\n| latent | dtype | elements | D2D copy GB/s | step | µs | GB/s | / copy |\n"
     << "|---|---|---|---|---|---|---|---|\n";
  csv << "size,dtype,elements,step,microseconds,GB_per_s,ratio_to_copy\n";
  std::printf("GPU: %s\n", properties.name);
  run_type<float>("float32", md, csv, stream);
  run_type<__half>("float16", md, csv, stream);
  std::printf("\nwrote %s.md and %s.csv\n", base.c_str(), base.c_str());
  cudaStreamDestroy(stream);
  return 0;
}
