// A sampler like Wan2.1's: flow matching with a shifted schedule (shift 5),
// classifier-free guidance with a conditional and an unconditional call per step,
// and one of three solvers: Euler (HunyuanVideo's), UniPC of order 2 with the bh2
// variant (Wan2.1's own), or DPM-Solver++(2M). With an easycache::controller, each
// call goes through it: branch 0 is the conditional call (the anchor, it decides),
// branch 1 the unconditional one. The multistep solvers keep earlier outputs: on a
// skipped step the cached prediction is what enters that history.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

#include "dit.hpp"

namespace dit {

/// How a step goes from x at sigma_i to sigma_{i+1} given the guided velocity.
enum class solver {
  euler,     ///< x += (sigma_{i+1} − sigma_i) · v, on shifted_sigmas (from 1)
  unipc,     ///< UniPC, order 2, bh2, data prediction, lower order at the end (Wan2.1), on wan_sigmas
  dpmpp_2m,  ///< DPM-Solver++(2M), midpoint, data prediction, first order at the end, on wan_sigmas
};

inline const char* name_of(solver s) noexcept {
  switch (s) {
    case solver::euler: return "Euler";
    case solver::unipc: return "UniPC";
    case solver::dpmpp_2m: return "DPM-Solver++(2M)";
  }
  return "?";
}

/// The sampler's settings; the defaults are Wan2.1's text-to-video ones (with Euler steps).
struct sampler_settings {
  std::size_t steps = 50;
  solver method = solver::euler;
  double shift = 5.0;    ///< sigma' = shift·s / (1 + (shift − 1)·s) on s = 1 … 0 spaced evenly
  float guidance = 5.0;  ///< v = v_uncond + guidance · (v_cond − v_uncond)
};

/// Flow matching's time shift of a sigma s in [0, 1]: shift·s / (1 + (shift − 1)·s).
inline double shift_sigma(double s, double shift) { return shift * s / (1 + (shift - 1) * s); }

/// steps + 1 sigmas from 1 down to 0, shifted (Wan2.1's flow-matching schedule).
inline std::vector<double> shifted_sigmas(std::size_t steps, double shift) {
  std::vector<double> sigmas(steps + 1);
  for (std::size_t i = 0; i <= steps; ++i)
    sigmas[i] = shift_sigma(1.0 - static_cast<double>(i) / static_cast<double>(steps), shift);
  return sigmas;
}

/// Wan2.1's schedule for its multistep solvers: steps sigmas spaced evenly from
/// 0.999 (its first training sigma, where alpha = 1 − sigma is not 0) down to
/// 0.999 / steps, shifted as shifted_sigmas does, then 0.
inline std::vector<double> wan_sigmas(std::size_t steps, double shift) {
  std::vector<double> sigmas(steps + 1, 0.0);
  for (std::size_t i = 0; i < steps; ++i) {
    sigmas[i] = shift_sigma(0.999 * (1.0 - static_cast<double>(i) / static_cast<double>(steps)), shift);
  }
  return sigmas;
}

/// The schedule `method` runs on.
inline std::vector<double> sigmas_for(solver method, std::size_t steps, double shift) {
  return method == solver::euler ? shifted_sigmas(steps, shift) : wan_sigmas(steps, shift);
}

/// The multistep solvers on flow matching: x_sigma = (1 − sigma)·x0 + sigma·noise,
/// the model's velocity v = noise − x0, so the data prediction is x0 = x − sigma·v;
/// lambda = log(alpha / sigma) with alpha = 1 − sigma. Coefficients in double.
class multistep_solver {
 public:
  multistep_solver(solver method, std::vector<double> sigmas) : method_(method), sigmas_(std::move(sigmas)) {}

  /// Step i: x (the input the model saw) and its guided velocity v; returns x at sigma_{i+1}.
  Eigen::VectorXf step(std::size_t i, const Eigen::VectorXf& x_in, const Eigen::VectorXf& v) {
    const std::size_t steps = sigmas_.size() - 1;
    Eigen::VectorXf x = x_in;
    Eigen::VectorXf x0 = x - static_cast<float>(sigmas_[i]) * v;
    if (method_ == solver::unipc && i > 0) x = unipc_corrector(i, x0);
    x0_prev_ = std::move(x0_last_);
    x0_last_ = std::move(x0);
    ++outputs_;
    if (method_ == solver::unipc) {
      // Order 2 from the second step on, and lower at the end (lower_order_final).
      order_ = std::min<std::size_t>({2, steps - i, outputs_});
      last_sample_ = x;
      return unipc_predictor(i, x, order_);
    }
    // DPM-Solver++(2M): first order at the first step and at the last (final sigma 0),
    // and at the second-to-last below 15 steps, as diffusers does.
    const bool first_order = outputs_ < 2 || i + 1 == steps || (steps < 15 && i + 2 == steps);
    return dpmpp_2m(i, x, first_order);
  }

 private:
  static double alpha(double sigma) { return 1.0 - sigma; }
  double lambda(std::size_t i) const { return std::log(alpha(sigmas_[i])) - std::log(sigmas_[i]); }

