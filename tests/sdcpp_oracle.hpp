// The decision rules of stable-diffusion.cpp's `--cache-mode easycache`,
// restated in plain loops from our reading of src/runtime/easycache.hpp
// (EasyCacheState; src/easycache.hpp in older versions), its caller in
// src/stable-diffusion.cpp and src/runtime/sample-cache.cpp, and the flow
// denoiser's t_to_sigma. docs/variants.md lists every rule with the place it
// was read from. Written for clarity, not speed, and on purpose independent of
// include/easycache: the tests compare the controller against it.
//
// What the oracle is given, as the program sees it: per sampler step the
// 0-based step index (the sampler's 1-based step minus one; negative for an
// extra evaluation of a multi-evaluation sampler), the sigma, and one call per
// condition (cond, then uncond, then the image condition), each with its input
// and the output the model returns for it. The oracle says whether the program
// would have called the model (compute) or answered from its cache (skip).
//
// Arithmetic: the program's, exactly: float values, and every mean a single
// float accumulator summed in element order, then divided by the count.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace sdcpp_oracle {

/// The flow denoiser's shift of its time: alpha·t / (1 + (alpha − 1)·t).
inline float time_snr_shift(float alpha, float t) {
  if (alpha == 1.0f) return t;
  return alpha * t / (1 + (alpha - 1) * t);
}

/// DiscreteFlowDenoiser::t_to_sigma: the shifted time of (t + 1) / 1000.
inline float discrete_flow_t_to_sigma(float shift, float t) {
  t = t + 1;
  return time_snr_shift(shift, t / 1000.f);
}

/// EasyCacheState::percent_to_sigma over the flow denoiser: the float maximum
/// at or below 0 %, 0 at or above 100 %, else t_to_sigma((1 − percent)·999).
inline float discrete_flow_percent_to_sigma(float shift, float percent) {
  if (percent <= 0.0f) return std::numeric_limits<float>::max();
  if (percent >= 1.0f) return 0.0f;
  const float t = (1.0f - percent) * static_cast<float>(1000 - 1);
  return discrete_flow_t_to_sigma(shift, t);
}

/// The inverse of discrete_flow_percent_to_sigma on (0, 1), in double.
inline double discrete_flow_sigma_to_percent(double shift, double sigma) {
  const double shifted_back = sigma / (shift - (shift - 1) * sigma);  // (t + 1) / 1000
  const double t = shifted_back * 1000.0 - 1.0;
  return 1.0 - t / 999.0;
}

/// EasyCacheConfig and the sigmas init() derives from it.
struct settings {
  float reuse_threshold = 0.2f;
  float start_sigma = std::numeric_limits<float>::max();
  float end_sigma = 0.0f;
};

/// Settings over a flow denoiser with this shift and the program's percents.
inline settings flow_settings(float shift, float start_percent = 0.15f, float end_percent = 0.95f,
                              float threshold = 0.2f) {
  settings s;
  s.reuse_threshold = threshold;
  s.start_sigma = discrete_flow_percent_to_sigma(shift, start_percent);
  s.end_sigma = discrete_flow_percent_to_sigma(shift, end_percent);
  return s;
}

/// Why the program did what it did for a condition.
enum class why {
  extra_evaluation,  ///< negative step index: the cache takes no part
  outside_window,    ///< sigma > start sigma or sigma <= end sigma: computed, nothing kept
  follows_anchor,    ///< the anchor skipped this step and the condition has a difference
  not_anchor,        ///< another condition while the anchor computes: computed, difference kept
  no_history,        ///< the anchor lacks a previous input, output, difference, norm or rate
  size_changed,      ///< the input has another element count than the previous one
  degenerate,        ///< dx or the output norm is 0: computed without accumulating
  below_threshold,   ///< E < τ: skipped
  above_threshold,   ///< E >= τ: computed, E = 0
};

inline const char* to_string(why w) {
  switch (w) {
    case why::extra_evaluation:
      return "extra_evaluation";
    case why::outside_window:
      return "outside_window";
    case why::follows_anchor:
      return "follows_anchor";
    case why::not_anchor:
      return "not_anchor";
    case why::no_history:
      return "no_history";
    case why::size_changed:
      return "size_changed";
    case why::degenerate:
      return "degenerate";
    case why::below_threshold:
      return "below_threshold";
    case why::above_threshold:
      return "above_threshold";
  }
  return "unknown";
}

struct decision {
  bool skip = false;
  why reason = why::no_history;
};

class model {
 public:
  /// init(): a fresh state for one generation.
  explicit model(const settings& s) : settings_(s) {}

  /// One condition's call at step `step_index` (0-based; negative: an extra
  /// evaluation) and `sigma`. `out` is what the model returns for `x`; it is
  /// taken into the cache only when the call computes.
  decision evaluate(int step_index, float sigma, int cond, const std::vector<float>& x, const std::vector<float>& out) {
    if (step_index < 0) return {false, why::extra_evaluation};
    begin_step(step_index, sigma);
    const decision d = before_condition(cond, x);
    if (!d.skip) after_condition(cond, x, out);
    return d;
  }

