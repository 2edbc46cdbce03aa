// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The controller's second state machine: what the anchor branch's input
// change is measured against, and how the backend's sums become dx, k and
// ‖v‖. Plain numbers only; the tensor passes that produce the sums are the
// backend's (tensor_traits), called by the controller.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>

#include "../config.hpp"
#include "../error.hpp"
#include "../decision.hpp"
#include "../tensor_traits.hpp"
#include "format.hpp"
#include "peer_rules.hpp"

namespace easycache::detail {

/// The input dx is measured against (config::input_change).
enum class input_reference {
  last_compute,    ///< x_last: the input of the anchor's last computed step
  previous_input,  ///< x_prev: the previous step's input, kept by its skip
};

/// The sums a step's reduction gives, then the sampled element count, then
/// (config.output_norm = every_element) the elements the norm is over: what
/// the statistics reduction across ranks combines.
inline constexpr std::size_t reduced_value_count = statistic_slot_count + 2;

/// The anchor's measurement state within one generation. The configuration
/// is passed to each call (the controller's own, which reset(config) may replace).
///
/// After each computed step the backend's commit pass leaves the sums of the
/// output change and input change since the previous compute, and of ‖v‖; the
/// next measured step reads them with its own dx sum, in the one read of a
/// step. k is output change / input change of the last two computed steps.
class anchor_measurement {
 public:
  /// A generation starts: nothing computed, nothing kept.
  void start() noexcept {
    computes_ = 0;
    has_previous_input_ = false;
    previous_is_last_compute_ = false;
    commit_unread_ = false;
    commit_measured_change_ = false;
    transformation_rate_ = std::numeric_limits<double>::quiet_NaN();
    output_norm_ = std::numeric_limits<double>::quiet_NaN();
  }

  /// Throws easycache::error when an anchor input of `size` elements does not
  /// divide into the sampling planes and batched conditions the statistics need.
  static void check_shape(const config& cfg, std::size_t size) {
    const statistics_sampling& s = cfg.sampling;
    if (s.height != 0 && size % (s.height * s.width) != 0)
      throw error(message("input of ", size, " elements is not a whole number of ", s.height, "x", s.width,
                          " planes (config.sampling.height x width)"));
    const std::size_t conditions = cfg.batched_conditions;
    if (size % conditions != 0)
      throw error(message("input of ", size, " elements is not ", conditions,
                          " equal slices (config.batched_conditions)"));
    if (s.height != 0 && (size / conditions) % (s.height * s.width) != 0)
      throw error(message("each of the ", conditions, " batched conditions of ", size / conditions,
                          " elements is not a whole number of ", s.height, "x", s.width,
                          " planes (config.sampling.height x width)"));
  }

  /// Computed steps of the anchor in this generation.
  std::size_t computes() const noexcept { return computes_; }
  /// dx, k and ‖v‖ can all be measured at this step.
  bool has_history() const noexcept { return computes_ >= 2 && has_previous_input_; }
  /// dx can be measured (for config::measure_forced_steps).
  bool can_measure(const config& cfg) const noexcept {
    return cfg.input_change == input_change_reference::previous_step ? has_previous_input_ : computes_ > 0;
  }
  /// What this step's dx is measured against.
  input_reference reference(const config& cfg) const noexcept {
    return cfg.input_change == input_change_reference::last_compute || previous_is_last_compute_
               ? input_reference::last_compute
               : input_reference::previous_input;
  }
  /// The commit pass measures the output and input change (a previous compute exists).
  bool commit_measures_change() const noexcept { return computes_ >= 1; }
  /// A skip keeps its input as the next step's reference (config::input_change = previous_step).
  static bool skip_keeps_input(const config& cfg) noexcept {
    return cfg.input_change == input_change_reference::previous_step;
  }

