// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Policies: the decision rule alone, separate from tensors, so that it can be
// unit-tested with plain numbers and swapped for another rule.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "decision.hpp"
#include "error.hpp"
#include "trace.hpp"
#include "types.hpp"
#include "detail/float32.hpp"
#include "detail/format.hpp"
#include "detail/policy_support.hpp"
#include "detail/window.hpp"

namespace easycache {

/// Forced-compute rules shared by the policies: the warm-up steps and the last
/// step, or, with a window, the steps outside it (on their progress, or on
/// their sigma with window_sigma).
struct forced_steps {
  std::size_t warmup_steps = 0;
  std::optional<schedule_window> window;
  std::optional<sigma_window> window_sigma;

  forced_steps() = default;
  explicit forced_steps(const config& cfg)
      : warmup_steps(cfg.warmup_steps), window(cfg.window), window_sigma(cfg.window_sigma) {}

  /// The forced verdict for a step, if any.
  std::optional<verdict> operator()(const step_context& ctx) const {
    if (window) {
      if (detail::position_in_window(*window, window_sigma, ctx.progress, ctx.sigma) !=
          detail::window_position::inside)
        return verdict{action::compute, reason::outside_window};
      return std::nullopt;
    }
    if (ctx.step - ctx.first_step < warmup_steps) return verdict{action::compute, reason::warmup};
    if (ctx.step + 1 >= ctx.steps) return verdict{action::compute, reason::last_step};
    return std::nullopt;
  }
};


/// The reference EasyCache rule (algorithm.md), including its window variant.
///
/// A policy has three phases so that the controller can keep its strong
/// exception guarantee: plan() and decide() are const; commit() updates the
/// state only once the step has succeeded.
///  - plan(): a verdict that needs no statistics (forced steps), or nullopt to
///    ask the controller to measure the anchor branch;
///  - decide(): the verdict from the measured statistics;
///  - commit(ctx, verdict): the step was carried out as decided. A policy that
///    learns from the measurements declares commit(ctx, verdict, measured)
///    instead, with `measured` the measurement decide() was given (nullopt
///    when the verdict was planned, or the statistics were degenerate).
class easycache_policy {
 public:
  easycache_policy() = default;
  explicit easycache_policy(const config& cfg)
      : threshold_(cfg.threshold),
        forced_(cfg),
        float32_(cfg.arithmetic != decision_arithmetic::float64),
        residual_(cfg.estimate == error_estimate::predictor_residual &&
                  cfg.predictor == skip_predictor::linear_in_timestep) {}

  std::optional<verdict> plan(const step_context& ctx) const {
    if (auto forced = forced_(ctx)) return forced;
    if (!ctx.has_history) return verdict{action::compute, reason::no_history};
    return std::nullopt;
  }

  verdict decide(const step_context& ctx, const step_measurement& m) const {
    verdict v;
    bool below = false;
    if (float32_) {
      // The peers' order of operations, each rounded to float32 (config::arithmetic).
      const float rate = detail::to_float(m.transformation_rate), input_change = detail::to_float(m.input_change);
      float epsilon = (rate * input_change) / detail::to_float(m.output_norm);
      if (residual_) epsilon *= static_cast<float>(ctx.step - std::min(ctx.step, last_compute_step_));
      const float accumulated = detail::to_float(accumulated_error_) + epsilon;
      v.predicted_error = static_cast<double>(epsilon);
      v.accumulated_error = static_cast<double>(accumulated);
      below = accumulated < detail::to_float(threshold_);
    } else {
      v.predicted_error = m.transformation_rate * (m.input_change / m.output_norm);
      // error_estimate::predictor_residual: the step's drift weighted by its
      // distance from the last computed step (the first step after it weighs 1).
      if (residual_) v.predicted_error *= static_cast<double>(ctx.step - std::min(ctx.step, last_compute_step_));
      v.accumulated_error = accumulated_error_ + v.predicted_error;
      below = v.accumulated_error < threshold_;
    }
    if (below) {
      v.action = action::skip;
      v.reason = reason::below_threshold;
    } else {
      v.action = action::compute;
      v.reason = reason::above_threshold;
    }
    return v;
  }

  void commit(const step_context& ctx, const verdict& v) noexcept {
    // A computed step (forced or not) restarts the accumulation; its ε is dropped.
    accumulated_error_ = v.action == action::skip ? v.accumulated_error : 0.0;
    if (v.action == action::compute) last_compute_step_ = ctx.step;
  }

