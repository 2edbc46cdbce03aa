// The decision rules of ComfyUI's EasyCache node, restated in plain loops from
// our reading of comfy_extras/nodes_easycache.py (the diffusion-model wrapper,
// the per-batch wrapper and EasyCacheHolder) and comfy/model_sampling.py.
// docs/variants.md lists every rule with the place it was read from. Written for
// clarity, not speed, and on purpose independent of include/easycache: the
// tests compare the controller against it.
//
// What the oracle is given, as the node sees it: per sampler evaluation the
// sigma, and the diffusion-model calls of that evaluation. A call batches one
// or more conditions (ComfyUI's uuids); its input and output hold one equal,
// contiguous slice per condition, each [channels][height][width] (row-major,
// width innermost). The output is what the model returns for the input: the
// oracle says whether the node would have called the model (compute) or
// answered from its cache (skip).
//
// Arithmetic: the node works on float32 tensors (when the model runs in
// float32), so every statistic, the rate k, ε and E are float here. A torch
// mean is a float reduction in a tree order; this oracle sums in double and
// rounds the mean to float, which is the correctly rounded value a tree
// reduction approximates to a few units in the last place.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace comfyui_oracle {

/// time_snr_shift of ComfyUI's flow models: shift·t / (1 + (shift − 1)·t).
inline double time_snr_shift(double shift, double t) {
  if (shift == 1.0) return t;
  return shift * t / (1 + (shift - 1) * t);
}

/// ModelSamplingDiscreteFlow::percent_to_sigma: 1 at or below 0 %, 0 at or
/// above 100 %, else the shifted time of 1 − percent.
inline double flow_percent_to_sigma(double shift, double percent) {
  if (percent <= 0.0) return 1.0;
  if (percent >= 1.0) return 0.0;
  return time_snr_shift(shift, 1.0 - percent);
}

/// The inverse of flow_percent_to_sigma on (0, 1): the percent whose sigma is `sigma`.
inline double flow_sigma_to_percent(double shift, double sigma) {
  const double t = sigma / (shift - (shift - 1) * sigma);
  return 1.0 - t;
}

/// The node's settings, as EasyCacheHolder holds them after prepare_timesteps.
struct settings {
  float reuse_threshold = 0.2f;
  /// percent_to_sigma(start_percent) and percent_to_sigma(end_percent) of the model.
  double start_sigma = 1.0;
  double end_sigma = 0.0;
  /// Fixed to 8 by the node.
  std::size_t subsample_factor = 8;
  /// The last two dimensions of each latent (subsampling takes every factor-th of each).
  std::size_t height = 1;
  std::size_t width = 1;
};

/// Settings of a flow model with this shift and the node's percents.
inline settings flow_settings(double shift, double start_percent = 0.15, double end_percent = 0.95,
                              float threshold = 0.2f) {
  settings s;
  s.reuse_threshold = threshold;
  s.start_sigma = flow_percent_to_sigma(shift, start_percent);
  s.end_sigma = flow_percent_to_sigma(shift, end_percent);
  return s;
}

/// One call of the diffusion model.
struct call {
  std::vector<int> conds;  ///< the conditions batched in it, in batch order
  std::vector<float> x;    ///< input: conds.size() equal slices
  std::vector<float> out;  ///< the model's output for x
};

/// Why the node did what it did for a call.
enum class why {
  past_end,         ///< sigma <= end sigma: the model is called, nothing is touched
  before_window,    ///< sigma > start sigma: the model is called, only the cached differences are kept
  follows_anchor,   ///< the anchor skipped this evaluation and every condition of the call has a difference
  not_anchor,       ///< a call without the anchor condition: computed, differences kept
  no_history,       ///< the anchor has no previous input, output norm or rate yet
  below_threshold,  ///< E < τ: skipped
  above_threshold,  ///< E >= τ (or no difference for a condition): computed, E = 0
};

