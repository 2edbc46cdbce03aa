// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The controller: the algorithm at a glance. Branch 0's begin_step plans
// (the policy's forced steps), measures (dx, k, ‖v‖), decides (the policy);
// finish_step applies (the skip's prediction, or the compute's commit). Its
// parts live in detail/: step_sequencer (order and generations),
// anchor_measurement (sums → measurement), branch_cache (cached vectors and
// the skip predictor), tensor_ops (checks and backend passes).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "error.hpp"
#include "policy.hpp"
#include "tensor_traits.hpp"
#include "trace.hpp"
#include "types.hpp"
#include "detail/format.hpp"
#include "detail/anchor_measurement.hpp"
#include "detail/generation.hpp"
#include "detail/invoke.hpp"
#include "detail/macros.hpp"
#include "detail/peer_rules.hpp"
#include "detail/skip_prediction.hpp"
#include "detail/step_sequencer.hpp"
#include "detail/tensor_ops.hpp"

namespace easycache {

/// Runtime-adaptive cache around a denoiser (EasyCache, arXiv 2507.02860).
///
/// Each call of step() either calls the denoiser or returns the input plus the
/// transformation vector (output − input) cached at the last computed step,
/// following the rules of docs/algorithm.md (see docs/design.md). One controller
/// serves any number of generations, each over the steps the sampler runs of
/// its schedule (docs/design.md, "Generations and the schedule"): branch 0 at
/// an earlier step than the last one taken, after the schedule's last step, or
/// with another step_info::steps begins a new one, wherever it starts.
///
/// Threads: independent controllers may run concurrently in independent
/// threads (the library has no global or static mutable state). One
/// controller is not to be shared between threads without external
/// synchronisation; its const member functions (configuration(), stats(),
/// trace(), policy()) may be called concurrently only while no thread
/// mutates it (docs/design.md, "Threads").
///
/// \tparam Tensor  any type with a complete easycache::tensor_traits<Tensor>.
/// \tparam Policy  the decision rule; easycache_policy is the reference rule.
template <class Tensor, class Policy = easycache_policy>
class controller {
  static_assert(detail::is_policy<Policy>::value,
                "easycache: Policy needs plan(ctx) const, decide(ctx, measurement) const, commit(ctx, verdict) "
                "(or commit(ctx, verdict, measured)) and reset() (see easycache/policy.hpp)");
  // One diagnostic per problem, each naming it (tensor_traits_check, easycache/tensor_traits.hpp).
  static_assert(sizeof(tensor_traits_check<Tensor>) != 0);

  using traits = std::conditional_t<is_tensor_v<Tensor>, tensor_traits<Tensor>, detail::placeholder_traits<Tensor>>;
  using buffer_type = typename traits::buffer_type;
  using workspace_type = typename traits::workspace_type;
  using ops = detail::tensor_ops<Tensor, traits>;  // checks and backend passes, over traits

 public:
  using tensor_type = Tensor;
  using policy_type = Policy;
  /// Called after each evaluation with its trace record.
  using decision_callback = std::function<void(const step_record&)>;
  /// Combines partial statistics across processes (see set_statistics_reduction).
  using statistics_reduction = std::function<void(double* values, std::size_t count)>;

  /// What begin_step() decided for one evaluation; hand it back to finish_step().
  class pending {
   public:
    /// compute: call the denoiser, write its output to `out`, then finish_step().
    /// skip: call finish_step() directly; it writes the cached prediction to `out`.
    easycache::action action() const noexcept { return verdict_.action; }
    easycache::reason reason() const noexcept { return verdict_.reason; }
    bool compute() const noexcept { return verdict_.action == easycache::action::compute; }
    const step_info& info() const noexcept { return info_; }

