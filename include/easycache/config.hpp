// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>

#include "error.hpp"
#include "detail/format.hpp"

namespace easycache {

/// Where the input change `dx` of a step is measured from.
enum class input_change_reference {
  /// ‖x_t − x_{t−1}‖: consecutive steps, as the reference implementation does (default).
  previous_step,
  /// ‖x_t − x_at_last_compute‖: distance since the last computed step, as ComfyUI's
  /// EasyCache node and stable-diffusion.cpp do. E grows faster; their τ is about 0.2.
  last_compute,
};

/// What a skipped step returns.
enum class skip_predictor {
  /// x_t + Δ of the last computed step: the reference (default).
  constant,
  /// x_t + Δ extrapolated linearly in the timestep from the last two computed
  /// steps of the branch: Δ_a + (t − t_a)·(Δ_a − Δ_b)/(t_a − t_b). Needs
  /// step_info::timestep on every call, and one more buffer per branch.
  linear_in_timestep,
  /// The output v of the branch's last computed step itself (x_a + Δ_a), as a
  /// plain output cache does. For flow-matching models, whose velocity estimate
  /// v = (x − x̂0)/σ holds still along a straight path, this drops the error
  /// x_t − x_a that x_t + Δ_a adds. Each branch other than the first keeps its
  /// last computed input too (one more buffer and one copy per computed step).
  last_output,
};

/// The active caching window as fractions of the schedule (ComfyUI style).
/// A step whose position p (step_info::progress, or index / steps when not given)
/// satisfies start <= p < end may be skipped; every other step is computed.
struct schedule_window {
  double start = 0.15;
  double end = 0.95;
};

/// Which elements the statistics (the norms) are computed over.
///
/// stride 1 uses every element (the reference). With stride s > 1 and a layout of
/// [..., height, width] (row-major, width innermost), only elements whose row and
/// column are multiples of s take part, like ComfyUI's 8× spatial subsampling.
/// With height and width left 0 the tensor is seen as one long row: every s-th
/// element. The cached vectors themselves are always kept whole.
struct statistics_sampling {
  std::size_t stride = 1;
  std::size_t height = 0;
  std::size_t width = 0;
};

/// Configuration of a controller. Validated by `validate()` whenever a controller
/// takes it; defaults are the reference's Wan2.1 settings for one branch.
struct config {
  /// τ: the tolerance on the accumulated predicted error E. 0 computes every
  /// step; +infinity skips every step that the forced rules allow.
  double threshold = 0.05;
  /// R: the first R steps of each generation are always computed (counted from
  /// the generation's first step, which img2img may put mid-schedule).
  std::size_t warmup_steps = 10;
  /// N: steps in the sampler's schedule, unless step_info::steps says otherwise
  /// for a generation. The last step (N − 1) is always computed.
  std::size_t steps = 50;
  /// Denoiser calls per step (guidance branches). Branch 0 decides for all.
  std::size_t branches = 1;

  /// Variant: where dx is measured from. Default: the reference's previous step.
  input_change_reference input_change = input_change_reference::previous_step;
  /// Variant: a start/end window in place of the warm-up and last-step rules.
  /// Default: none (warm-up steps and the last step are forced).
  std::optional<schedule_window> window;
  /// Variant: subsample the statistics. Default: every element.
  statistics_sampling sampling;
  /// Beyond the reference: what a skipped step returns. Default: the constant
  /// cached vector.
  skip_predictor predictor = skip_predictor::constant;

  /// Keep a per-step trace (reserved once per generation: no allocation per step).
  bool record_trace = true;
  /// Also measure dx on forced steps, so the trace shows dx and k on every step.
  /// Costs one extra read of the input and the previous input on those steps.
  bool measure_forced_steps = false;

