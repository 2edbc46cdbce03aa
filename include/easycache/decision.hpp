// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The vocabulary of a decision, shared by the policies (policy.hpp), the
// controller and its parts in detail/: what is known when a step begins, what
// the anchor branch measured, and the answer.
#pragma once

#include <cstddef>
#include <limits>

#include "types.hpp"

namespace easycache {

/// What is known when a step begins, before anything is measured.
struct step_context {
  std::size_t step = 0;   ///< 0-based index in the sampler's schedule
  std::size_t steps = 0;  ///< N: the schedule's length (step_info::steps, or config.steps)
  double progress = 0;    ///< position in [0, 1] (step_info::progress or step / steps)
  /// dx, k and ‖v‖ can be measured: two computed steps and a previous input exist.
  bool has_history = false;
  /// Index of the generation's first step (0, or where img2img starts); the
  /// warm-up counts from here.
  std::size_t first_step = 0;
  /// The call's sigma (step_info::timestep), for config::window_sigma; NaN when not given.
  double sigma = std::numeric_limits<double>::quiet_NaN();
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

}  // namespace easycache
