// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>

#include "error.hpp"
#include "sampling.hpp"
#include "detail/format.hpp"
#include "detail/float32.hpp"

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

/// What the accumulated error E estimates (config::error_estimate).
enum class error_estimate {
  /// ε = k·dx/‖v‖ each step: the drift of the output since the last computed
  /// step, which is the error of reusing it as it was (the reference; default).
  output_drift,
  /// The error of the predictor in use. For linear_in_timestep, whose
  /// first-order term follows the drift, what is left grows with the distance
  /// from the last computed step: each step adds ε·n, n its steps since that
  /// compute (so E grows as n²·ε, as the error of a linear extrapolation does,
  /// and τ is in those units). For the other predictors the same as output_drift.
  predictor_residual,
};

/// The active caching window as fractions of the schedule (ComfyUI style).
/// A step whose position p (step_info::progress, or index / steps when not given)
/// satisfies start <= p < end may be skipped; every other step is computed.
struct schedule_window {
  double start = 0.15;
  double end = 0.95;
};

/// A percent-to-sigma map for a window compared in sigma (config::window_sigma).
enum class sigma_map {
  /// ComfyUI's flow models (ModelSamplingDiscreteFlow::percent_to_sigma): 1 at
  /// 0 % or below, 0 at 100 % or above, else the shifted time of 1 − percent,
  /// shift·t / (1 + (shift − 1)·t), in double.
  comfyui_flow,
  /// stable-diffusion.cpp's EasyCache over its flow denoiser (percent_to_sigma,
  /// DiscreteFlowDenoiser::t_to_sigma): the float maximum at 0 % or below, 0 at
  /// 100 % or above, else the shifted time of ((1 − percent)·999 + 1) / 1000, in
  /// float. Not ComfyUI's bounds: at shift 1, 15 % is 0.85015, not 0.85.
  stable_diffusion_cpp_flow,
  /// start_sigma and end_sigma as given: another model's own map (ComfyUI's
  /// epsilon models interpolate their sigma table; read the bounds off it).
  given,
};

/// ComfyUI's sigma of `percent` for a flow model of this shift (sigma_map::comfyui_flow).
inline double comfyui_flow_sigma(double shift, double percent) noexcept {
  if (percent <= 0.0) return 1.0;
  if (percent >= 1.0) return 0.0;
  const double t = 1.0 - percent;
  if (shift == 1.0) return t;
  return shift * t / (1 + (shift - 1) * t);
}

/// stable-diffusion.cpp's sigma of `percent` over its flow denoiser of this
/// shift (sigma_map::stable_diffusion_cpp_flow): float arithmetic, as it computes it.
inline double stable_diffusion_cpp_flow_sigma(double shift, double percent) noexcept {
  const float p = detail::to_float(percent), alpha = detail::to_float(shift);
  if (p <= 0.0f) return static_cast<double>(std::numeric_limits<float>::max());
  if (p >= 1.0f) return 0.0;
  // One rounding per operation, as the peer's statements make them.
  float t = (1.0f - p) * 999.0f;
  t = t + 1.0f;
  t = t / 1000.0f;
  if (alpha == 1.0f) return static_cast<double>(t);
  return static_cast<double>(alpha * t / (1 + (alpha - 1) * t));
}

/// The window in sigma, as ComfyUI's node and stable-diffusion.cpp place it: a
/// call whose sigma σ (step_info::timestep) satisfies end < σ <= start, both
/// sides rounded to float32 as the peers compare them, may be skipped. The
/// bounds come from config::window's percents through `map`.
struct sigma_window {
  sigma_map map = sigma_map::comfyui_flow;
  /// The flow model's shift, for the two flow maps (1: the percents' own sigmas, 3: SD3, ...).
  double shift = 1.0;
  /// sigma_map::given only: the bounds themselves (start >= end; +∞ is allowed).
  double start_sigma = std::numeric_limits<double>::quiet_NaN();
  double end_sigma = std::numeric_limits<double>::quiet_NaN();

  /// The sigma of a window percent by this map.
  double sigma_of(double percent, bool start) const noexcept {
    switch (map) {
      case sigma_map::comfyui_flow: return comfyui_flow_sigma(shift, percent);
      case sigma_map::stable_diffusion_cpp_flow: return stable_diffusion_cpp_flow_sigma(shift, percent);
      case sigma_map::given: break;
    }
    return start ? start_sigma : end_sigma;
  }
};