  /// The warm-up a preset uses for a schedule of `steps` steps: the reference's
  /// `reference_warmup` (tuned for 50 steps) at 50 steps or more, and the same
  /// share of a shorter schedule, rounded up, at least 1: 10 of 50 gives 2 of
  /// 8 and 1 of 4. Never more than `steps`, so every preset is valid for any
  /// steps >= 1 (few-step distilled models included).
  static std::size_t warmup_for(std::size_t steps, std::size_t reference_warmup,
                                std::size_t reference_steps = 50) noexcept {
    if (steps >= reference_steps || reference_steps == 0) return std::min(reference_warmup, steps);
    const std::size_t scaled = (reference_warmup * steps + reference_steps - 1) / reference_steps;
    return std::min(steps, std::max<std::size_t>(1, scaled));
  }

  /// Reference settings for Wan2.1 T2V: τ 0.05, R 10 (at 50 steps; see
  /// warmup_for), two calls a step (cond, uncond).
  static config wan21(std::size_t steps = 50) {
    config c;
    c.threshold = 0.05;
    c.warmup_steps = warmup_for(steps, 10);
    c.steps = steps;
    c.branches = 2;
    return c;
  }
  /// Reference settings for Wan2.1 I2V: as wan21() with 40 steps (R 10 at 40 steps or more).
  static config wan21_i2v(std::size_t steps = 40) {
    config c = wan21(steps);
    c.warmup_steps = warmup_for(steps, 10, 40);  // the reference's I2V runs R 10 at 40 steps
    return c;
  }
  /// Reference settings for HunyuanVideo: τ 0.025, R 5 (at 50 steps; see
  /// warmup_for), one (batched) call a step.
  static config hunyuan_video(std::size_t steps = 50) {
    config c;
    c.threshold = 0.025;
    c.warmup_steps = warmup_for(steps, 5);
    c.steps = steps;
    c.branches = 1;
    return c;
  }
  /// The ComfyUI / stable-diffusion.cpp variant: τ 0.2, dx since the last compute,
  /// window 0.15–0.95 of the schedule, statistics on every 8th row and column
  /// (pass the latent's height and width to enable the 2-D pattern).
  static config comfyui(std::size_t steps = 50, std::size_t branches = 1, std::size_t height = 0,
                        std::size_t width = 0) {
    config c;
    c.threshold = 0.2;
    c.warmup_steps = 0;
    c.steps = steps;
    c.branches = branches;
    c.input_change = input_change_reference::last_compute;
    c.window = schedule_window{};
    c.sampling = statistics_sampling{8, height, width};
    return c;
  }

  /// Throws easycache::error naming the first invalid field; changes nothing.
  void validate() const {
    if (std::isnan(threshold) || threshold < 0)
      throw error(detail::message("threshold must be >= 0 (got ", threshold, ")"));
    if (steps == 0) throw error(detail::message("steps must be >= 1 (got 0)"));
    if (warmup_steps > steps)
      throw error(detail::message("warmup_steps (", warmup_steps, ") must not exceed steps (", steps, ")"));
    if (branches == 0) throw error(detail::message("branches must be >= 1 (got 0)"));
    if (window) {
      const auto [start, end] = *window;
      if (!(start >= 0 && start <= 1) || !(end >= 0 && end <= 1) || !(start <= end))
        throw error(detail::message("window must satisfy 0 <= start <= end <= 1 (got start ", start,
                                    ", end ", end, ")"));
    }
    if (sampling.stride == 0) throw error(detail::message("sampling.stride must be >= 1 (got 0)"));
    if ((sampling.height == 0) != (sampling.width == 0))
      throw error(detail::message("sampling.height and sampling.width must both be set or both be 0 (got ",
                                  sampling.height, " and ", sampling.width, ")"));
    if (sampling.height != 0 && sampling.height > std::numeric_limits<std::size_t>::max() / sampling.width)
      throw error(detail::message("sampling.height x sampling.width overflows (got ", sampling.height, " and ",
                                  sampling.width, ")"));
  }
};

}  // namespace easycache