   private:
    friend class controller;
    step_info info_{};
    step_context context_{};
    verdict verdict_{};
    step_record record_{};
    std::optional<step_measurement> measured_{};  // what the policy decided on (branch 0)
    std::size_t size_ = 0;
    std::uint64_t serial_ = 0;
    std::uint64_t anchor_serial_ = 0;  // other branches: the anchor evaluation whose verdict they follow
    detail::retention retention_ = detail::retention::everything;  // what a compute keeps (outside the window)
    const controller* owner_ = nullptr;
  };

  /// Takes a configuration (validated: throws easycache::error, and no object
  /// is made) and builds the policy from it when Policy is constructible from a config.
  explicit controller(const config& cfg = config{})
      : config_(ops::validated(cfg)), policy_(detail::make_policy<Policy>(cfg)) {}

  /// Takes a configuration and a ready policy (validated as above; the policy's
  /// configure(config), if it has one, may refuse the configuration too).
  controller(const config& cfg, Policy policy) : config_(ops::validated(cfg)), policy_(std::move(policy)) {
    detail::configure_policy(policy_, config_);
  }

  /// One evaluation: writes the denoiser's output for `x` into `out`, or the
  /// cached prediction (`x + cached transformation vector`) when the step is skipped.
  ///
  /// `denoiser` is any callable of one of these forms (tried in this order):
  ///   void(const Tensor& x, Tensor& out, const step_info&)
  ///   void(const Tensor& x, Tensor& out)
  ///   R(const Tensor& x, const step_info&)   with `out = R` valid
  ///   R(const Tensor& x)
  /// The (x, out) forms return void, or bool: false (an engine's failure flag)
  /// throws easycache::denoiser_failed, as if the denoiser had thrown.
  /// `x` is the noisy latent the cache keys on; conditioning (image channels,
  /// text) belongs inside the callable. `out` must not be, or share memory with, `x`.
  ///
  /// Errors (easycache::error): branch or step out of range (of the schedule's
  /// step_info::steps or config.steps), branch 0 twice at a step (mark a second
  /// evaluation with step_info::extra_evaluation), another branch before branch
  /// 0 of its step or twice in it, input size changed within a generation, a
  /// returning denoiser that returned its input (`out` is left as it was), a
  /// moved-from controller, `out` aliases or overlaps `x`, `x` or
  /// `out` refused by the backend's check (a null host buffer with elements, a
  /// non-contiguous Eigen map), a host output or a denoiser output of the wrong size.
  ///
  /// Exception safety (docs/design.md, "Exception safety", one row per case):
  /// strong for bad input, a throwing denoiser or reduction (retry, or go on:
  /// the other branches of that step and the next step are then computed),
  /// except that a generation's first step ends the previous generation once
  /// its input is accepted; basic when a backend pass that writes buffers
  /// throws (the generation is dropped); a throwing callback propagates after
  /// the evaluation has taken effect.
  template <class Denoiser>
  void step(const Tensor& x, Tensor& out, const step_info& info, Denoiser&& denoiser) {
    static_assert(detail::denoiser_form<Denoiser, Tensor>() != 0,
                  "easycache: the denoiser must be callable as void(const T& x, T& out[, const step_info&]) or "
                  "as R(const T& x[, const step_info&]) with R assignable to T.");
    ops::check_distinct(x, out, info);
    ops::check_output_before_writing(out);
    const pending p = begin_step(x, info);
    // Whatever fails after begin_step (the denoiser, its output refused, a
    // pass), this step's pending cannot be finished by the caller: branch 0's
    // step has failed, and the other branches of that step and the next step
    // are computed (note_failure does nothing once the step has finished).
    try {
      if (p.compute()) detail::call_denoiser<ops>(denoiser, x, out, info);
      finish_step(p, x, out);
    } catch (...) {
      note_failure(p);
      throw;
    }
  }