/// What the window variant keeps from the steps it computes outside the window.
enum class outside_window_history {
  /// Everything, as inside: x_last, Δ, ‖v‖ and k carry into the window, which
  /// may skip at once (the default).
  keep,
  /// Before the window, each branch's cached vector Δ only; past its end,
  /// nothing (ComfyUI): the window opens with no previous input, norm or k, so
  /// its first two steps are computed.
  cached_vectors_only,
  /// Nothing (stable-diffusion.cpp): the window opens with no history at all.
  none,
};

/// Which elements the output norm ‖v‖ is a mean over.
enum class output_norm_scope {
  /// The elements the other statistics visit (sampling, batched_conditions): the default.
  sampled,
  /// Every element of the anchor's whole output, every batched condition
  /// included, whatever `sampling` says (ComfyUI; stable-diffusion.cpp, which samples nothing).
  every_element,
};

/// When the statistics are too degenerate to decide on.
enum class statistics_guard {
  /// dx, k or ‖v‖ not finite, or ‖v‖ = 0 (the default; ComfyUI takes the same
  /// decisions: its NaN or infinite ε computes). dx = 0 gives ε = 0.
  finite,
  /// Also dx = 0 (stable-diffusion.cpp decides only on dx > 0 and ‖v‖ > 0).
  positive_input_change,
};

/// When a computed step replaces the transformation rate k.
enum class transformation_rate_update {
  /// Every computed step with a measured input change: a zero input change
  /// makes k undefined (the next decision computes), a zero output change
  /// makes k 0 (the default; ComfyUI's decisions alike).
  every_measured_compute,
  /// Only when the input change, the output change and k are > 0 and finite;
  /// otherwise the previous k stays (stable-diffusion.cpp).
  positive_finite_only,
};

/// The arithmetic of the decision.
enum class decision_arithmetic {
  /// Means, k, ε and E in double (the default).
  float64,
  /// As ComfyUI on a float32 model: each mean rounded to float32 (its sums in
  /// double), then k = change / dx, ε = (k·dx)/‖v‖, E += ε and E < τ in
  /// float32; k's output change measured from a kept copy of the last output.
  float32,
  /// As stable-diffusion.cpp: float32, and each sum one accumulator of the
  /// element type in element order (which loses precision on long latents, as
  /// there).
  float32_sequential,
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
  /// Beyond the reference: what E estimates. Default: the output's drift (the
  /// reference's ε). error_estimate::predictor_residual matches it to the
  /// predictor (docs/quality.md measures both).
  error_estimate estimate = error_estimate::output_drift;

