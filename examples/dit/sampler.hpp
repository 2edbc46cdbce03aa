// A sampler like Wan2.1's: flow matching with a shifted schedule (shift 5), Euler
// steps, classifier-free guidance with a conditional and an unconditional call per
// step. With an easycache::controller, each call goes through it: branch 0 is the
// conditional call (the anchor, it decides), branch 1 the unconditional one.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include <Eigen/Core>
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

#include "dit.hpp"

namespace dit {

/// The sampler's settings; the defaults are Wan2.1's text-to-video ones.
struct sampler_settings {
  std::size_t steps = 50;
  double shift = 5.0;    ///< sigma' = shift·s / (1 + (shift − 1)·s) on s = 1 … 0 spaced evenly
  float guidance = 5.0;  ///< v = v_uncond + guidance · (v_cond − v_uncond)
};

/// steps + 1 sigmas from 1 down to 0, shifted (Wan2.1's flow-matching schedule).
inline std::vector<double> shifted_sigmas(std::size_t steps, double shift) {
  std::vector<double> sigmas(steps + 1);
  for (std::size_t i = 0; i <= steps; ++i) {
    const double s = 1.0 - static_cast<double>(i) / static_cast<double>(steps);
    sigmas[i] = shift * s / (1 + (shift - 1) * s);
  }
  return sigmas;
}

/// Standard normal noise from a seed, the same on every platform (mt19937_64 and
/// Box–Muller; std::normal_distribution differs between standard libraries).
inline Eigen::VectorXf gaussian_noise(std::size_t size, std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  auto uniform = [&] { return (static_cast<double>(engine() >> 11) + 0.5) * 0x1.0p-53; };  // in (0, 1)
  Eigen::VectorXf noise(static_cast<Eigen::Index>(size));
  for (Eigen::Index i = 0; i < noise.size(); i += 2) {
    const double radius = std::sqrt(-2.0 * std::log(uniform())), angle = 6.283185307179586 * uniform();
    noise(i) = static_cast<float>(radius * std::cos(angle));
    if (i + 1 < noise.size()) noise(i + 1) = static_cast<float>(radius * std::sin(angle));
  }
  return noise;
}

/// Generates latents with the model; counts the denoiser calls of the last run.
class sampler {
 public:
  /// Called after each step's calls with the step, its input x and the conditional output.
  using observer = std::function<void(std::size_t step, const Eigen::VectorXf& x, const Eigen::VectorXf& v_cond)>;

  sampler(model& m, sampler_settings settings = {})
      : model_(m), settings_(settings), sigmas_(shifted_sigmas(settings.steps, settings.shift)) {}

  const sampler_settings& settings() const noexcept { return settings_; }
  /// Denoiser (model) calls made by the last run.
  std::size_t calls() const noexcept { return calls_; }
  void on_step(observer o) { observer_ = std::move(o); }

  /// A clip of class `label` from the noise of `seed`, calling the model twice a step.
  Eigen::VectorXf run(std::size_t label, std::uint64_t seed) {
    return run_with(label, seed, [](const easycache::step_info& info, const Eigen::VectorXf& x, Eigen::VectorXf& v,
                                    auto& denoiser) { denoiser(x, v, info); });
  }

  /// The same with every call through `cache` (configured for settings().steps and 2 branches).
  template <class Policy>
  Eigen::VectorXf run(std::size_t label, std::uint64_t seed, easycache::controller<Eigen::VectorXf, Policy>& cache) {
    return run_with(label, seed,
                    [&cache](const easycache::step_info& info, const Eigen::VectorXf& x, Eigen::VectorXf& v,
                             auto& denoiser) { cache.step(x, v, info, denoiser); });
  }

 private:
  template <class Evaluate>
  Eigen::VectorXf run_with(std::size_t label, std::uint64_t seed, Evaluate&& evaluate) {
    const std::size_t size = model_.sizes().latent_size();
    Eigen::VectorXf x = gaussian_noise(size, seed);
    Eigen::VectorXf v_cond(x.size()), v_uncond(x.size());
    calls_ = 0;
    auto conditional = [&](const Eigen::VectorXf& in, Eigen::VectorXf& out, const easycache::step_info& info) {
      ++calls_;
      model_.forward(in, static_cast<float>(info.timestep), label, out);
    };
    auto unconditional = [&](const Eigen::VectorXf& in, Eigen::VectorXf& out, const easycache::step_info& info) {
      ++calls_;
      model_.forward(in, static_cast<float>(info.timestep), model_.null_class(), out);
    };
    for (std::size_t i = 0; i < settings_.steps; ++i) {
      evaluate(easycache::step_info{i, sigmas_[i], 0}, x, v_cond, conditional);
      evaluate(easycache::step_info{i, sigmas_[i], 1}, x, v_uncond, unconditional);
      if (observer_) observer_(i, x, v_cond);
      const float dt = static_cast<float>(sigmas_[i + 1] - sigmas_[i]);
      x += dt * (v_uncond + settings_.guidance * (v_cond - v_uncond));
    }
    return x;
  }

  model& model_;
  sampler_settings settings_;
  std::vector<double> sigmas_;
  std::size_t calls_ = 0;
  observer observer_;
};

}  // namespace dit