  /// As above, returning a new output tensor (for owning tensor types: Eigen
  /// vectors and arrays, at::Tensor). Allocates the output on every call; use
  /// the `out` overload in an allocation-free loop. Same guarantees, except
  /// that when the decision callback throws the evaluation is counted but its
  /// output is lost with the return value.
  EASYCACHE_TEMPLATE_REQUIRES(class Denoiser, (detail::always_true<Denoiser> && is_resizable_tensor_v<Tensor> &&
                                               std::is_default_constructible_v<Tensor>))
  Tensor step(const Tensor& x, const step_info& info, Denoiser&& denoiser) {
    Tensor out{};
    step(x, out, info, std::forward<Denoiser>(denoiser));
    return out;
  }

  /// First half of a step, for engines that call the model themselves (as
  /// stable-diffusion.cpp's before/after hooks do): decides for `x` and returns
  /// the decision. Then, if it says compute, run the model into `out`; in both
  /// cases call finish_step(). Nothing takes effect until finish_step(), so an
  /// abandoned pending step (say, the model threw) is simply begun again.
  /// With guidance batched into one model call, begin every branch of the
  /// step (branch 0 first), call the model once, then finish branch 0 first
  /// and the others after it; beginning branch 0 again makes the other
  /// branches' pendings of that step stale.
  /// Throws easycache::error for the same bad input as step().
  pending begin_step(const Tensor& x, const step_info& info) {
    check_live();
    const std::size_t steps = sequencer_.schedule_of(info, config_.steps, config_.branches);
    branch_cache::check_timestep(info, config_.predictor);
    if constexpr (detail::has_check<Tensor>::value) traits::check(x);
    pending p;
    p.info_ = info;
    p.size_ = traits::size(x);
    p.record_ = make_record(info);
    if (info.extra_evaluation) {
      sequencer_.check_extra_evaluation(info);
      p.verdict_ = verdict{action::compute, reason::extra_evaluation};
    } else if (info.branch == 0) {
      begin_anchor(x, steps, p);
    } else {
      begin_branch(x, p);
    }
    p.serial_ = sequencer_.opened(info, p.verdict_);
    p.owner_ = this;
    return p;
  }

  /// Second half of a step: on a skip writes the cached prediction for `x` into
  /// `out`; on a compute takes `out` (the model's output for `x`) into the cache.
  /// `p` must be the latest pending step of its branch and `x` the same input.
  /// Throws easycache::error for a stale `p` (finished or begun again already;
  /// begun before reset(), reset(config) or a new generation; another branch's
  /// of a step that has ended since branch 0 finished the next one; begun by
  /// another controller, or by this one before it was moved), an `x` of
  /// another size or refused by the backend's check (as in begin_step), or an
  /// output of the wrong size; the controller is then unchanged.
  void finish_step(const pending& p, const Tensor& x, Tensor& out) {
    check_live();
    const step_info& info = p.info_;
    sequencer_.check_finishable(info, p.serial_, p.anchor_serial_, p.owner_ == this);
    ops::check_distinct(x, out, info);
    if constexpr (detail::has_check<Tensor>::value) traits::check(x);
    ops::check_output_before_writing(out);
    if (traits::size(x) != p.size_)
      throw error(detail::message("finish_step got an input of ", traits::size(x), " elements for step ", info.index,
                                  ", branch ", info.branch, "; begin_step had ", p.size_));
    if (p.compute()) {
      ops::check_denoiser_output(out, info, p.size_, generation_buffer(info));
    } else {
      ops::prepare_output(out, x);
    }
    // More extra evaluations than one per branch and step (a sampler with
    // several a step) outgrow the reserved trace: grow it here, before
    // anything takes effect, rather than lose their records.
    if (config_.record_trace && trace_.size() == trace_.capacity()) trace_.reserve(2 * trace_.capacity() + 1);
    sequencer_.close(info);
    if (info.extra_evaluation) {
      ++stats_.extra_evaluations;
      finish(p.record_, p.verdict_);
    } else if (info.branch == 0) {
      finish_anchor(p, x, out);
    } else {
      finish_branch(p, x, out);
    }
  }

  /// Drops the generation in progress: branch 0's next step begins a new one.
  /// Buffers are kept for reuse when the next generation has the same sizes;
  /// stats() and trace() keep describing the dropped generation. No-throw.
  void reset() noexcept {
    if (!live_) return;
    sequencer_.stop();
    policy_.reset();
  }