  int total_steps_skipped() const { return total_steps_skipped_; }
  float rate() const { return relative_transformation_rate_; }
  bool has_rate() const { return has_relative_transformation_rate_; }
  float cumulative_change_rate() const { return cumulative_change_rate_; }
  bool has_difference(int cond) const {
    const auto it = differences_.find(cond);
    return it != differences_.end() && !it->second.empty();
  }

  /// The summary line logged after sampling (`total_steps`: sigmas.size() − 1).
  std::string summary(std::size_t total_steps) const { return summary_line(total_steps_skipped_, total_steps); }

  /// The program's summary line for this skip count.
  static std::string summary_line(int skipped, std::size_t total_steps) {
    char line[128];
    if (skipped > 0 && total_steps > 0) {
      if (skipped < static_cast<int>(total_steps)) {
        const double speedup =
            static_cast<double>(total_steps) / static_cast<double>(total_steps - static_cast<std::size_t>(skipped));
        std::snprintf(line, sizeof line, "EasyCache skipped %d/%zu steps (%.2fx estimated speedup)", skipped,
                      total_steps, speedup);
      } else {
        std::snprintf(line, sizeof line, "EasyCache skipped %d/%zu steps", skipped, total_steps);
      }
      return line;
    }
    return total_steps > 0 ? "EasyCache completed without skipping steps" : "";
  }

 private:
  void begin_step(int step_index, float sigma) {
    if (step_index == current_step_index_) return;
    current_step_index_ = step_index;
    skip_current_step_ = false;
    has_last_input_change_ = false;
    step_active_ = !(sigma > settings_.start_sigma) && sigma > settings_.end_sigma;
  }

  decision before_condition(int cond, const std::vector<float>& x) {
    if (!step_active_) return {false, why::outside_window};
    if (initial_step_) {
      anchor_ = cond;
      initial_step_ = false;
    }
    if (skip_current_step_) {
      if (has_difference(cond)) return {true, why::follows_anchor};
      return {false, why::not_anchor};
    }
    if (cond != anchor_) return {false, why::not_anchor};
    if (!has_prev_input_ || !has_prev_output_ || !has_difference(cond)) return {false, why::no_history};
    if (prev_input_.size() != x.size()) return {false, why::size_changed};
    last_input_change_ = mean_abs_difference(x, prev_input_);
    has_last_input_change_ = true;
    if (!has_output_prev_norm_ || !has_relative_transformation_rate_) return {false, why::no_history};
    if (!(last_input_change_ > 0.0f) || !(output_prev_norm_ > 0.0f)) return {false, why::degenerate};
    const float epsilon = (relative_transformation_rate_ * last_input_change_) / output_prev_norm_;
    cumulative_change_rate_ += epsilon;
    if (cumulative_change_rate_ < settings_.reuse_threshold) {
      skip_current_step_ = true;
      ++total_steps_skipped_;
      return {true, why::below_threshold};
    }
    cumulative_change_rate_ = 0.0f;
    return {false, why::above_threshold};
  }

  void after_condition(int cond, const std::vector<float>& x, const std::vector<float>& out) {
    if (!step_active_) return;
    std::vector<float>& difference = differences_[cond];
    if (x.empty() || x.size() != out.size()) {
      difference.clear();
    } else {
      difference.resize(out.size());
      for (std::size_t i = 0; i < out.size(); ++i) difference[i] = out[i] - x[i];
    }
    if (cond != anchor_) return;
    prev_input_ = x;
    has_prev_input_ = true;
    float output_change = 0.0f;
    if (has_prev_output_ && prev_output_.size() == out.size()) output_change = mean_abs_difference(out, prev_output_);
    prev_output_ = out;
    has_prev_output_ = true;
    float sum = 0.0f;
    for (float v : out) sum += std::fabs(v);
    output_prev_norm_ = out.empty() ? 0.0f : sum / static_cast<float>(out.size());
    has_output_prev_norm_ = output_prev_norm_ > 0.0f;
    if (has_last_input_change_ && last_input_change_ > 0.0f && output_change > 0.0f) {
      const float rate = output_change / last_input_change_;
      if (std::isfinite(rate)) {
        relative_transformation_rate_ = rate;
        has_relative_transformation_rate_ = true;
      }
    }
    cumulative_change_rate_ = 0.0f;
    has_last_input_change_ = false;
  }

  static float mean_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
    float sum = 0.0f;
    for (std::size_t i = 0; i < a.size(); ++i) sum += std::fabs(a[i] - b[i]);
    if (!a.empty()) sum /= static_cast<float>(a.size());
    return sum;
  }

  settings settings_;
  bool initial_step_ = true;
  bool skip_current_step_ = false;
  bool step_active_ = false;
  int anchor_ = -1;
  std::map<int, std::vector<float>> differences_;
  std::vector<float> prev_input_, prev_output_;
  float output_prev_norm_ = 0.0f;
  bool has_prev_input_ = false;
  bool has_prev_output_ = false;
  bool has_output_prev_norm_ = false;
  bool has_relative_transformation_rate_ = false;
  float relative_transformation_rate_ = 0.0f;
  float cumulative_change_rate_ = 0.0f;
  float last_input_change_ = 0.0f;
  bool has_last_input_change_ = false;
  int total_steps_skipped_ = 0;
  int current_step_index_ = -1;
};

}  // namespace sdcpp_oracle