  void reset() noexcept {
    accumulated_error_ = 0.0;
    last_compute_step_ = 0;
  }

  /// E after the last committed step.
  double accumulated_error() const noexcept { return accumulated_error_; }

 private:
  double threshold_ = 0.05;
  forced_steps forced_{config{}};
  bool float32_ = false;
  bool residual_ = false;  // error_estimate::predictor_residual with the linear predictor
  double accumulated_error_ = 0.0;
  std::size_t last_compute_step_ = 0;
};

/// Baseline: compute the forced steps and every `interval`-th step after the
/// warm-up; skip the others without measuring anything ("static" cache).
class fixed_interval_policy {
 public:
  explicit fixed_interval_policy(std::size_t interval = 2) : interval_(interval) {
    if (interval == 0) throw error(detail::message("fixed_interval_policy: interval must be >= 1 (got 0)"));
  }

  void configure(const config& cfg) { forced_ = forced_steps(cfg); }

  std::optional<verdict> plan(const step_context& ctx) const {
    if (auto forced = forced_(ctx)) return forced;
    const std::size_t position = ctx.step - ctx.first_step;
    const std::size_t since = position - std::min(position, forced_.warmup_steps);
    return verdict{since % interval_ == 0 ? action::compute : action::skip, reason::policy};
  }
  verdict decide(const step_context&, const step_measurement&) const { return verdict{action::compute, reason::policy}; }
  void commit(const step_context&, const verdict&) noexcept {}
  void reset() noexcept {}

  std::size_t interval() const noexcept { return interval_; }

 private:
  std::size_t interval_;
  forced_steps forced_;
};

/// An explicit mask: step t is computed when compute[t] is true, skipped
/// otherwise (a skip still needs a cached vector: the controller computes
/// until it has one). Replays a recorded run with from_trace(), or gives a
/// static cache with evenly_spaced().
class step_mask_policy {
 public:
  step_mask_policy() = default;
  explicit step_mask_policy(std::vector<bool> compute) : compute_(std::move(compute)) {}

  /// The anchor decisions of a recorded trace (one generation).
  static step_mask_policy from_trace(const std::vector<step_record>& trace) {
    std::vector<bool> compute;
    for (const step_record& r : trace) {
      if (r.branch != 0 || r.reason == reason::extra_evaluation) continue;
      if (r.step != compute.size())
        throw error(detail::message("step_mask_policy::from_trace: trace has step ", r.step, " where step ",
                                    compute.size(), " was expected (one whole generation is needed)"));
      compute.push_back(r.action == action::compute);
    }
    return step_mask_policy(std::move(compute));
  }

  /// `calls` computed steps out of `steps`: the first `warmup_steps` and the
  /// last one, the rest spread evenly over the steps in between.
  static step_mask_policy evenly_spaced(std::size_t steps, std::size_t warmup_steps, std::size_t calls) {
    // min(steps − 1, R) + 1 is min(steps, R + 1) without R + 1, which wraps for R = SIZE_MAX.
    if (steps == 0 || calls > steps || calls < std::min(steps - 1, warmup_steps) + 1)
      throw error(detail::message("step_mask_policy::evenly_spaced: ", calls, " calls cannot cover ", steps,
                                  " steps with ", warmup_steps, " warm-up steps and the last step"));
    std::vector<bool> compute(steps, false);
    for (std::size_t t = 0; t < std::min(warmup_steps, steps); ++t) compute[t] = true;
    compute[steps - 1] = true;
    const std::size_t middle_begin = std::min(warmup_steps, steps - 1), middle = steps - 1 - middle_begin;
    const std::size_t spread = calls - (middle_begin + 1);
    for (std::size_t j = 0; j < spread; ++j) compute[middle_begin + (j * middle) / spread] = true;
    return step_mask_policy(std::move(compute));
  }

  void configure(const config& cfg) {
    if (compute_.size() != cfg.steps)
      throw error(detail::message("step_mask_policy has ", compute_.size(), " entries for ", cfg.steps, " steps"));
  }

  std::optional<verdict> plan(const step_context& ctx) const {
    if (ctx.steps != compute_.size())
      throw error(detail::message("step_mask_policy has ", compute_.size(), " entries for a schedule of ", ctx.steps,
                                  " steps"));
    const bool compute = ctx.step >= compute_.size() || compute_[ctx.step];
    return verdict{compute ? action::compute : action::skip, reason::policy};
  }
  verdict decide(const step_context&, const step_measurement&) const { return verdict{action::compute, reason::policy}; }
  void commit(const step_context&, const verdict&) noexcept {}
  void reset() noexcept {}

