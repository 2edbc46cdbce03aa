// easycache with raw CUDA buffers: a flow-matching Euler sampler whose
// denoiser is two small kernels (the exact velocity for a Gaussian mixture of
// smooth prototype images), all on one stream. It samples once without the
// cache and once with it, and compares. Needs an NVIDIA GPU (exits 77 without).
#include <easycache/backends/cuda.cuh>       // easycache
#include <easycache/easycache.hpp>  // easycache

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int classes = 6;
constexpr std::size_t channels = 4, height = 32, width = 32, size = channels * height * width;

#define CHECK_CUDA(call)                                                                                \
  do {                                                                                                  \
    const cudaError_t code = (call);                                                                    \
    if (code != cudaSuccess) {                                                                          \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(code));                         \
      std::exit(1);                                                                                     \
    }                                                                                                   \
  } while (0)

// distance[k] += Σ (x − (1 − sigma)·mean_k)² (distance zeroed before).
__global__ void distances_kernel(const float* x, const float* means, float sigma, float* distance) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size) return;
  for (int k = 0; k < classes; ++k) {
    const float d = x[i] - (1 - sigma) * means[k * size + i];
    atomicAdd(&distance[k], d * d);
  }
}

// v = (x − E[x0 | x]) / sigma, with the class weights softmax(−distance / 2c²).
__global__ void velocity_kernel(const float* x, const float* means, const float* distance, float sigma, float spread,
                                float* v) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= size) return;
  const float s2 = spread * spread, c2 = (1 - sigma) * (1 - sigma) * s2 + sigma * sigma;
  const float gain = (1 - sigma) * s2 / c2;
  float lowest = distance[0];
  for (int k = 1; k < classes; ++k) lowest = fminf(lowest, distance[k]);
  float total = 0, mixed = 0;
  for (int k = 0; k < classes; ++k) {
    const float w = expf(-(distance[k] - lowest) / (2 * c2));
    total += w;
    mixed += w * means[k * size + i];
  }
  const float expected = gain * x[i] + (1 - gain * (1 - sigma)) * mixed / total;
  v[i] = (x[i] - expected) / sigma;
}

// x += dt · v
__global__ void euler_kernel(float* x, const float* v, float dt) {
  const std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size) x[i] += dt * v[i];
}

constexpr unsigned threads = 256, blocks = unsigned((size + threads - 1) / threads);

std::vector<double> shifted_sigmas(std::size_t steps, double shift) {
  std::vector<double> sigmas(steps + 1);
  for (std::size_t i = 0; i <= steps; ++i) {
    const double t = 1.0 - double(i) / double(steps);
    sigmas[i] = shift * t / (1 + (shift - 1) * t);
  }
  return sigmas;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("easycache CUDA example: no CUDA device here; it needs an NVIDIA GPU\n");
    return 77;
  }
  const std::size_t steps = 50;
  const std::vector<double> sigmas = shifted_sigmas(steps, 5.0);

  // Prototype images and the starting noise, made on the host once.
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> frequency(1.0f, 4.0f), phase(0.0f, 6.28f);
  std::vector<float> means(classes * size), noise(size);
  for (std::size_t k = 0; k < classes; ++k) {
    const float fx = frequency(rng), fy = frequency(rng), p = phase(rng);
    for (std::size_t c = 0; c < channels; ++c)
      for (std::size_t y = 0; y < height; ++y)
        for (std::size_t xx = 0; xx < width; ++xx)
          means[k * size + (c * height + y) * width + xx] =
              std::sin(6.28f * fx * float(xx) / float(width) + p + float(c)) * std::cos(6.28f * fy * float(y) / float(height));
  }
  std::normal_distribution<float> normal;
  for (float& e : noise) e = normal(rng);

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  float *x, *v, *d_means, *distance;
  CHECK_CUDA(cudaMalloc(&x, size * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&v, size * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&d_means, means.size() * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&distance, classes * sizeof(float)));
  CHECK_CUDA(cudaMemcpy(d_means, means.data(), means.size() * sizeof(float), cudaMemcpyHostToDevice));

  // The denoiser: kernels on the stream of the input it gets.
  auto denoiser = [&](const easycache::cuda_tensor& in, easycache::cuda_tensor& out, const easycache::step_info& info) {
    const float sigma = float(info.timestep);
    CHECK_CUDA(cudaMemsetAsync(distance, 0, classes * sizeof(float), in.stream));
    distances_kernel<<<blocks, threads, 0, in.stream>>>(static_cast<const float*>(in.data), d_means, sigma, distance);
    velocity_kernel<<<blocks, threads, 0, in.stream>>>(static_cast<const float*>(in.data), d_means, distance, sigma,
                                                       0.1f, static_cast<float*>(out.data));
  };

  auto sample = [&](easycache::controller<easycache::cuda_tensor>* cache) {
    CHECK_CUDA(cudaMemcpyAsync(x, noise.data(), size * sizeof(float), cudaMemcpyHostToDevice, stream));
    easycache::cuda_tensor xt = easycache::cuda_view(x, size, stream);  // easycache
    easycache::cuda_tensor vt = easycache::cuda_view(v, size, stream);  // easycache
    for (std::size_t i = 0; i < steps; ++i) {
      const easycache::step_info info{i, sigmas[i]};
      if (cache) {
        cache->step(xt, vt, info, denoiser);  // easycache: was denoiser(xt, vt, info)
      } else {
        denoiser(xt, vt, info);
      }
      euler_kernel<<<blocks, threads, 0, stream>>>(x, v, float(sigmas[i + 1] - sigmas[i]));
    }
    std::vector<float> result(size);
    CHECK_CUDA(cudaMemcpyAsync(result.data(), x, size * sizeof(float), cudaMemcpyDeviceToHost, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    return result;
  };

  const std::vector<float> reference = sample(nullptr);
  easycache::controller<easycache::cuda_tensor> cache(easycache::config::hunyuan_video(steps));  // easycache
  const std::vector<float> cached = sample(&cache);

  std::string pattern;
  for (const easycache::step_record& r : cache.trace()) pattern += r.action == easycache::action::skip ? '.' : 'C';
  double squared = 0, largest = 0;
  for (std::size_t i = 0; i < size; ++i) {
    const double d = double(cached[i]) - double(reference[i]);
    squared += d * d;
    largest = std::fmax(largest, std::fabs(d));
  }
  cudaDeviceProp properties{};
  CHECK_CUDA(cudaGetDeviceProperties(&properties, 0));
  std::printf("easycache CUDA example on %s: flow matching, %zu Euler steps, a %zu-element float32 latent\n",
              properties.name, steps, size);
  std::printf("skip pattern (C = denoiser called, . = cached): %s\n", pattern.c_str());
  std::printf("denoiser calls: %zu of %zu (%.2fx fewer)\n", cache.stats().calls, cache.stats().evaluations,
              cache.stats().speedup_in_calls());
  std::printf("final sample against the uncached one: PSNR %.1f dB, max |difference| %.4f\n",
              10 * std::log10(4.0 / (squared / double(size))), largest);
  cudaFree(x);
  cudaFree(v);
  cudaFree(d_means);
  cudaFree(distance);
  cudaStreamDestroy(stream);
  return cache.stats().skips > 0 ? 0 : 1;
}
