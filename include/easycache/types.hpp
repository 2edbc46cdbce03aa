// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <limits>
#include <type_traits>

#include "error.hpp"
#include "detail/format.hpp"

namespace easycache {

namespace detail {
// Converts a step index or branch of any integer type (an engine's `int`
// loop counter) without a narrowing error; refuses negative values.
template <class T>
inline constexpr bool is_index_v = std::is_integral_v<T> && !std::is_same_v<T, bool>;

template <class Integer>
std::size_t non_negative(Integer value, const char* what) {
  if constexpr (std::is_signed_v<Integer>) {
    if (value < 0) throw error(detail::message("step_info: ", what, " must be >= 0 (got ", value, ")"));
  }
  return static_cast<std::size_t>(value);
}
}  // namespace detail

/// What the sampler tells the controller about the current call.
///
/// Built from the sampler's own loop variables: `{i, sigma}`, `{i, sigma, branch}`
/// (any integer types), then the optional members set by name. A plain value:
/// copy it, store it, reuse it.
struct step_info {
  /// 0-based index of the step in the sampler's schedule (not in the
  /// generation: img2img that starts at step 20 of 50 passes 20, 21, ...).
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
  /// Length of the sampler's schedule (its last step is steps − 1); 0: config.steps.
  /// Pass it whenever the sampler knows it, so that its real last step is
  /// always computed and a generation of another length needs no reset.
  std::size_t steps = 0;

  step_info() = default;
  /// `index` and `branch` of any integer type; negative ones throw easycache::error.
  template <class Index, class Branch = std::size_t,
            std::enable_if_t<detail::is_index_v<Index> && detail::is_index_v<Branch>, int> = 0>
  step_info(Index index_in_schedule, double timestep_or_sigma = std::numeric_limits<double>::quiet_NaN(),
            Branch branch_index = 0, double schedule_progress = std::numeric_limits<double>::quiet_NaN(),
            bool extra = false)
      : index(detail::non_negative(index_in_schedule, "index")),
        timestep(timestep_or_sigma),
        branch(detail::non_negative(branch_index, "branch")),
        progress(schedule_progress),
        extra_evaluation(extra) {}

  /// This call with the schedule's length set (see `steps`).
  template <class Count, std::enable_if_t<detail::is_index_v<Count>, int> = 0>
  step_info& of(Count schedule_steps) {
    steps = detail::non_negative(schedule_steps, "steps");
    return *this;
  }
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
  /// The step does not follow its previous one (a failed or left-out step
  /// before it), or its anchor's evaluation failed: computed, nothing older reused.
  out_of_sequence,
  /// This branch's cached vector is older than the anchor's last computed step
  /// (the branch was left out of steps, e.g. guidance on part of the schedule): computed.
  stale_branch,
};
inline constexpr std::size_t reason_count = 11;

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
    case reason::out_of_sequence: return "out_of_sequence";
    case reason::stale_branch: return "stale_branch";
  }
  return "unknown";
}

}  // namespace easycache
