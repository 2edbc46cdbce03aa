// Comparison of a backend's run of the scripted trajectory with Eigen's (Catch2).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include "scripted_trajectory.hpp"

namespace script {

// Same decisions everywhere; statistics and outputs within `tolerance` (relative
// to max(1, |reference|)).
inline void compare(const result& got, const result& reference, std::size_t branches, double tolerance) {
  REQUIRE(got.patterns(branches) == reference.patterns(branches));
  REQUIRE(got.trace.size() == reference.trace.size());
  auto close = [&](double a, double b) {
    if (std::isnan(b)) return std::isnan(a);
    return std::abs(a - b) <= tolerance * std::max(1.0, std::abs(b));
  };
  for (std::size_t i = 0; i < got.trace.size(); ++i) {
    const auto& g = got.trace[i];
    const auto& r = reference.trace[i];
    INFO("evaluation " << i << " (step " << r.step << ", branch " << r.branch << ")");
    CHECK(g.reason == r.reason);
    CHECK(close(g.input_change, r.input_change));
    CHECK(close(g.transformation_rate, r.transformation_rate));
    CHECK(close(g.output_norm, r.output_norm));
    CHECK(close(g.accumulated_error, r.accumulated_error));
  }
  for (std::size_t e = 0; e < got.outputs.size(); ++e) {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < got.outputs[e].size(); ++i)
      if (!close(got.outputs[e][i], reference.outputs[e][i])) ++bad;
    INFO("evaluation " << e);
    CHECK(bad == 0);
  }
}

inline std::string describe(const easycache::config& cfg) {
  return "threshold " + std::to_string(cfg.threshold) + ", sampling " + std::to_string(cfg.sampling.stride) + "/" +
         std::to_string(cfg.sampling.height) + "x" + std::to_string(cfg.sampling.width) +
         (cfg.input_change == easycache::input_change_reference::last_compute ? ", last_compute" : "") +
         (cfg.window ? ", window" : "") +
         (cfg.predictor == easycache::skip_predictor::linear_in_timestep ? ", linear predictor" : "") +
         (cfg.predictor == easycache::skip_predictor::last_output ? ", last-output predictor" : "");
}

// The largest difference, relative to max(1, |value|), between the skipped
// outputs of the linear predictor and of the constant one on Eigen (double):
// how far off a backend that ignored the extrapolation would be.
inline double linear_predictor_effect(easycache::config cfg) {
  cfg.predictor = easycache::skip_predictor::linear_in_timestep;
  const result linear = run_eigen<double>(cfg, size);
  cfg.predictor = easycache::skip_predictor::constant;
  const result constant = run_eigen<double>(cfg, size);
  REQUIRE(linear.patterns(cfg.branches) == constant.patterns(cfg.branches));
  double largest = 0;
  for (std::size_t e = 0; e < linear.outputs.size(); ++e)
    for (std::size_t i = 0; i < linear.outputs[e].size(); ++i)
      largest = std::max(largest, std::abs(linear.outputs[e][i] - constant.outputs[e][i]) /
                                      std::max(1.0, std::abs(linear.outputs[e][i])));
  return largest;
}

// The τ (on a grid) whose reference decisions are farthest from a tie.
inline easycache::config far_from_ties(easycache::config cfg) {
  const double base = cfg.threshold;
  double best = -1;
  double chosen = base;
  for (int j = 1; j <= 80; ++j) {
    cfg.threshold = base * 0.1 * j;
    const result r = run_eigen<double>(cfg, size);
    const double m = margin(r, cfg.threshold);
    if (r.stats.skips > 0 && m > best) {
      best = m;
      chosen = cfg.threshold;
    }
  }
  cfg.threshold = chosen;
  return cfg;
}

}  // namespace script