  /// Peer variant: the window compared in sigma (see sigma_window), its bounds
  /// mapped from `window`'s percents, which it needs. A call that gives no
  /// sigma (step_info::timestep NaN) is placed by `window` on its progress, the
  /// same test for a schedule uniform in the model's time. Default: none.
  std::optional<sigma_window> window_sigma;
  /// Peer variant: what the window keeps from steps computed outside it.
  /// Default: everything.
  outside_window_history history_outside_window = outside_window_history::keep;
  /// Peer variant: branch 0's tensor holds this many equal slices along its
  /// first dimension (conditions batched in one call, cond first, as ComfyUI
  /// batches them); dx and k's output change are measured on the first slice
  /// only, as ComfyUI measures its anchor condition. Default 1: the whole tensor.
  std::size_t batched_conditions = 1;
  /// Peer variant: which elements ‖v‖ is a mean over. Default: the sampled ones.
  output_norm_scope output_norm = output_norm_scope::sampled;
  /// Peer variant: when the statistics are too degenerate to decide on.
  /// Default: when not finite, or ‖v‖ = 0.
  statistics_guard guard = statistics_guard::finite;
  /// Peer variant: when k is replaced. Default: on every measured compute.
  transformation_rate_update rate_update = transformation_rate_update::every_measured_compute;
  /// Peer variant: the decision's arithmetic. Default: double.
  decision_arithmetic arithmetic = decision_arithmetic::float64;

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
  /// easycache's quality mode, beyond the reference (docs/quality.md measures
  /// it against fewer steps, a static cache and a TaylorSeer-style cache at
  /// equal calls): the linear_in_timestep predictor (step_info::timestep on
  /// every call), error_estimate::predictor_residual, a warm-up of 10 % of the
  /// steps (5 of 50; see warmup_for), `branches` calls a step. τ 0.05; on the
  /// demo's model 0.025 gave 2×, 0.07 3× and 0.16 4× fewer calls: set
  /// threshold for the speed you need.
  static config quality(std::size_t steps = 50, std::size_t branches = 2) {
    config c;
    c.threshold = 0.05;
    c.warmup_steps = warmup_for(steps, 5);
    c.steps = steps;
    c.branches = branches;
    c.predictor = skip_predictor::linear_in_timestep;
    c.estimate = error_estimate::predictor_residual;
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
  /// ComfyUI's EasyCache node (comfy_extras/nodes_easycache.py), its decisions
  /// rule by rule (docs/variants.md): τ 0.2, dx since the last compute, the
  /// window 15 %–95 % mapped to sigma by ComfyUI's flow map of `flow_shift`
  /// (pass each call's sigma in step_info::timestep), only the cached vectors
  /// kept before the window, dx and k on every 8th row and column of the
  /// latent's height x width (pass them to enable the 2-D pattern), ‖v‖ over
  /// the whole output, float32 decisions. For cond and uncond batched in one
  /// call, set batched_conditions = 2. Needs a host backend (see README).
  static config comfyui(std::size_t steps = 50, std::size_t branches = 1, std::size_t height = 0,
                        std::size_t width = 0, double flow_shift = 1.0) {
    config c;
    c.threshold = 0.2;
    c.warmup_steps = 0;
    c.steps = steps;
    c.branches = branches;
    c.input_change = input_change_reference::last_compute;
    c.window = schedule_window{};
    c.window_sigma = sigma_window{sigma_map::comfyui_flow, flow_shift};
    c.sampling = statistics_sampling{8, height, width};
    c.history_outside_window = outside_window_history::cached_vectors_only;
    c.output_norm = output_norm_scope::every_element;
    c.arithmetic = decision_arithmetic::float32;
    return c;
  }

  /// stable-diffusion.cpp's `--cache-mode easycache` (src/runtime/easycache.hpp),
  /// its decisions rule by rule (docs/variants.md): τ 0.2, dx since the last
  /// compute, the window 15 %–95 % mapped to sigma by its flow denoiser's map
  /// of `flow_shift` (pass each call's sigma in step_info::timestep), nothing
  /// kept outside the window, every element, decisions only on dx > 0, k kept
  /// unless the new one is positive and finite, float sums in element order.
  /// One branch per condition (cond, uncond, image condition, in its order).
  /// Needs a host backend (see README).
  static config stable_diffusion_cpp(std::size_t steps = 50, std::size_t branches = 1, double flow_shift = 1.0) {
    config c;
    c.threshold = 0.2;
    c.warmup_steps = 0;
    c.steps = steps;
    c.branches = branches;
    c.input_change = input_change_reference::last_compute;
    c.window = schedule_window{};
    c.window_sigma = sigma_window{sigma_map::stable_diffusion_cpp_flow, flow_shift};
    c.history_outside_window = outside_window_history::none;
    c.output_norm = output_norm_scope::every_element;
    c.guard = statistics_guard::positive_input_change;
    c.rate_update = transformation_rate_update::positive_finite_only;
    c.arithmetic = decision_arithmetic::float32_sequential;
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
    if (window_sigma) {
      if (!window)
        throw error(detail::message("window_sigma needs window: the percents it maps to sigma (and places calls "
                                    "without a sigma by)"));
      if (window_sigma->map == sigma_map::given) {
        const double start = window_sigma->start_sigma, end = window_sigma->end_sigma;
        if (!(start >= end))
          throw error(detail::message("window_sigma must satisfy start_sigma >= end_sigma, neither NaN (got start_sigma ",
                                      start, ", end_sigma ", end, ")"));
      } else if (!(window_sigma->shift > 0) || !std::isfinite(window_sigma->shift)) {
        throw error(detail::message("window_sigma.shift must be finite and > 0 (got ", window_sigma->shift, ")"));
      }
    }
    if (batched_conditions == 0) throw error(detail::message("batched_conditions must be >= 1 (got 0)"));
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