  /// Takes a new configuration (validated first) and resets. Strong: on an
  /// easycache::error, or if building the policy from it throws, nothing changes.
  void reset(const config& cfg) {
    check_live();
    config next = ops::validated(cfg);
    detail::configure_policy(policy_, next);
    config_ = next;
    reset();
  }

  /// The configuration in effect.
  const config& configuration() const noexcept { return config_; }
  /// Counters of the current (or last) generation.
  const statistics& stats() const noexcept { return stats_; }
  /// Records of the current (or last) generation, one per evaluation (when config.record_trace).
  const std::vector<step_record>& trace() const noexcept { return trace_; }
  /// The policy (for its state, e.g. the accumulated error).
  const Policy& policy() const noexcept { return policy_; }
  /// Sets a callback invoked after each evaluation; an empty function removes it.
  /// No-throw. If the callback throws, the step has already taken effect (see step()).
  void on_decision(decision_callback callback) noexcept { callback_.swap(callback); }

  /// Sets a hook that combines the statistics of a sharded latent across
  /// processes before each decision (sequence parallelism): it receives
  /// `count` doubles (the four partial sums of tensor_traits' statistic slots,
  /// then the local number of sampled elements, then, with config.output_norm
  /// = every_element, the local number of elements the norm is over) and must
  /// replace each by its sum over all ranks, e.g. with
  /// MPI_Allreduce(MPI_IN_PLACE, ..., MPI_SUM).
  /// It runs once per decision step, on every rank, so every rank takes the
  /// same decisions. An empty function removes it. No-throw. If the hook
  /// throws, begin_step (or step) propagates its exception and nothing has
  /// changed (strong): the sums it was given are a copy.
  void set_statistics_reduction(statistics_reduction reduction) noexcept { reduction_.swap(reduction); }

 private:
  using branch_cache = detail::branch_cache<Tensor, traits>;

  // ---- branch 0: plan → measure → decide (begin), apply (finish) ----

  void begin_anchor(const Tensor& x, std::size_t steps, pending& p) {
    const step_info& info = p.info_;
    const detail::step_kind kind = sequencer_.classify_anchor(info.index, steps);
    if (kind == detail::step_kind::start) {
      start_generation(x, p.size_, info.index, steps);
    } else {
      check_same_generation(x, p.size_, info);
    }
    step_context& ctx = p.context_;
    ctx.step = info.index;
    ctx.steps = steps;
    ctx.first_step = sequencer_.sequence().first();
    ctx.progress = progress_of(info);
    ctx.sigma = info.timestep;
    ctx.has_history = measurement_.has_history() && caches_[0].computes > 0;

    // Plan: forced steps need no statistics. After a step that was not taken,
    // dx would span several steps and the cached vector is older than the rule
    // assumes: compute.
    std::optional<verdict> planned = policy_.plan(ctx);
    if (kind == detail::step_kind::gap && (!planned || planned->action == action::skip))
      planned = verdict{action::compute, reason::out_of_sequence};
    // Measure: dx against the reference input, and k and ‖v‖ from the last commit.
    if (!planned || (config_.measure_forced_steps && measurement_.can_measure(config_))) {
      const double input_change = measure_input_change(x, p.size_);
      p.record_.input_change = input_change;
      p.record_.transformation_rate = measurement_.transformation_rate();
      p.record_.output_norm = measurement_.output_norm();
      if (!planned) p.measured_ = measurement_.usable(config_, input_change);
    }
    // Decide.
    verdict chosen = planned                ? *planned
                     : p.measured_.has_value() ? policy_.decide(ctx, *p.measured_)
                                               : verdict{action::compute, reason::degenerate_statistics};
    p.record_.predicted_error = chosen.predicted_error;
    p.record_.accumulated_error = chosen.accumulated_error;
    if (chosen.action == action::skip && caches_[0].computes == 0)
      chosen = verdict{action::compute, reason::no_history};
    p.verdict_ = chosen;
    p.retention_ = detail::retention_of(config_, ctx.progress, ctx.sigma);
  }

