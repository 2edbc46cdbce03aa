// The demo's trained video DiT as a TorchScript module (models/digits_dit.pt,
// made by models/export_torchscript.py), sampled from C++ on at::Tensor exactly
// as the main demo samples it: flow matching, shift 5, 50 Euler steps,
// guidance 5, two calls a step, with and without EasyCache (config::wan21).
//
//   easycache_libtorch_dit [--device cpu|cuda] [--batched] [--check] [--quick] [--model PATH]
//
// --batched: both guidance branches in one call of batch 2 (as HunyuanVideo
//   batches them); the cache wraps that call: one branch, keyed on the latent,
//   caching the guided velocity.
// --check: also runs the same loop with the Eigen forward pass of
//   examples/dit/ (the main demo's) on the same seeds, and exits 1 unless
//   every step's decision is the same.
// Prints the calls, the wall-clock speedup and PSNR/SSIM of the cached clips
// against this program's own uncached ones.
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <easycache/backends/eigen.hpp>
#include <easycache/backends/torch.hpp>
#include <easycache/easycache.hpp>

#include "../dit/dit.hpp"
#include "../dit/metrics.hpp"
#include "../dit/sampler.hpp"
#include "../dit/sha256.hpp"
#include "../dit/tensor_file.hpp"

#ifndef EASYCACHE_MODELS_DIR
#define EASYCACHE_MODELS_DIR "models"
#endif

namespace {

struct options {
  std::string device = "cpu";
  std::string models = EASYCACHE_MODELS_DIR;
  bool batched = false, check = false, quick = false;
};

// What a sampling run gives: the clip (as the Eigen demo holds it), the calls
// and branch 0's decisions (C computed, . skipped).
struct run_result {
  Eigen::VectorXf clip;
  std::size_t calls = 0;
  std::string pattern;
};

std::string pattern_of(const std::vector<easycache::step_record>& trace) {
  std::string p;
  for (const easycache::step_record& r : trace)
    if (r.branch == 0) p += r.action == easycache::action::skip ? '.' : 'C';
  return p;
}

// The Euler sampler of examples/dit/sampler.hpp on at::Tensor, through a
// TorchScript module: forward(x [B, C, F, H, W], sigma [B], label [B]).
class torch_sampler {
 public:
  torch_sampler(torch::jit::Module& module, const dit::dimensions& d, at::Device device, bool batched)
      : module_(module), d_(d), device_(device), batched_(batched), sigmas_(dit::shifted_sigmas(steps, 5.0)) {}

  static constexpr std::size_t steps = 50;
  static constexpr float guidance = 5.0f;

  run_result run(std::size_t label, std::uint64_t seed, easycache::controller<at::Tensor>* cache) {
    const auto shape = std::vector<std::int64_t>{1, std::int64_t(d_.channels), std::int64_t(d_.frames),
                                                 std::int64_t(d_.height), std::int64_t(d_.width)};
    Eigen::VectorXf noise = dit::gaussian_noise(d_.latent_size(), seed);
    at::Tensor x = at::from_blob(noise.data(), shape, at::kFloat).clone().to(device_);
    const at::Tensor cond = at::full({1}, std::int64_t(label), at::TensorOptions().dtype(at::kLong).device(device_));
    const at::Tensor uncond =
        at::full({1}, std::int64_t(d_.classes), at::TensorOptions().dtype(at::kLong).device(device_));
    const at::Tensor both = at::cat({cond, uncond});
    run_result result;
    at::Tensor v_cond, v_uncond, v_guided;
    auto call = [&](const at::Tensor& in, double sigma, const at::Tensor& labels) {
      ++result.calls;
      const at::Tensor s = at::full({in.size(0)}, sigma, at::TensorOptions().dtype(at::kFloat).device(device_));
      return module_.forward({in, s, labels}).toTensor();
    };
    for (std::size_t i = 0; i < steps; ++i) {
      const double sigma = sigmas_[i];
      const float dt = static_cast<float>(sigmas_[i + 1] - sigma);
      if (batched_) {
        // One call of batch 2; the cache sees the latent and the guided velocity.
        auto guided = [&](const at::Tensor& in) {
          const at::Tensor v = call(at::cat({in, in}), sigma, both);
          const at::Tensor vc = v.narrow(0, 0, 1), vu = v.narrow(0, 1, 1);
          return vu + guidance * (vc - vu);
        };
        if (cache) {
          cache->step(x, v_guided, {i, sigma}, guided);
        } else {
          v_guided = guided(x);
        }
        x = x + dt * v_guided;
      } else {
        auto conditional = [&](const at::Tensor& in) { return call(in, sigma, cond); };
        auto unconditional = [&](const at::Tensor& in) { return call(in, sigma, uncond); };
        if (cache) {
          cache->step(x, v_cond, {i, sigma, 0}, conditional);
          cache->step(x, v_uncond, {i, sigma, 1}, unconditional);
        } else {
          v_cond = conditional(x);
          v_uncond = unconditional(x);
        }
        // As the Eigen sampler: x += dt · (v_u + g · (v_c − v_u)).
        x = x + dt * (v_uncond + guidance * (v_cond - v_uncond));
      }
    }
    const at::Tensor host = x.to(at::kCPU).contiguous();
    result.clip = Eigen::Map<const Eigen::VectorXf>(host.data_ptr<float>(), host.numel());
    if (cache) result.pattern = pattern_of(cache->trace());
    return result;
  }