  // Predictor of UniPC-bh2 from sigma_i to sigma_{i+1}, order 1 or 2 (rho = 0.5 at order 2).
  Eigen::VectorXf unipc_predictor(std::size_t i, const Eigen::VectorXf& x, std::size_t order) const {
    const double sigma_t = sigmas_[i + 1], sigma_s = sigmas_[i];
    const double h = (sigma_t > 0 ? lambda(i + 1) : std::numeric_limits<double>::infinity()) - lambda(i);
    const double h_phi_1 = std::expm1(-h), b_h = h_phi_1;
    Eigen::VectorXf out = static_cast<float>(sigma_t / sigma_s) * x - static_cast<float>(alpha(sigma_t) * h_phi_1) * x0_last_;
    if (order == 2) {
      const double rk = (lambda(i - 1) - lambda(i)) / h;
      out -= static_cast<float>(alpha(sigma_t) * b_h * 0.5 / rk) * (x0_prev_ - x0_last_);
    }
    return out;
  }

  // Corrector of UniPC-bh2 at step i: x_i again from x_{i−1} (last_sample_), now with
  // the model's data prediction at x_i, at the order the predictor used. The model
  // saw the uncorrected x_i; the corrected one is where the next predictor starts.
  Eigen::VectorXf unipc_corrector(std::size_t i, const Eigen::VectorXf& x0_t) const {
    const double sigma_t = sigmas_[i], sigma_s = sigmas_[i - 1];
    const double h = lambda(i) - lambda(i - 1), hh = -h;
    const double h_phi_1 = std::expm1(hh), b_h = h_phi_1;
    const double h_phi_k1 = h_phi_1 / hh - 1, h_phi_k2 = h_phi_k1 / hh - 0.5;
    const double b1 = h_phi_k1 / b_h, b2 = h_phi_k2 * 2 / b_h;
    Eigen::VectorXf out = static_cast<float>(sigma_t / sigma_s) * last_sample_ -
                          static_cast<float>(alpha(sigma_t) * h_phi_1) * x0_last_;
    const float scale = static_cast<float>(alpha(sigma_t) * b_h);
    if (order_ == 2) {
      // rho solves [[1, 1], [rk, 1]] · rho = [b1, b2].
      const double rk = (lambda(i - 2) - lambda(i - 1)) / h;
      const double rho0 = (b1 - b2) / (1 - rk), rho1 = b1 - rho0;
      out -= scale * (static_cast<float>(rho0 / rk) * (x0_prev_ - x0_last_) + static_cast<float>(rho1) * (x0_t - x0_last_));
    } else {
      out -= scale * 0.5f * (x0_t - x0_last_);
    }
    return out;
  }

  Eigen::VectorXf dpmpp_2m(std::size_t i, const Eigen::VectorXf& x, bool first_order) const {
    const double sigma_t = sigmas_[i + 1], sigma_s = sigmas_[i];
    const double h = (sigma_t > 0 ? lambda(i + 1) : std::numeric_limits<double>::infinity()) - lambda(i);
    const auto a = static_cast<float>(alpha(sigma_t) * std::expm1(-h));
    Eigen::VectorXf out = static_cast<float>(sigma_t / sigma_s) * x - a * x0_last_;
    if (!first_order) {
      const double r = (lambda(i) - lambda(i - 1)) / h;
      out -= (0.5f * a / static_cast<float>(r)) * (x0_last_ - x0_prev_);
    }
    return out;
  }

  solver method_;
  std::vector<double> sigmas_;
  Eigen::VectorXf x0_last_, x0_prev_, last_sample_;
  std::size_t outputs_ = 0, order_ = 1;
};

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
      : model_(m), settings_(settings), sigmas_(sigmas_for(settings.method, settings.steps, settings.shift)) {}

  const sampler_settings& settings() const noexcept { return settings_; }
  /// Denoiser (model) calls made by the last run.
  std::size_t calls() const noexcept { return calls_; }
  void on_step(observer o) { observer_ = std::move(o); }
  /// The schedule: steps + 1 sigmas, the last 0.
  const std::vector<double>& sigmas() const noexcept { return sigmas_; }

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

  /// The same with each call through `evaluate(info, x, v, denoiser)`, which calls
  /// denoiser(x, v, info) or writes v some other way (a baseline cache).
  template <class Evaluate>
  Eigen::VectorXf run_custom(std::size_t label, std::uint64_t seed, Evaluate&& evaluate) {
    return run_with(label, seed, std::forward<Evaluate>(evaluate));
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
    multistep_solver multistep(settings_.method, sigmas_);
    for (std::size_t i = 0; i < settings_.steps; ++i) {
      evaluate(easycache::step_info{i, sigmas_[i], 0}, x, v_cond, conditional);
      evaluate(easycache::step_info{i, sigmas_[i], 1}, x, v_uncond, unconditional);
      if (observer_) observer_(i, x, v_cond);
      if (settings_.method == solver::euler) {
        const float dt = static_cast<float>(sigmas_[i + 1] - sigmas_[i]);
        x += dt * (v_uncond + settings_.guidance * (v_cond - v_uncond));
      } else {
        x = multistep.step(i, x, v_uncond + settings_.guidance * (v_cond - v_uncond));
      }
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