  const std::vector<bool>& mask() const noexcept { return compute_; }

 private:
  std::vector<bool> compute_;
};

/// A compute budget in place of τ: a number of computed steps per generation
/// (of the anchor branch; every branch follows it), or a speedup in calls.
struct budget {
  /// Exactly `n` computed steps per generation.
  static budget calls(std::size_t n) { return budget{n, 0.0}; }
  /// About `s` times fewer calls: ceil(steps / s) computed steps.
  static budget speedup(double s) {
    if (!(s >= 1.0) || !std::isfinite(s))
      throw error(detail::message("budget::speedup must be finite and >= 1 (got ", s, ")"));
    return budget{0, s};
  }
  std::size_t computed_steps = 0;
  double speedup_in_calls = 0.0;

  std::size_t calls_for(std::size_t steps) const {
    if (speedup_in_calls > 0)
      return static_cast<std::size_t>(std::ceil(static_cast<double>(steps) / speedup_in_calls - 1e-9));
    return computed_steps;
  }
};

/// The smallest τ that, on a recorded profile of predicted errors (one per
/// step; NaN where a step was not measured, which is then computed), makes the
/// reference rule compute at most `calls` steps under the `forced` rules; NaN
/// when no τ reaches it. A pure function of its arguments: `planned_free_from`
/// (profile.size() + 1 entries) receives, for each step, the free (non-forced)
/// computes that τ plans from that step on.
inline double calibrated_threshold(const std::vector<double>& profile, const forced_steps& forced, std::size_t calls,
                                   std::vector<std::size_t>& planned_free_from) noexcept {
  const std::size_t steps = profile.size();
  // Simulates the reference rule with `threshold` on the profile; with `plan`,
  // also records the free computes planned from each step on.
  auto computes_with = [&](double threshold, bool plan) {
    std::size_t computes = 0;
    double accumulated = 0;
    for (std::size_t t = 0; t < steps; ++t) {
      step_context ctx;
      ctx.step = t;
      ctx.steps = steps;
      ctx.progress = static_cast<double>(t) / static_cast<double>(steps);
      const double epsilon = profile[t];
      bool free_compute = false;
      if (forced(ctx) || !std::isfinite(epsilon)) {
        ++computes;
        accumulated = 0;
        free_compute = !forced(ctx);
      } else {
        accumulated += epsilon;
        if (accumulated >= threshold) {
          ++computes;
          accumulated = 0;
          free_compute = true;
        }
      }
      if (plan) planned_free_from[t] = free_compute;
    }
    if (plan) {
      planned_free_from[steps] = 0;
      for (std::size_t t = steps; t-- > 0;) planned_free_from[t] += planned_free_from[t + 1];
    }
    return computes;
  };
  double total = 0;
  for (double e : profile)
    if (std::isfinite(e)) total += e;
  double low = 0, high = 2 * total + 1;
  if (computes_with(high, false) > calls) return std::numeric_limits<double>::quiet_NaN();
  for (int i = 0; i < 64; ++i) {
    const double middle = 0.5 * (low + high);
    (computes_with(middle, false) <= calls ? high : low) = middle;
  }
  if (planned_free_from.size() == steps + 1) computes_with(high, true);
  return high;
}

/// EasyCache's error signal steered to a compute budget (beyond the paper).
///
/// E accumulates ε = k·dx/‖v‖ as in the reference. Two hard rules make the
/// number of computed steps exact: when the remaining calls equal the remaining
/// steps every step is computed, and when none remain every step is skipped.
/// Forced computes (warm-up, last step, window) count towards the budget; the
/// window is placed by progress even with config::window_sigma, since the
/// forced steps are planned before the run, when no sigma is known.
/// Between those rules a step is computed when E reaches a threshold:
///  - calibrated: after a whole generation, the threshold τ that would have
///    given exactly the budget on that generation's recorded ε (the same model
///    and schedule give similar ε profiles), so computes fall where E grows
///    fastest, as EasyCache's own τ would place them. A copy of the policy
///    carries what it learned to another controller (see retarget());
///  - in the first generation, with nothing recorded: (remaining free steps /
///    remaining free calls − ½) times a running mean of ε, which spaces the
///    computes about evenly in units of predicted error.
class budget_policy {
 public:
  explicit budget_policy(budget target, double smoothing = 0.25) : target_(target), smoothing_(smoothing) {
    if (!(smoothing > 0 && smoothing <= 1))
      throw error(detail::message("budget_policy: smoothing must be in (0, 1] (got ", smoothing, ")"));
  }

