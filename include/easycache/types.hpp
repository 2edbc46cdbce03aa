// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <limits>

namespace easycache {

/// What the sampler tells the controller about the current call.
struct step_info {
  /// 0-based step index within the generation. Step 0 starts a new generation.
  std::size_t index = 0;
  /// The step's timestep or sigma; recorded in the trace, passed to the denoiser.
  double timestep = std::numeric_limits<double>::quiet_NaN();
  /// Guidance branch: 0 (the anchor, called first in each step) decides for all.
  std::size_t branch = 0;
  /// Position in the schedule in [0, 1] for the window variant; NaN: index / steps.
  double progress = std::numeric_limits<double>::quiet_NaN();
  /// A further evaluation within the same step that takes no part in caching
  /// (the second evaluation of Heun or DPM2): always computed, counted in the
  /// stats, never touching the cached state.
  bool extra_evaluation = false;
};

/// What a step did for one branch.
enum class action : unsigned char {
  compute,  ///< the denoiser was called
  skip,     ///< the output was input + cached transformation vector
};

/// Why a step was computed or skipped.
enum class reason : unsigned char {
  warmup,                 ///< step < warmup_steps (forced compute)
  last_step,              ///< the last step of the schedule (forced compute)
  outside_window,         ///< outside the window variant's [start, end) (forced compute)
  no_history,             ///< fewer than two computed steps, or no cached vector for this branch
  degenerate_statistics,  ///< zero or non-finite dx, k or output norm: computed to stay safe
  below_threshold,        ///< E < τ: skipped
  above_threshold,        ///< E >= τ: computed, E reset
  policy,                 ///< decided by a policy without statistics (fixed interval, mask, ...)
  extra_evaluation,       ///< step_info::extra_evaluation: computed, outside the cache
};
inline constexpr std::size_t reason_count = 9;

/// Lower-case name of an action ("compute", "skip").
constexpr const char* to_string(action a) noexcept { return a == action::skip ? "skip" : "compute"; }

/// Snake-case name of a reason ("warmup", "below_threshold", ...).
constexpr const char* to_string(reason r) noexcept {
  switch (r) {
    case reason::warmup: return "warmup";
    case reason::last_step: return "last_step";
    case reason::outside_window: return "outside_window";
    case reason::no_history: return "no_history";
    case reason::degenerate_statistics: return "degenerate_statistics";
    case reason::below_threshold: return "below_threshold";
    case reason::above_threshold: return "above_threshold";
    case reason::policy: return "policy";
    case reason::extra_evaluation: return "extra_evaluation";
  }
  return "unknown";
}

}  // namespace easycache