  /// The elements the sampled statistics visit in an anchor input of `size` elements.
  static std::size_t sampled_elements(const config& cfg, std::size_t size) noexcept {
    return sampled_count(size / cfg.batched_conditions, cfg.sampling);
  }
  /// The elements the output norm is over.
  static std::size_t norm_elements(const config& cfg, std::size_t size) noexcept {
    return cfg.output_norm == output_norm_scope::every_element ? size : sampled_elements(cfg, size);
  }
  /// How many of the reduced values (reduced_value_count) a reduction across ranks combines.
  static std::size_t reduced_values(const config& cfg) noexcept {
    return statistic_slot_count + (cfg.output_norm == output_norm_scope::every_element ? 2 : 1);
  }

  /// The values a step's reduction is over: the backend's sums, then the counts.
  static void fill(const config& cfg, const double (&sums)[statistic_slot_count], std::size_t size,
                   double (&values)[reduced_value_count]) noexcept {
    for (std::size_t i = 0; i < statistic_slot_count; ++i) values[i] = sums[i];
    values[statistic_slot_count] = static_cast<double>(sampled_elements(cfg, size));
    values[statistic_slot_count + 1] = static_cast<double>(norm_elements(cfg, size));
  }

  /// Takes the (combined) values of a step: the last commit's sums become k
  /// and ‖v‖ if not read yet; returns dx.
  double take(const config& cfg, const double (&values)[reduced_value_count]) noexcept {
    const bool separate_norm_count = cfg.output_norm == output_norm_scope::every_element;
    auto mean = [&](statistic_slot slot) {
      const double elements = slot == statistic_slot::output_norm && separate_norm_count
                                  ? values[statistic_slot_count + 1]
                                  : values[statistic_slot_count];
      return decision_value(cfg, values[static_cast<std::size_t>(slot)] / elements);
    };
    if (commit_unread_) {
      output_norm_ = mean(statistic_slot::output_norm);
      if (commit_measured_change_)
        transformation_rate_ = next_transformation_rate(cfg, transformation_rate_,
                                                        mean(statistic_slot::output_change),
                                                        mean(statistic_slot::input_change_since_compute));
      commit_unread_ = false;
    }
    return mean(statistic_slot::input_change);
  }

  double transformation_rate() const noexcept { return transformation_rate_; }
  double output_norm() const noexcept { return output_norm_; }

  /// The measurement a policy may decide on, or nullopt when dx, k or ‖v‖ is
  /// degenerate (zero or non-finite), or dx is zero under statistics_guard.
  std::optional<step_measurement> usable(const config& cfg, double input_change) const noexcept {
    // Means of absolute values are never negative; a statistics reduction
    // that made one so would otherwise give a negative ε, and skips.
    const bool usable = std::isfinite(input_change) && input_change >= 0 && std::isfinite(transformation_rate_) &&
                        transformation_rate_ >= 0 && std::isfinite(output_norm_) && output_norm_ > 0 &&
                        (cfg.guard != statistics_guard::positive_input_change || input_change > 0);
    if (!usable) return std::nullopt;
    return step_measurement{input_change, transformation_rate_, output_norm_};
  }

  /// A computed step's commit pass has run: its sums wait in the workspace.
  void computed() noexcept {
    ++computes_;
    commit_unread_ = true;
    commit_measured_change_ = computes_ >= 2;
    has_previous_input_ = true;
    previous_is_last_compute_ = true;
  }

  /// A skipped step kept its input (skip_keeps_input(cfg)).
  void skipped_keeping_input() noexcept {
    has_previous_input_ = true;
    previous_is_last_compute_ = false;
  }

 private:
  std::size_t computes_ = 0;
  bool has_previous_input_ = false;
  bool previous_is_last_compute_ = false;  // the previous input is x_last (the previous step was computed)
  bool commit_unread_ = false;             // the workspace holds sums of a commit not read yet
  bool commit_measured_change_ = false;    // ... and they include the output and input change
  double transformation_rate_ = std::numeric_limits<double>::quiet_NaN();
  double output_norm_ = std::numeric_limits<double>::quiet_NaN();
};

}  // namespace easycache::detail
