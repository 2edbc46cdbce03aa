// A scripted trajectory that every backend runs: the same inputs, the same
// denoiser (on plain numbers), the same configuration; the tests compare the
// decisions, the statistics and the outputs with those of Eigen.
//
// A backend adapter provides, for its tensor type T:
//   T make(const std::vector<double>& values);              // a new tensor holding them
//   std::vector<double> values(const T& t);                 // its elements, as double
//   void write(const std::vector<double>& values, T& out);  // into out's own memory
// and may provide
//   void begin_step(std::size_t t);                          // called before step t's tensors are made
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

namespace script {

/// The input of step t, element i: a phase that moves by 0.3 a step, so that
/// consecutive inputs differ by about a third of their size (statistics stay
/// far above the rounding of float16 and bfloat16 elements).
inline double input(std::size_t t, std::size_t i, std::size_t steps) {
  const double progress = double(t) / double(steps);
  return std::sin(0.37 * double(i) + 0.3 * double(t)) * (1.2 - progress) + 0.4 * progress;
}

/// A nonlinear denoiser per branch, so that k varies from step to step.
inline double denoise(double x, std::size_t branch) {
  return branch == 0 ? 2.0 * x + 1.0 + 0.3 * x * x : 0.5 - x + 0.2 * x * x * x;
}

/// Everything a run produced, per evaluation in order (step-major, branch-minor).
struct result {
  std::vector<easycache::step_record> trace;
  std::vector<std::vector<double>> outputs;
  easycache::statistics stats;

  std::string pattern(std::size_t branch) const {
    std::string p;
    for (const auto& r : trace)
      if (r.branch == branch) p += r.action == easycache::action::skip ? 'S' : 'C';
    return p;
  }
  std::string patterns(std::size_t branches) const {
    std::string all;
    for (std::size_t b = 0; b < branches; ++b) all += (b ? "/" : "") + pattern(b);
    return all;
  }
};

template <class Backend, class = void>
struct has_begin_step : std::false_type {};
template <class Backend>
struct has_begin_step<Backend, std::void_t<decltype(std::declval<Backend&>().begin_step(std::size_t{}))>>
    : std::true_type {};

/// Runs the script: `size` elements, cfg.steps steps, cfg.branches branches.
template <class Tensor, class Backend>
result run(Backend& backend, const easycache::config& cfg, std::size_t size) {
  easycache::controller<Tensor> cache(cfg);
  result r;
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    if constexpr (has_begin_step<Backend>::value) backend.begin_step(t);
    std::vector<double> x(size);
    for (std::size_t i = 0; i < size; ++i) x[i] = input(t, i, cfg.steps);
    const Tensor in = backend.make(x);
    for (std::size_t b = 0; b < cfg.branches; ++b) {
      Tensor out = backend.make(std::vector<double>(size, 0.0));
      cache.step(in, out, {t, 1.0 - double(t) / double(cfg.steps), b}, [&](const Tensor& xt, Tensor& v) {
        std::vector<double> vs = backend.values(xt);
        for (double& e : vs) e = denoise(e, b);
        backend.write(vs, v);
      });
      r.outputs.push_back(backend.values(out));
    }
  }
  r.trace = cache.trace();
  r.stats = cache.stats();
  return r;
}

/// Eigen vectors of float or double: the reference backend.
template <class Scalar>
struct eigen_backend {
  using tensor = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  tensor make(const std::vector<double>& v) const {
    tensor t(Eigen::Index(v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) t(Eigen::Index(i)) = Scalar(v[i]);
    return t;
  }
  std::vector<double> values(const tensor& t) const { return std::vector<double>(t.data(), t.data() + t.size()); }
  void write(const std::vector<double>& v, tensor& out) const { out = make(v); }
};

template <class Scalar>
result run_eigen(const easycache::config& cfg, std::size_t size) {
  eigen_backend<Scalar> backend;
  return run<typename eigen_backend<Scalar>::tensor>(backend, cfg, size);
}

/// The configurations the backends are compared on: the reference rules with
/// two branches, the variants that change what the reductions visit (strides
/// up to SIZE_MAX included), and the linear and last-output predictors, which
/// change what a skipped step writes.
inline easycache::config linear_predictor(easycache::config cfg) {
  cfg.predictor = easycache::skip_predictor::linear_in_timestep;
  return cfg;
}

inline std::vector<easycache::config> configurations(double threshold) {
  std::vector<easycache::config> all;
  easycache::config base;
  base.steps = 20;
  base.warmup_steps = 3;
  base.threshold = threshold;
  base.branches = 2;
  all.push_back(base);
  easycache::config last_compute = base;
  last_compute.input_change = easycache::input_change_reference::last_compute;
  last_compute.threshold = 2 * threshold;
  all.push_back(last_compute);
  easycache::config flat_stride = base;
  flat_stride.sampling = {3, 0, 0};
  all.push_back(flat_stride);
  easycache::config planes = base;
  planes.sampling = {2, 6, 8};  // 4 planes of 6x8 in 192 elements
  all.push_back(planes);
  easycache::config window = base;
  window.window = easycache::schedule_window{0.1, 0.9};
  window.measure_forced_steps = true;
  window.branches = 1;
  all.push_back(window);
  all.push_back(linear_predictor(base));
  easycache::config last_output = base;
  last_output.predictor = easycache::skip_predictor::last_output;
  all.push_back(last_output);
  easycache::config huge_planes = base;
  huge_planes.sampling = {std::numeric_limits<std::size_t>::max(), 6, 8};  // element 0 of each plane
  huge_planes.threshold = 1.5 * threshold;  // at 0.3, τ = 0.3 is within 1e-5 of a decision's E
  all.push_back(huge_planes);
  return all;
}

inline constexpr std::size_t size = 192;

/// The smallest distance |E − τ| / τ over the decision steps of a trace (E as
/// compared with τ): how far the decisions are from a tie that rounding could flip.
inline double margin(const result& r, double threshold) {
  double smallest = 1e300;
  for (const auto& rec : r.trace)
    if (rec.branch == 0 && std::isfinite(rec.accumulated_error))
      smallest = std::min(smallest, std::abs(rec.accumulated_error - threshold) / threshold);
  return smallest;
}

}  // namespace script