  /// Aims at another budget from the next configure() on (a controller built
  /// with a copy of this policy, or reset(config)), keeping the recorded profile.
  void retarget(budget target) noexcept { target_ = target; }

  /// Takes the configuration's forced steps and step count. Strong: a budget
  /// infeasible for `cfg` throws easycache::error and changes nothing.
  void configure(const config& cfg) {
    forced_steps rule(cfg);
    // The forced steps are planned before the run, when no sigma is known:
    // the window is placed by progress, whatever window_sigma says.
    rule.window_sigma.reset();
    std::size_t forced = 0;
    for (std::size_t t = 0; t < cfg.steps; ++t) {
      step_context ctx;
      ctx.step = t;
      ctx.steps = cfg.steps;
      ctx.progress = static_cast<double>(t) / static_cast<double>(cfg.steps);
      forced += rule(ctx).has_value();
    }
    // Nothing is cached before the first computed step, so step 0 is computed
    // even where it is not forced, and counts towards the budget too.
    step_context first;
    first.steps = cfg.steps;
    const bool first_free = !rule(first).has_value();
    const std::size_t calls = target_.calls_for(cfg.steps);
    const std::size_t minimum = std::max<std::size_t>(forced + first_free, std::min<std::size_t>(2, cfg.steps));
    if (calls < minimum || calls > cfg.steps)
      throw error(detail::message("budget of ", calls, " computed steps is outside [", minimum, ", ", cfg.steps,
                                  "] for this configuration (", forced, " forced steps",
                                  first_free ? ", and step 0 to have something cached" : "",
                                  "; two computed steps are needed before any skip)"));
    forced_ = rule;
    if (cfg.steps != steps_) {
      // A profile of another step count says nothing about this schedule.
      profile_.assign(cfg.steps, std::numeric_limits<double>::quiet_NaN());
      rates_.assign(cfg.steps, std::numeric_limits<double>::quiet_NaN());
      last_profile_.assign(cfg.steps, std::numeric_limits<double>::quiet_NaN());
      planned_free_from_.assign(cfg.steps + 1, 0);
      has_last_profile_ = false;
    }
    steps_ = cfg.steps;
    calls_ = calls;
    computed_ = 0;
    accumulated_error_ = 0.0;
    calibrate();
  }

  std::optional<verdict> plan(const step_context& ctx) const {
    if (ctx.steps != steps_)
      throw error(detail::message("budget_policy is configured for ", steps_, " steps; this generation's schedule has ",
                                  ctx.steps, " (reset(config) with its step count)"));
    if (auto forced = forced_(ctx)) return forced;
    const std::size_t available = available_calls(ctx);
    if (!ctx.has_history) {
      // Before two computed steps nothing can be skipped, but the budget must still hold.
      const bool compute = available > 0;
      return verdict{compute ? action::compute : action::skip, compute ? reason::no_history : reason::policy};
    }
    // With the budget spent, skip unmeasured: statistics that came out
    // degenerate would make the controller compute, beyond the budget. The
    // profile's gap is filled from its neighbours when it is calibrated on.
    if (available == 0) return verdict{action::skip, reason::policy};
    return std::nullopt;  // measured, even where other hard rules decide, so that the profile is whole
  }

  verdict decide(const step_context& ctx, const step_measurement& m) const {
    verdict v;
    v.predicted_error = m.transformation_rate * (m.input_change / m.output_norm);
    v.accumulated_error = accumulated_error_ + v.predicted_error;
    const std::size_t available = available_calls(ctx);
    if (available == 0 || available >= free_steps_from(ctx)) {
      v.action = available == 0 ? action::skip : action::compute;
      v.reason = reason::policy;
      return v;
    }
    if (std::isfinite(calibrated_threshold_)) {
      // The calibrated τ, scaled by how far this generation is from the plan it
      // gave on the recorded profile: with more calls left than planned (ε came
      // out smaller), lower τ; with fewer, raise it. ε depends on the decisions
      // (k spans the computed steps), so the plan is a guide, not a promise.
      const double planned = static_cast<double>(planned_free_from_[ctx.step]);
      const double threshold = calibrated_threshold_ * planned / static_cast<double>(available);
      const bool compute = v.accumulated_error >= threshold;
      v.action = compute ? action::compute : action::skip;
      v.reason = compute ? reason::above_threshold : reason::below_threshold;
      return v;
    }
    const double mean = has_mean_ ? mean_error_ : v.predicted_error;
    // A segment of L steps (L − 1 skips, then a compute) accumulates about L·ε̄;
    // the target length is the remaining steps per remaining call. Comparing
    // with (L − ½)·ε̄ rounds L instead of rounding it up, which would fall behind
    // the budget and leave a run of forced computes at the end.
    const double spacing = static_cast<double>(free_steps_from(ctx)) / static_cast<double>(available_calls(ctx));
    const bool compute = v.accumulated_error >= (spacing - 0.5) * mean;
    v.action = compute ? action::compute : action::skip;
    v.reason = compute ? reason::above_threshold : reason::below_threshold;
    return v;
  }