  void finish_anchor(const pending& p, const Tensor& x, Tensor& out) {
    branch_cache& anchor = caches_[0];
    const verdict& chosen = p.verdict_;
    step_record record = p.record_;
    if (chosen.action == action::skip) {
      buffer_type* input_copy = detail::anchor_measurement::skip_keeps_input(config_) ? &x_prev_ : nullptr;
      guarded([&] { anchor.predict(x, out, input_copy, p.info_.timestep, &x_last_, config_.predictor); });
      if (input_copy) measurement_.skipped_keeping_input();
    } else if (p.retention_ == detail::retention::everything) {
      guarded([&] { commit_anchor(x, out, p.info_.timestep, record.realized_error); });
      measurement_.computed();
      anchor.computed(p.info_.index, p.info_.timestep);
    } else if (p.retention_ == detail::retention::cached_vector && !reuses_output()) {
      // Computed outside the window by a peer variant: its cached vector only.
      // (Not with the last-output predictor: the anchor's output is x_last + Δ,
      // and x_last is kept by computes inside the window only.)
      guarded([&] {
        anchor.keep_previous_delta(x, config_.predictor);
        traits::store_delta(x, out, anchor.delta);
      });
      anchor.computed(p.info_.index, p.info_.timestep);
    }
    detail::commit_policy(policy_, p.context_, chosen, p.measured_);
    sequencer_.anchor_finished(p.info_.index, p.serial_, chosen);
    ++stats_.reasons[static_cast<std::size_t>(chosen.reason)];
    ++stats_.steps;
    stats_.skipped_steps += chosen.action == action::skip;
    finish(record, chosen);
  }

  // The anchor's commit pass: the sums the next decision reads, then x_last and
  // Δ (and the linear predictor's Δ_prev). Backends with commit_predicting also
  // measure in it what a skip would have returned here, for `realized_error`;
  // where they did (host memory: skip_error is not NaN) the sums are read now,
  // which costs no sync there.
  void commit_anchor(const Tensor& x, const Tensor& out, double timestep, double& realized_error) {
    branch_cache& anchor = caches_[0];
    const bool measure_change = measurement_.commit_measures_change();
    if constexpr (detail::has_commit_predicting<Tensor>::value) {
      if (measure_change && !scoped_statistics() && detail::commit_predicting_applies<Tensor>()) {
        commit_prediction<buffer_type> prediction;  // x + Δ, or the linear predictor's (last_output: see below)
        if constexpr (detail::has_extrapolation<Tensor>::value) {
          if (config_.predictor == skip_predictor::linear_in_timestep) {
            prediction.delta_prev = &anchor.delta_prev;
            prediction.extrapolate = anchor.extrapolation_weight(timestep, prediction.weight);
          }
        }
        traits::commit_predicting(workspace_, x, out, x_last_, anchor.delta, true, config_.sampling, prediction);
        const double skip_error = traits::skip_error(workspace_);
        if (std::isnan(skip_error)) return;  // not measured (a device tensor), or a non-finite output
        double sums[statistic_slot_count] = {};
        traits::read(workspace_, sums);
        // The last output is x_last + Δ: its error is the output change the pass sums anyway.
        const double error_sum = config_.predictor == skip_predictor::last_output
                                     ? sums[static_cast<std::size_t>(statistic_slot::output_change)]
                                     : skip_error;
        const double sampled = static_cast<double>(detail::anchor_measurement::sampled_elements(config_, anchor.size));
        const double norm = sums[static_cast<std::size_t>(statistic_slot::output_norm)] /
                            static_cast<double>(detail::anchor_measurement::norm_elements(config_, anchor.size));
        realized_error = (error_sum / sampled) / norm;
        return;
      }
    }
    anchor.keep_previous_delta(x, config_.predictor);
    ops::commit(workspace_, x, out, x_last_, anchor.delta, v_last_, measure_change, config_, anchor.size);
  }