 private:
  torch::jit::Module& module_;
  const dit::dimensions& d_;
  at::Device device_;
  bool batched_;
  std::vector<double> sigmas_;
};

// The same loop on the Eigen forward pass (the main demo's model code), for --check.
std::string eigen_pattern(dit::model& model, std::size_t label, std::uint64_t seed, bool batched) {
  if (!batched) {
    dit::sampler sampler(model);
    easycache::controller<Eigen::VectorXf> cache(easycache::config::wan21(torch_sampler::steps));
    sampler.run(label, seed, cache);
    return pattern_of(cache.trace());
  }
  easycache::config cfg = easycache::config::wan21(torch_sampler::steps);
  cfg.branches = 1;
  easycache::controller<Eigen::VectorXf> cache(cfg);
  const std::vector<double> sigmas = dit::shifted_sigmas(torch_sampler::steps, 5.0);
  Eigen::VectorXf x = dit::gaussian_noise(model.sizes().latent_size(), seed), v(x.size()), vc(x.size()),
                  vu(x.size());
  for (std::size_t i = 0; i < torch_sampler::steps; ++i) {
    const float sigma = static_cast<float>(sigmas[i]);
    cache.step(x, v, {i, sigmas[i]}, [&](const Eigen::VectorXf& in, Eigen::VectorXf& out) {
      model.forward(in, sigma, label, vc);
      model.forward(in, sigma, model.null_class(), vu);
      out = vu + torch_sampler::guidance * (vc - vu);
    });
    x += static_cast<float>(sigmas[i + 1] - sigmas[i]) * v;
  }
  return pattern_of(cache.trace());
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int run(int argc, char** argv) {
  options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--device" && i + 1 < argc) {
      opt.device = argv[++i];
    } else if (arg == "--models" && i + 1 < argc) {
      opt.models = argv[++i];
    } else if (arg == "--batched") {
      opt.batched = true;
    } else if (arg == "--check") {
      opt.check = true;
    } else if (arg == "--quick") {
      opt.quick = true;
    } else {
      std::fprintf(stderr, "usage: easycache_libtorch_dit [--device cpu|cuda] [--batched] [--check] [--quick] "
                           "[--models DIR]\n");
      return 2;
    }
  }
  const at::Device device(opt.device);
  if (device.is_cuda() && !at::hasCUDA()) {
    std::printf("SKIPPED: --device cuda, but this LibTorch sees no CUDA device\n");
    return 77;
  }
  const std::string module_path = opt.models + "/digits_dit.pt";
  const std::vector<unsigned char> bytes = dit::read_bytes(module_path);
  const std::string expected = dit::read_checksum(module_path + ".sha256");
  if (dit::sha256_hex(bytes) != expected) {
    std::fprintf(stderr, "%s: checksum mismatch (the file differs from the one exported)\n", module_path.c_str());
    return 1;
  }
  torch::jit::Module module = torch::jit::load(module_path, device);
  module.eval();
  c10::InferenceMode inference;
  dit::model eigen_model(opt.models + "/digits_dit.bin", opt.models + "/digits_dit.bin.sha256");
  const dit::dimensions& d = eigen_model.sizes();

  easycache::config cfg = easycache::config::wan21(torch_sampler::steps);
  if (opt.batched) cfg.branches = 1;  // one call a step: one branch
  easycache::controller<at::Tensor> cache(cfg);
  torch_sampler sampler(module, d, device, opt.batched);

  std::vector<std::pair<std::size_t, std::uint64_t>> clips = {{0, 1}, {3, 2}, {5, 3}, {8, 4}};
  if (opt.quick) clips.resize(2);
  std::printf("TorchScript DiT (%s, sha256 ok) on %s, %s: 50 Euler steps, shift 5, guidance 5\n",
              module_path.c_str(), device.str().c_str(),
              opt.batched ? "both guidance branches in one call of batch 2" : "two calls a step");
  double uncached_seconds = 0, cached_seconds = 0, psnr_sum = 0, ssim_sum = 0;
  std::size_t calls = 0, cached_calls = 0, mismatches = 0;
  for (const auto& [label, seed] : clips) {
    auto start = std::chrono::steady_clock::now();
    const run_result plain = sampler.run(label, seed, nullptr);
    uncached_seconds += seconds_since(start);
    start = std::chrono::steady_clock::now();
    const run_result cached = sampler.run(label, seed, &cache);
    cached_seconds += seconds_since(start);
    calls += plain.calls;
    cached_calls += cached.calls;
    const double psnr = dit::psnr(cached.clip, plain.clip);
    const double ssim = dit::ssim(cached.clip, plain.clip, d.frames, d.height, d.width);
    psnr_sum += psnr;
    ssim_sum += ssim;
    std::printf("digit %zu, seed %llu: %zu -> %zu calls, PSNR %.1f dB, SSIM %.4f\n  steps: %s\n", label,
                static_cast<unsigned long long>(seed), plain.calls, cached.calls, psnr, ssim, cached.pattern.c_str());
    if (opt.check) {
      const std::string reference = eigen_pattern(eigen_model, label, seed, opt.batched);
      const bool same = reference == cached.pattern;
      mismatches += !same;
      std::printf("  Eigen: %s (%s)\n", reference.c_str(), same ? "the same decisions" : "DIFFERENT decisions");
    }
  }
  const double n = static_cast<double>(clips.size());
  std::printf("%zu clips: calls %zu -> %zu (%.2fx fewer), wall-clock %.2f s -> %.2f s (%.2fx faster), "
              "PSNR %.1f dB, SSIM %.4f (means, against the uncached clips)\n",
              clips.size(), calls, cached_calls, double(calls) / double(cached_calls), uncached_seconds,
              cached_seconds, uncached_seconds / cached_seconds, psnr_sum / n, ssim_sum / n);
  if (opt.check) {
    std::printf("decisions against the Eigen demo's: %s\n",
                mismatches == 0 ? "all the same" : "some differ");
    return mismatches == 0 ? 0 : 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "easycache_libtorch_dit: %s\n", e.what());
    return 1;
  }
}
