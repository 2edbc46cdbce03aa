// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Policies: the decision rule alone, separate from tensors, so that it can be
// unit-tested with plain numbers and swapped for another rule.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "types.hpp"

namespace easycache {

namespace detail {
template <class P, class = void>
struct has_configure : std::false_type {};
template <class P>
struct has_configure<P, std::void_t<decltype(std::declval<P&>().configure(std::declval<const config&>()))>>
    : std::true_type {};
}  // namespace detail

/// What is known when a step begins, before anything is measured.
struct step_context {
  std::size_t step = 0;   ///< 0-based index
  std::size_t steps = 0;  ///< N
  double progress = 0;    ///< position in [0, 1] (step_info::progress or step / steps)
  /// dx, k and ‖v‖ can be measured: two computed steps and a previous input exist.
  bool has_history = false;
};

/// Statistics of the anchor branch, all finite, k and output_norm > 0.
struct step_measurement {
  double input_change = 0;         ///< dx (mean abs)
  double transformation_rate = 0;  ///< k
  double output_norm = 0;          ///< ‖v_at_last_compute‖ (mean abs)
};

/// A policy's answer for one step.
struct verdict {
  easycache::action action = easycache::action::compute;
  easycache::reason reason = easycache::reason::no_history;
  double predicted_error = std::numeric_limits<double>::quiet_NaN();    ///< ε of this step
  double accumulated_error = std::numeric_limits<double>::quiet_NaN();  ///< E compared with τ
};

/// The reference EasyCache rule (algorithm.md), including its window variant.
///
/// A policy has three phases so that the controller can keep its strong
/// exception guarantee: plan() and decide() are const; commit() updates the
/// state only once the step has succeeded.
///  - plan(): a verdict that needs no statistics (forced steps), or nullopt to
///    ask the controller to measure the anchor branch;
///  - decide(): the verdict from the measured statistics;
///  - commit(): the step was carried out as decided.
class easycache_policy {
 public:
  easycache_policy() = default;
  explicit easycache_policy(const config& cfg)
      : threshold_(cfg.threshold), warmup_steps_(cfg.warmup_steps), window_(cfg.window) {}

  std::optional<verdict> plan(const step_context& ctx) const {
    if (window_) {
      if (ctx.progress < window_->start || ctx.progress >= window_->end)
        return verdict{action::compute, reason::outside_window};
    } else {
      if (ctx.step < warmup_steps_) return verdict{action::compute, reason::warmup};
      if (ctx.step + 1 >= ctx.steps) return verdict{action::compute, reason::last_step};
    }
    if (!ctx.has_history) return verdict{action::compute, reason::no_history};
    return std::nullopt;
  }

  verdict decide(const step_context&, const step_measurement& m) const {
    verdict v;
    v.predicted_error = m.transformation_rate * (m.input_change / m.output_norm);
    v.accumulated_error = accumulated_error_ + v.predicted_error;
    if (v.accumulated_error < threshold_) {
      v.action = action::skip;
      v.reason = reason::below_threshold;
    } else {
      v.action = action::compute;
      v.reason = reason::above_threshold;
    }
    return v;
  }

  void commit(const step_context&, const verdict& v) noexcept {
    // A computed step (forced or not) restarts the accumulation; its ε is dropped.
    accumulated_error_ = v.action == action::skip ? v.accumulated_error : 0.0;
  }

  void reset() noexcept { accumulated_error_ = 0.0; }

  /// E after the last committed step.
  double accumulated_error() const noexcept { return accumulated_error_; }

 private:
  double threshold_ = 0.05;
  std::size_t warmup_steps_ = 10;
  std::optional<schedule_window> window_;
  double accumulated_error_ = 0.0;
};

}  // namespace easycache