  /// `measured`: what decide() was given for `v` (nullopt: planned or degenerate).
  void commit(const step_context& ctx, const verdict& v,
              const std::optional<step_measurement>& measured = std::nullopt) noexcept {
    if (v.action == action::compute) ++computed_;
    // What the profile records: dx/‖v‖, which follows the trajectory whatever is
    // computed, and k, whose typical value scales it (k itself spans the computed
    // steps, so it depends on the decisions; the paper observes it is stable).
    if (ctx.step < profile_.size() && measured) {
      profile_[ctx.step] = measured->input_change / measured->output_norm;
      rates_[ctx.step] = measured->transformation_rate;
    }
    ++committed_;
    if (std::isfinite(v.predicted_error)) {
      mean_error_ = has_mean_ ? (1 - smoothing_) * mean_error_ + smoothing_ * v.predicted_error : v.predicted_error;
      has_mean_ = true;
    }
    accumulated_error_ = v.action == action::skip ? v.accumulated_error : 0.0;
  }

  /// Starts a generation; a whole generation just finished becomes the profile
  /// the threshold is calibrated on.
  void reset() noexcept {
    if (committed_ == steps_ && steps_ > 0 && last_profile_.size() == profile_.size()) {
      // The typical k: the mean of the measured ones.
      double rate_sum = 0;
      std::size_t rate_count = 0;
      for (double k : rates_)
        if (std::isfinite(k)) {
          rate_sum += k;
          ++rate_count;
        }
      const double typical_rate = rate_count ? rate_sum / static_cast<double>(rate_count) : 0.0;
      // Steps left unmeasured (the budget was spent) or measured degenerate
      // take the value of the nearest measured step before them (after, at the
      // start): a gap says nothing about the trajectory, and simulating it as a
      // forced compute would spend a call the next generation does not have to.
      double nearest = std::numeric_limits<double>::quiet_NaN();
      for (double relative_change : profile_)
        if (std::isfinite(relative_change)) {
          nearest = relative_change;
          break;
        }
      for (std::size_t t = 0; t < profile_.size(); ++t) {
        if (std::isfinite(profile_[t])) nearest = profile_[t];
        last_profile_[t] = typical_rate * nearest;
      }
      has_last_profile_ = rate_count > 0 && std::isfinite(nearest);
      calibrate();
    }
    std::fill(profile_.begin(), profile_.end(), std::numeric_limits<double>::quiet_NaN());
    std::fill(rates_.begin(), rates_.end(), std::numeric_limits<double>::quiet_NaN());
    committed_ = 0;
    computed_ = 0;
    accumulated_error_ = 0.0;
    mean_error_ = 0.0;
    has_mean_ = false;
  }

  /// The threshold calibrated on the last whole generation (NaN before one).
  double calibrated_threshold() const noexcept { return calibrated_threshold_; }

  /// Computed steps per generation this policy aims at (after configure).
  std::size_t target_calls() const noexcept { return calls_; }
  double accumulated_error() const noexcept { return accumulated_error_; }

 private:
  // Non-forced steps from ctx.step to the end, this one included.
  std::size_t free_steps_from(const step_context& ctx) const {
    std::size_t n = 0;
    for (std::size_t t = ctx.step; t < steps_; ++t) n += !forced_(context_at(t, ctx)).has_value();
    return n;
  }
  // Calls left for non-forced steps: the budget minus the computes so far and
  // the forced computes still to come.
  std::size_t available_calls(const step_context& ctx) const {
    std::size_t reserved = 0;
    for (std::size_t t = ctx.step; t < steps_; ++t) reserved += forced_(context_at(t, ctx)).has_value();
    const std::size_t used = computed_ + reserved;
    return calls_ > used ? calls_ - used : 0;
  }
  void calibrate() noexcept {
    calibrated_threshold_ = std::numeric_limits<double>::quiet_NaN();
    if (has_last_profile_ && last_profile_.size() == steps_)
      calibrated_threshold_ = easycache::calibrated_threshold(last_profile_, forced_, calls_, planned_free_from_);
  }