  // ---- other branches: follow the anchor's decision for their step ----

  void begin_branch(const Tensor& x, pending& p) {
    const step_info& info = p.info_;
    const detail::anchor_follow follow = sequencer_.follow_anchor(info);
    const branch_cache& branch = caches_[info.branch];  // sized for config.branches: a generation is in progress
    if (branch.allocated && p.size_ != branch.size)
      throw error(detail::message("input size of branch ", info.branch, " changed within a generation: ", p.size_,
                                  " elements at step ", info.index, ", ", branch.size, " before"));
    if constexpr (detail::has_check_compatible<Tensor>::value) {
      if (branch.allocated) traits::check_compatible(x, branch.delta);
    }
    p.verdict_ = follow.decision;
    p.anchor_serial_ = follow.anchor_serial;
    p.retention_ = detail::retention_of(config_, progress_of(info), info.timestep);
    if (p.verdict_.action == action::skip) {
      if (!branch.allocated || branch.computes == 0) {
        p.verdict_ = verdict{action::compute, reason::no_history};
      } else if (branch.last_compute_step == detail::no_step ||
                 branch.last_compute_step < caches_[0].last_compute_step) {
        // The anchor's criterion bounds the drift since its own last compute only.
        p.verdict_ = verdict{action::compute, reason::stale_branch};
      }
    }
  }

  void finish_branch(const pending& p, const Tensor& x, Tensor& out) {
    branch_cache& branch = caches_[p.info_.branch];
    // A branch's buffers and size are fixed at its first finished evaluation, so
    // that a failed one (the denoiser threw, a wrong size) leaves nothing behind.
    if (!branch.allocated) branch.allocate(x, p.size_, false, config_.predictor);
    if (!p.compute()) {
      guarded([&] { branch.predict(x, out, nullptr, p.info_.timestep, nullptr, config_.predictor); });
    } else if (p.retention_ != detail::retention::nothing) {
      // (A peer variant that keeps nothing outside the window keeps no cached vector there either.)
      guarded([&] {
        branch.keep_previous_delta(x, config_.predictor);
        branch.store(x, out, config_.predictor);
      });
      branch.computed(p.info_.index, p.info_.timestep);
    }
    sequencer_.branch_finished(p.info_.branch, p.info_.index);
    finish(p.record_, p.verdict_);
  }

  // ---- the generation and the anchor's tensors ----

  // Everything a new generation needs; buffers are reused when the sizes match.
  void start_generation(const Tensor& x, std::size_t size, std::size_t first, std::size_t steps) {
    detail::anchor_measurement::check_shape(config_, size);
    // The previous generation ends here, its statistics and trace with it, so
    // that a failing allocation below leaves them empty and consistent.
    sequencer_.clear(config_.branches);
    stats_ = statistics{};
    trace_.clear();
    policy_.reset();
    if (caches_.size() != config_.branches) {
      caches_.clear();
      caches_.resize(config_.branches);
    }
    for (branch_cache& b : caches_) b.forget();
    // Room for one record per evaluation, and one extra evaluation per branch and step (finish_step grows it beyond).
    if (config_.record_trace) trace_.reserve(2 * (steps - first) * config_.branches);
    traits::allocate(x_last_, x);
    if (config_.input_change == input_change_reference::previous_step) traits::allocate(x_prev_, x);
    if (scoped_statistics()) traits::allocate(v_last_, x);
    traits::prepare(workspace_, x);
    caches_[0].allocate(x, size, true, config_.predictor);
    anchor_size_ = size;
    measurement_.start();
    sequencer_.start(first, steps);
  }

  void check_same_generation(const Tensor& x, std::size_t size, const step_info& info) const {
    if (size != anchor_size_)
      throw error(detail::message("input size changed within a generation: ", size, " elements at step ", info.index,
                                  ", ", anchor_size_,
                                  " before (call reset() to start a new generation with other sizes)"));
    if constexpr (detail::has_check_compatible<Tensor>::value) traits::check_compatible(x, x_last_);
  }

