// easycache with LibTorch: a torch::nn module as the denoiser of a
// flow-matching Euler sampler, on the CPU or a CUDA device:
//   easycache_libtorch [--device cpu|cuda] [--steps N]
// It samples once without the cache and once with it, and compares.
#include <easycache/easycache.hpp>  // easycache
#include <easycache/backends/torch.hpp>      // easycache

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>

namespace {

// The denoiser: the exact velocity for data drawn around a few smooth
// prototype images (a Gaussian mixture), plus a small 3x3 convolution standing
// in for the learned part of a real model. Convention (Wan2.1, rectified flow):
// x_sigma = (1 − sigma)·x0 + sigma·noise, and the model predicts v = noise − x0.
struct denoiser_module : torch::nn::Module {
  denoiser_module(std::int64_t classes, std::int64_t channels, std::int64_t height, std::int64_t width,
                  double spread_of_data)
      : spread(spread_of_data),
        conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).padding(1)))) {
    const at::Tensor frequency = at::rand({classes, 2, 1, 1, 1}) * 3 + 1, phase = at::rand({classes, 1, 1, 1}) * 6.28;
    const at::Tensor y = at::linspace(0, 6.28, height).view({1, 1, height, 1});
    const at::Tensor x = at::linspace(0, 6.28, width).view({1, 1, 1, width});
    const at::Tensor c = at::arange(channels, at::kFloat).view({1, channels, 1, 1});
    means = register_buffer("means", at::sin(frequency.select(1, 0) * x + phase + c) * at::cos(frequency.select(1, 1) * y));
    at::NoGradGuard no_grad;
    conv->weight.mul_(0.02);
    conv->bias.zero_();
  }

  // x: [1, C, H, W] → v: [1, C, H, W].
  at::Tensor forward(const at::Tensor& x, double sigma) {
    const double s2 = spread * spread;
    const double c2 = (1 - sigma) * (1 - sigma) * s2 + sigma * sigma;
    const double gain = (1 - sigma) * s2 / c2;
    const at::Tensor distance = (x - (1 - sigma) * means).pow(2).sum({1, 2, 3});
    const at::Tensor weights = at::softmax(-distance / (2 * c2), 0).view({-1, 1, 1, 1});
    const at::Tensor expected = gain * x + ((1 - gain * (1 - sigma)) * weights * means).sum(0, true);  // E[x0 | x]
    return (x - expected) / sigma + sigma * conv->forward(x);
  }

  double spread;
  torch::nn::Conv2d conv;
  at::Tensor means;
};

std::vector<double> shifted_sigmas(std::size_t steps, double shift) {
  std::vector<double> sigmas(steps + 1);
  for (std::size_t i = 0; i <= steps; ++i) {
    const double t = 1.0 - double(i) / double(steps);
    sigmas[i] = shift * t / (1 + (shift - 1) * t);
  }
  return sigmas;
}

}  // namespace

int main(int argc, char* argv[]) {
  std::string device_name = "cpu";
  std::size_t steps = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--device") == 0) device_name = argv[i + 1];
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::strtoul(argv[i + 1], nullptr, 10);
  }
  const at::Device device(device_name);
  if (device.is_cuda() && !at::hasCUDA()) {
    std::printf("this LibTorch has no CUDA device; run with --device cpu\n");
    return 77;
  }
  torch::manual_seed(7);
  denoiser_module model(6, 4, 32, 32, 0.1);
  model.to(device);
  const std::vector<double> sigmas = shifted_sigmas(steps, 5.0);
  const at::Tensor noise = at::randn({1, 4, 32, 32}).to(device);

  auto sample = [&](easycache::controller<at::Tensor>* cache) {
    c10::InferenceMode inference;  // no autograd in sampling
    at::Tensor x = noise.clone();
    at::Tensor v;
    for (std::size_t i = 0; i < steps; ++i) {
      const easycache::step_info info{i, sigmas[i]};
      auto denoise = [&](const at::Tensor& latent) { return model.forward(latent, sigmas[i]); };
      if (cache) {
        cache->step(x, v, info, denoise);  // easycache: was v = denoise(x)
      } else {
        v = denoise(x);
      }
      x.add_(v, sigmas[i + 1] - sigmas[i]);
    }
    return x;
  };

  const at::Tensor reference = sample(nullptr);
  easycache::controller<at::Tensor> cache(easycache::config::hunyuan_video(steps));  // easycache
  const at::Tensor cached = sample(&cache);

  std::string pattern;
  for (const easycache::step_record& r : cache.trace()) pattern += r.action == easycache::action::skip ? '.' : 'C';
  const double mse = (cached - reference).pow(2).mean().item<double>();
  std::printf("easycache with LibTorch on %s: flow matching, %zu Euler steps, a [1, 4, 32, 32] latent\n",
              device.str().c_str(), steps);
  std::printf("skip pattern (C = module called, . = cached): %s\n", pattern.c_str());
  std::printf("module calls: %zu of %zu (%.2fx fewer)\n", cache.stats().calls, cache.stats().evaluations,
              cache.stats().speedup_in_calls());
  std::printf("final sample against the uncached one: PSNR %.1f dB, max |difference| %.4f\n",
              10 * std::log10(4.0 / mse), (cached - reference).abs().max().item<double>());
  return cache.stats().skips > 0 ? 0 : 1;
}