  step_context context_at(std::size_t t, const step_context& now) const {
    step_context c = now;
    c.step = t;
    // The default progress (index / steps) is computed as the controller will:
    // now.progress + (t − now.step) / steps can round to the other side of a
    // window bound that equals t / steps, and the budget then misses by a call.
    const double steps = static_cast<double>(steps_);
    c.progress = now.progress == static_cast<double>(now.step) / steps
                     ? static_cast<double>(t) / steps
                     : now.progress + static_cast<double>(t - now.step) / steps;
    return c;
  }

  budget target_;
  double smoothing_;
  forced_steps forced_;
  std::size_t steps_ = 0;
  std::size_t calls_ = 0;
  std::size_t computed_ = 0;
  double accumulated_error_ = 0.0;
  double mean_error_ = 0.0;
  bool has_mean_ = false;
  std::vector<double> profile_;       // dx/‖v‖ of each step of this generation (NaN: not measured)
  std::vector<double> rates_;         // k of each step of this generation
  std::vector<double> last_profile_;  // predicted ε (typical k · dx/‖v‖) of the last whole generation
  bool has_last_profile_ = false;
  std::vector<std::size_t> planned_free_from_;  // free computes the calibration plans from each step on
  std::size_t committed_ = 0;  // steps committed in this generation
  double calibrated_threshold_ = std::numeric_limits<double>::quiet_NaN();
};

/// Any policy behind one type, chosen at run time:
///   controller<T, any_policy> cache(cfg, any_policy(fixed_interval_policy(3)));
class any_policy {
 public:
  /// The reference rule, built from the configuration.
  any_policy() : any_policy(easycache_policy{}) {}
  template <class Policy, class = std::enable_if_t<!std::is_same_v<std::decay_t<Policy>, any_policy> &&
                                                  detail::is_policy<std::decay_t<Policy>>::value>>
  any_policy(Policy policy)  // NOLINT: implicit by design, like std::function
      : self_(std::make_unique<model<Policy>>(std::move(policy))) {}
  any_policy(const any_policy& other) : self_(other.self_->clone()) {}
  any_policy(any_policy&&) noexcept = default;
  any_policy& operator=(const any_policy& other) {
    if (this != &other) self_ = other.self_->clone();
    return *this;
  }
  any_policy& operator=(any_policy&&) noexcept = default;
  ~any_policy() = default;

  void configure(const config& cfg) { self_->configure(cfg); }
  std::optional<verdict> plan(const step_context& ctx) const { return self_->plan(ctx); }
  verdict decide(const step_context& ctx, const step_measurement& m) const { return self_->decide(ctx, m); }
  void commit(const step_context& ctx, const verdict& v,
              const std::optional<step_measurement>& measured = std::nullopt) noexcept {
    self_->commit(ctx, v, measured);
  }
  void reset() noexcept { self_->reset(); }

 private:
  struct concept_t {
    virtual ~concept_t() = default;
    virtual std::unique_ptr<concept_t> clone() const = 0;
    virtual void configure(const config&) = 0;
    virtual std::optional<verdict> plan(const step_context&) const = 0;
    virtual verdict decide(const step_context&, const step_measurement&) const = 0;
    virtual void commit(const step_context&, const verdict&, const std::optional<step_measurement>&) noexcept = 0;
    virtual void reset() noexcept = 0;
  };
  template <class Policy>
  struct model final : concept_t {
    explicit model(Policy p) : policy(std::move(p)) {}
    std::unique_ptr<concept_t> clone() const override { return std::make_unique<model>(policy); }
    void configure(const config& cfg) override { detail::configure_policy(policy, cfg); }
    std::optional<verdict> plan(const step_context& ctx) const override { return policy.plan(ctx); }
    verdict decide(const step_context& ctx, const step_measurement& m) const override { return policy.decide(ctx, m); }
    void commit(const step_context& ctx, const verdict& v,
                const std::optional<step_measurement>& measured) noexcept override {
      detail::commit_policy(policy, ctx, v, measured);
    }
    void reset() noexcept override { policy.reset(); }
    Policy policy;
  };
  std::unique_ptr<concept_t> self_;
};

}  // namespace easycache