inline const char* to_string(why w) {
  switch (w) {
    case why::past_end:
      return "past_end";
    case why::before_window:
      return "before_window";
    case why::follows_anchor:
      return "follows_anchor";
    case why::not_anchor:
      return "not_anchor";
    case why::no_history:
      return "no_history";
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
  explicit model(const settings& s) : settings_(s) {}

  /// A new sampler evaluation (the per-batch wrapper): the anchor has not decided yet.
  void begin_evaluation() { skip_current_step_ = false; }

  /// One diffusion-model call at `sigma`.
  decision evaluate(double sigma, const call& c) {
    // Sigmas are float32 tensors; the bounds are Python floats, which torch
    // compares in the tensor's type.
    const float sigma_f = static_cast<float>(sigma);
    if (!(sigma_f > static_cast<float>(settings_.end_sigma))) return {false, why::past_end};
    bool has_anchor = anchor_ && contains(c.conds, *anchor_);
    std::optional<float> input_change;
    why reason = why::not_anchor;
    if (sigma_f <= static_cast<float>(settings_.start_sigma)) {
      check_metadata(c);
      const bool can_apply = all_have_differences(c.conds);
      if (skip_current_step_ && can_apply) return skip(c, why::follows_anchor);
      if (initial_step_) {
        anchor_ = c.conds.front();
        has_anchor = true;
        initial_step_ = false;
      }
      if (has_anchor) {
        reason = why::no_history;
        if (x_prev_) input_change = mean_abs_difference(subsample(c.x, c), *x_prev_);
        if (output_prev_norm_ && rate_) {
          // The node takes these as present together with the previous input.
          const float epsilon = (*rate_ * *input_change) / *output_prev_norm_;
          cumulative_ += epsilon;
          if (cumulative_ < settings_.reuse_threshold && can_apply) {
            skip_current_step_ = true;
            return skip(c, why::below_threshold);
          }
          cumulative_ = 0.0f;
          reason = why::above_threshold;
        }
      }
    } else {
      reason = why::before_window;
    }
    // The model runs.
    if (has_anchor && output_prev_norm_) {
      const float output_change = mean_abs_difference(subsample(c.out, c), *output_prev_);
      if (input_change) rate_ = output_change / *input_change;
    }
    const std::size_t slice = c.x.size() / c.conds.size();
    for (std::size_t i = 0; i < c.conds.size(); ++i) {
      std::vector<float> difference(slice);
      for (std::size_t e = 0; e < slice; ++e) difference[e] = c.out[i * slice + e] - c.x[i * slice + e];
      differences_[c.conds[i]] = difference;
    }
    if (has_anchor) {
      x_prev_ = subsample(c.x, c);
      output_prev_ = subsample(c.out, c);
      output_prev_norm_ = mean_abs(c.out);  // the whole call's output, every element
    }
    return {false, reason};
  }

  std::size_t total_steps_skipped() const { return total_steps_skipped_; }
  std::optional<float> rate() const { return rate_; }
  std::optional<int> anchor() const { return anchor_; }
  float cumulative_change_rate() const { return cumulative_; }
  bool has_difference(int cond) const { return differences_.count(cond) != 0; }

  /// The summary line the node logs after sampling (`total_steps`: len(sigmas) − 1).
  std::string summary(std::size_t total_steps) const { return summary_line(total_steps_skipped_, total_steps); }

  /// The node's summary line for this skip count.
  static std::string summary_line(std::size_t total_steps_skipped, std::size_t total_steps) {
    const double skipped = static_cast<double>(total_steps_skipped);
    const double steps = static_cast<double>(total_steps);
    const double speedup = steps == skipped ? 1.0 : steps / (steps - skipped);
    char line[128];
    std::snprintf(line, sizeof line, "EasyCache - skipped %zu/%zu steps (%.2fx speedup).", total_steps_skipped,
                  total_steps, speedup);
    return line;
  }

 private:
  static bool contains(const std::vector<int>& conds, int cond) {
    for (int c : conds)
      if (c == cond) return true;
    return false;
  }

  bool all_have_differences(const std::vector<int>& conds) const {
    for (int c : conds)
      if (!has_difference(c)) return false;
    return true;
  }

  decision skip(const call& c, why reason) {
    if (anchor_ && contains(c.conds, *anchor_)) ++total_steps_skipped_;
    return {true, reason};
  }

  // The anchor's batch slice, every factor-th row and column of each plane from 0.
  std::vector<float> subsample(const std::vector<float>& t, const call& c) const {
    const std::size_t slice = t.size() / c.conds.size();
    std::size_t index = 0;
    while (c.conds[index] != *anchor_) ++index;
    const std::size_t h = settings_.height, w = settings_.width;
    const std::size_t f = std::max<std::size_t>(settings_.subsample_factor, 1);
    std::vector<float> picked;
    for (std::size_t plane = 0; plane < slice / (h * w); ++plane)
      for (std::size_t row = 0; row < h; row += f)
        for (std::size_t column = 0; column < w; column += f)
          picked.push_back(t[index * slice + (plane * h + row) * w + column]);
    return picked;
  }

  static float mean_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
    double sum = 0;
    for (std::size_t i = 0; i < a.size(); ++i) sum += std::abs(static_cast<double>(a[i] - b[i]));
    return static_cast<float>(sum / static_cast<double>(a.size()));
  }

  static float mean_abs(const std::vector<float>& a) {
    double sum = 0;
    for (float v : a) sum += std::abs(static_cast<double>(v));
    return static_cast<float>(sum / static_cast<double>(a.size()));
  }

  // A change of the per-condition shape mid-run resets the state, and the reset
  // leaves the rate at 0 where a fresh holder has none.
  void check_metadata(const call& c) {
    const std::size_t shape = c.x.size() / c.conds.size();
    if (!shape_) {
      shape_ = shape;
    } else if (*shape_ != shape) {
      reset();
    }
  }

  void reset() {
    rate_ = 0.0f;
    cumulative_ = 0.0f;
    initial_step_ = true;
    skip_current_step_ = false;
    anchor_.reset();
    x_prev_.reset();
    output_prev_.reset();
    output_prev_norm_.reset();
    differences_.clear();
    total_steps_skipped_ = 0;
    shape_.reset();
  }

  settings settings_;
  std::optional<float> rate_;
  float cumulative_ = 0.0f;
  bool initial_step_ = true;
  bool skip_current_step_ = false;
  std::optional<int> anchor_;
  std::optional<std::vector<float>> x_prev_, output_prev_;
  std::optional<float> output_prev_norm_;
  std::map<int, std::vector<float>> differences_;
  std::size_t total_steps_skipped_ = 0;
  std::optional<std::size_t> shape_;
};

}  // namespace comfyui_oracle
