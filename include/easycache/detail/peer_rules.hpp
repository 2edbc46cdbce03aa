// SPDX-License-Identifier: MIT
//
// The rules in which the peer variants (ComfyUI's node, stable-diffusion.cpp)
// differ from the reference, as the controller applies them: what a step
// outside the window keeps, which statistics the backend computes, and when k
// is replaced. Kept apart so that the controller reads as the algorithm;
// docs/variants.md lists the rules with their sources.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <string>

#include "../config.hpp"
#include "../tensor_traits.hpp"
#include "float32.hpp"
#include "window.hpp"

namespace easycache::detail {

/// What a computed step keeps (config::history_outside_window).
enum class retention {
  everything,     ///< x_last, Δ, ‖v‖, k: the step counts as a computed step
  cached_vector,  ///< the branch's Δ only
  nothing,
};

/// What a computed call at this progress and sigma keeps.
inline retention retention_of(const config& cfg, double progress, double sigma) noexcept {
  if (!cfg.window || cfg.history_outside_window == outside_window_history::keep) return retention::everything;
  switch (position_in_window(*cfg.window, cfg.window_sigma, progress, sigma)) {
    case window_position::inside: return retention::everything;
    case window_position::before:
      return cfg.history_outside_window == outside_window_history::cached_vectors_only ? retention::cached_vector
                                                                                       : retention::nothing;
    case window_position::past: break;
  }
  return retention::nothing;
}

/// The configuration value that needs the backend's scoped statistics
/// (tensor_traits' reduce_abs_diff_scoped and commit_scoped), or "" for none.
inline std::string scoped_statistics_need(const config& cfg) {
  if (cfg.batched_conditions > 1) return message("config.batched_conditions = ", cfg.batched_conditions);
  if (cfg.output_norm == output_norm_scope::every_element) return "config.output_norm = every_element";
  if (cfg.arithmetic == decision_arithmetic::float32) return "config.arithmetic = float32";
  if (cfg.arithmetic == decision_arithmetic::float32_sequential) return "config.arithmetic = float32_sequential";
  return {};
}

inline bool needs_scoped_statistics(const config& cfg) noexcept {
  return cfg.batched_conditions > 1 || cfg.output_norm == output_norm_scope::every_element ||
         cfg.arithmetic != decision_arithmetic::float64;
}

/// The statistics of an anchor tensor of `size` elements.
inline statistics_scope scope_of(const config& cfg, std::size_t size) noexcept {
  statistics_scope scope;
  scope.sampling = cfg.sampling;
  scope.extent = size / cfg.batched_conditions;
  scope.norm_every_element = cfg.output_norm == output_norm_scope::every_element;
  scope.sequential = cfg.arithmetic == decision_arithmetic::float32_sequential;
  return scope;
}

/// A mean as the decision uses it: rounded to float32 in the float32 arithmetics.
inline double decision_value(const config& cfg, double mean) noexcept {
  return cfg.arithmetic == decision_arithmetic::float64 ? mean : rounded_to_float(mean);
}

/// k after a computed step whose output change and input change (means, as
/// decision_value gives them) were measured; `previous` is the k before it.
inline double next_transformation_rate(const config& cfg, double previous, double output_change,
                                       double input_change) noexcept {
  // The float32 arithmetics divide two floats: the quotient in double, rounded
  // once to float, is the float quotient (53 >= 2·24 + 2 bits).
  if (cfg.rate_update == transformation_rate_update::positive_finite_only) {
    if (!(input_change > 0 && output_change > 0)) return previous;
    const double rate = decision_value(cfg, output_change / input_change);
    return std::isfinite(rate) ? rate : previous;
  }
  // An overflowed (infinite) input change would make k = 0 and skip on ε = 0.
  if (!(input_change > 0 && std::isfinite(input_change))) return std::numeric_limits<double>::quiet_NaN();
  return decision_value(cfg, output_change / input_change);
}

}  // namespace easycache::detail