  // dx into the workspace (the backend's pass, or its scoped one for the peer
  // variants), then the one device→host read of the step, combined across
  // ranks when a reduction is set. Returns dx; k and ‖v‖ follow in measurement_.
  double measure_input_change(const Tensor& x, std::size_t size) {
    const buffer_type& reference =
        measurement_.reference(config_) == detail::input_reference::last_compute ? x_last_ : x_prev_;
    ops::reduce_input_change(workspace_, x, reference, config_, size);
    double sums[statistic_slot_count] = {};
    traits::read(workspace_, sums);
    double values[detail::reduced_value_count] = {};
    detail::anchor_measurement::fill(config_, sums, size, values);
    if (reduction_) reduction_(values, detail::anchor_measurement::reduced_values(config_));
    return measurement_.take(config_, values);
  }

  bool scoped_statistics() const noexcept { return detail::needs_scoped_statistics(config_); }
  bool reuses_output() const noexcept { return config_.predictor == skip_predictor::last_output; }

  // ---- checks and small helpers ----

  // The buffer of the generation a denoiser's output for `info` must fit, if any.
  const buffer_type* generation_buffer(const step_info& info) const noexcept {
    if (info.extra_evaluation || !sequencer_.active()) return nullptr;
    if (info.branch == 0) return &x_last_;
    return caches_[info.branch].allocated ? &caches_[info.branch].delta : nullptr;
  }

  void check_live() const {
    if (!live_)
      throw error("easycache: this controller was moved from; assign a controller to it before using it again");
  }

  // The denoiser threw: a loop that logs the failure and goes on evaluates the
  // other branches of this step and then the next step, which are computed.
  void note_failure(const pending& p) noexcept { sequencer_.anchor_failed(p.info_, p.serial_); }

  static step_record make_record(const step_info& info) {
    step_record record;
    record.step = info.index;
    record.branch = info.branch;
    record.timestep = info.timestep;
    return record;
  }

  double progress_of(const step_info& info) const noexcept {
    if (std::isfinite(info.progress)) return info.progress;
    const std::size_t steps = info.steps ? info.steps : config_.steps;
    return static_cast<double>(info.index) / static_cast<double>(steps);
  }

  // A backend pass that fails half-way leaves buffers in an unknown state:
  // forget the generation's history so that nothing stale is ever reused.
  template <class Pass>
  void guarded(Pass&& pass) {
    try {
      pass();
    } catch (...) {
      sequencer_.stop();
      throw;
    }
  }

  // The evaluation has taken effect: count it, record it, report it.
  void finish(step_record record, const verdict& decided) {
    record.action = decided.action;
    record.reason = decided.reason;
    ++stats_.evaluations;
    if (record.action == action::skip) {
      ++stats_.skips;
    } else {
      ++stats_.calls;
    }
    if (config_.record_trace && trace_.size() < trace_.capacity()) trace_.push_back(record);
    if (callback_) callback_(record);
  }

  config config_;
  Policy policy_;
  statistics stats_{};
  std::vector<step_record> trace_;
  decision_callback callback_;
  statistics_reduction reduction_;

  detail::step_sequencer sequencer_;        // order and staleness of evaluations, the generation
  detail::anchor_measurement measurement_;  // what dx is measured against; sums → dx, k, ‖v‖
  std::vector<branch_cache> caches_;        // per branch: cached vectors and the skip predictor's state
  buffer_type x_last_{};  // input of the anchor's last computed step
  buffer_type x_prev_{};  // input of the previous step, when it was skipped (else x_last_ holds it)
  buffer_type v_last_{};  // the peer variants' scoped statistics: the anchor's last computed output (sampled elements)
  workspace_type workspace_{};
  std::size_t anchor_size_ = 0;
  detail::live_flag live_;
};

}  // namespace easycache
