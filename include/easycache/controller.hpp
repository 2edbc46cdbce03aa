// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
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
#include "detail/generation.hpp"
#include "detail/invoke.hpp"
#include "detail/macros.hpp"
#include "detail/peer_rules.hpp"

namespace easycache {

namespace detail {
// Stands in for tensor_traits<T> when T is unsupported, so that the one
// static_assert in controller is the only diagnostic the user sees.
template <class T>
struct placeholder_traits {
  using buffer_type = int;
  using workspace_type = int;
  static std::size_t size(const T&) { return 0; }
  static void allocate(buffer_type&, const T&) {}
  static void prepare(workspace_type&, const T&) {}
  static void reduce_abs_diff(workspace_type&, statistic_slot, const T&, const buffer_type&,
                              const statistics_sampling&) {}
  static void apply_delta(const T&, const buffer_type&, T&, buffer_type*) {}
  static void commit(workspace_type&, const T&, const T&, buffer_type&, buffer_type&, bool,
                     const statistics_sampling&) {}
  static void store_delta(const T&, const T&, buffer_type&) {}
  static void read(workspace_type&, double (&)[statistic_slot_count]) {}
};
}  // namespace detail

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
                "easycache: Policy needs plan(ctx) const, decide(ctx, measurement) const, commit(ctx, verdict) and "
                "reset() (see easycache/policy.hpp)");
  // One diagnostic per problem, each naming it (tensor_traits_check, easycache/tensor_traits.hpp).
  static_assert(sizeof(tensor_traits_check<Tensor>) != 0);

  using traits = std::conditional_t<is_tensor_v<Tensor>, tensor_traits<Tensor>, detail::placeholder_traits<Tensor>>;
  using buffer_type = typename traits::buffer_type;
  using workspace_type = typename traits::workspace_type;

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
    std::size_t size_ = 0;
    std::uint64_t serial_ = 0;
    std::uint64_t anchor_serial_ = 0;  // other branches: the anchor evaluation whose verdict they follow
    detail::retention retention_ = detail::retention::everything;  // what a compute keeps (outside the window)
    const controller* owner_ = nullptr;
  };

  /// Takes a configuration (validated: throws easycache::error, and no object
  /// is made) and builds the policy from it when Policy is constructible from a config.
  explicit controller(const config& cfg = config{}) : config_(validated(cfg)), policy_(make_policy(cfg)) {}

  /// Takes a configuration and a ready policy (validated as above; the policy's
  /// configure(config), if it has one, may refuse the configuration too).
  controller(const config& cfg, Policy policy) : config_(validated(cfg)), policy_(std::move(policy)) {
    configure_policy(config_);
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
  /// Exception safety (docs/design.md):
  ///  - strong: after an easycache::error, an exception from the denoiser, or
  ///    one from the backend's reduce_abs_diff, read or a branch's first
  ///    allocate, the statistics, trace and decision state are as before and
  ///    the same call may be retried. A loop may instead go on: when the
  ///    denoiser threw on branch 0, the other branches of that step and the
  ///    next step are computed. Branch 0's step that begins a generation is
  ///    the exception: once its input is accepted it ends the previous
  ///    generation (statistics and trace empty, policy reset) before it
  ///    allocates or calls the denoiser;
  ///  - basic: if the backend's allocate fails as a generation begins, no
  ///    generation is in progress (statistics and trace empty); if
  ///    apply_delta, commit or store_delta throws, buffers may be half-written,
  ///    so the generation is dropped: the failed evaluation is not counted and
  ///    branch 0's next call begins a new generation;
  ///  - if the decision callback throws, the evaluation has taken effect
  ///    (counted, recorded, `out` written) and its exception propagates;
  ///  - `out` may have been written by the denoiser whenever it ran.
  template <class Denoiser>
  void step(const Tensor& x, Tensor& out, const step_info& info, Denoiser&& denoiser) {
    static_assert(detail::denoiser_form<Denoiser, Tensor>() != 0,
                  "easycache: the denoiser must be callable as void(const T& x, T& out[, const step_info&]) or "
                  "as R(const T& x[, const step_info&]) with R assignable to T.");
    check_distinct(x, out, info);
    check_output_before_writing(out);
    const pending p = begin_step(x, info);
    // Whatever fails after begin_step (the denoiser, its output refused, a
    // pass), this step's pending cannot be finished by the caller: branch 0's
    // step has failed, and the other branches of that step and the next step
    // are computed (note_failure does nothing once the step has finished).
    try {
      if (p.compute()) {
        constexpr int form = detail::denoiser_form<Denoiser, Tensor>();
        if constexpr (form == detail::form_out_info || form == detail::form_out) {
          static_assert(detail::out_form_result_usable<Denoiser, Tensor>(),
                        "easycache: a denoiser of the form (const T& x, T& out[, const step_info&]) returns void, "
                        "or bool (false: the call failed)");
          prepare_output(out, x);
          if (!detail::invoke_denoiser<form>(denoiser, x, out, info))
            throw denoiser_failed(detail::message("the denoiser returned false (failed) at step ", info.index,
                                                  ", branch ", info.branch));
        } else if constexpr (form == detail::form_return_info) {
          assign_result(x, out, denoiser(x, info), info);
        } else if constexpr (form == detail::form_return) {
          assign_result(x, out, denoiser(x), info);
        }
      }
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
    if (info.branch >= config_.branches)
      throw error(detail::message("branch ", info.branch, " out of range: config.branches is ", config_.branches));
    // Other branches and extra evaluations are of branch 0's schedule unless they say otherwise.
    const std::size_t steps = info.steps != 0 || (info.branch == 0 && !info.extra_evaluation) || !in_generation_
                                  ? schedule_steps(info)
                                  : sequence_.steps();
    if (info.index >= steps)
      throw error(detail::message("step ", info.index, " out of range: the schedule has ", steps, " steps (",
                                  info.steps                                       ? "step_info::steps"
                                  : (info.branch == 0 && !info.extra_evaluation) || !in_generation_ ? "config.steps"
                                                                                   : "the generation's schedule",
                                  "; steps are 0-based; pass step_info::steps for a schedule of another length)"));
    if (config_.predictor == skip_predictor::linear_in_timestep && !info.extra_evaluation &&
        !std::isfinite(info.timestep))
      throw error(detail::message("the linear_in_timestep predictor needs a finite step_info::timestep (got ",
                                  info.timestep, " at step ", info.index, ", branch ", info.branch, ")"));
    if constexpr (detail::has_check<Tensor>::value) traits::check(x);
    pending p;
    p.info_ = info;
    p.size_ = traits::size(x);
    if (info.extra_evaluation) {
      if (!in_generation_)
        throw error(detail::message("extra evaluation at step ", info.index,
                                    " without a generation in progress: a generation starts with branch 0's "
                                    "evaluation of a step"));
      p.verdict_ = verdict{action::compute, reason::extra_evaluation};
      p.record_ = make_record(info);
    } else if (info.branch == 0) {
      begin_anchor(x, p);
    } else {
      begin_branch(x, p);
    }
    p.serial_ = ++serial_;
    p.owner_ = this;
    if (info.extra_evaluation) {
      extra_serial_ = p.serial_;
    } else if (info.branch == 0) {
      anchor_open_serial_ = p.serial_;
      anchor_open_step_ = info.index;
      anchor_open_verdict_ = p.verdict_;
    } else {
      branches_[info.branch].open_serial = p.serial_;
      branches_[info.branch].open_step = info.index;
    }
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
    const bool current = p.owner_ == this && p.serial_ != 0 && in_generation_ &&
                         (info.extra_evaluation || info.branch < branches_.size()) && open_serial_of(info) == p.serial_;
    if (!current)
      throw error(detail::message("finish_step for step ", info.index, ", branch ", info.branch,
                                  " that is not the latest begin_step of that branch (finished or begun again "
                                  "already, or stale after reset(), a new generation, the next step, or from another "
                                  "controller)"));
    if (!info.extra_evaluation && info.branch != 0 && p.anchor_serial_ != 0 &&
        p.anchor_serial_ != finished_anchor_serial_) {
      if (p.anchor_serial_ == anchor_open_serial_)
        throw error(detail::message("finish_step for branch ", info.branch, " at step ", info.index,
                                    " before branch 0 of that step has finished: begin the branches in any order "
                                    "after branch 0, then finish branch 0 first"));
      throw error(detail::message("finish_step for branch ", info.branch, " at step ", info.index,
                                  ": branch 0 of that step was begun again since this branch began; begin it again"));
    }
    std::uint64_t& open = open_serial_of(info);
    check_distinct(x, out, info);
    if constexpr (detail::has_check<Tensor>::value) traits::check(x);
    check_output_before_writing(out);
    if (traits::size(x) != p.size_)
      throw error(detail::message("finish_step got an input of ", traits::size(x), " elements for step ", info.index,
                                  ", branch ", info.branch, "; begin_step had ", p.size_));
    if (p.compute()) {
      const std::size_t produced = traits::size(out);
      if (produced != p.size_)
        throw error(detail::message("denoiser output has ", produced, " elements at step ", info.index, ", branch ",
                                    info.branch, "; the input has ", p.size_));
      if constexpr (detail::has_check<Tensor>::value) traits::check(out);
      if constexpr (detail::has_check_compatible<Tensor>::value) {
        // The output must fit the generation's buffers (element type, device).
        if (!info.extra_evaluation && in_generation_) {
          const branch_state& branch = branches_[info.branch];
          if (info.branch == 0) {
            traits::check_compatible(out, x_last_);
          } else if (branch.allocated) {
            traits::check_compatible(out, branch.delta);
          }
        }
      }
    } else {
      prepare_output(out, x);
    }
    // More extra evaluations than one per branch and step (a sampler with
    // several a step) outgrow the reserved trace: grow it here, before
    // anything takes effect, rather than lose their records.
    if (config_.record_trace && trace_.size() == trace_.capacity()) trace_.reserve(2 * trace_.capacity() + 1);
    open = 0;
    if (info.extra_evaluation) {
      ++stats_.extra_evaluations;
      step_record record = p.record_;
      record.action = action::compute;
      record.reason = reason::extra_evaluation;
      finish(record);
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
    in_generation_ = false;
    sequence_.stop();
    policy_.reset();
  }

  /// Takes a new configuration (validated first) and resets. Strong: on an
  /// easycache::error, or if building the policy from it throws, nothing changes.
  void reset(const config& cfg) {
    check_live();
    config next = validated(cfg);
    configure_policy(next);
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
  struct branch_state {
    buffer_type delta{};
    buffer_type delta_prev{};  // skip_predictor::linear_in_timestep only
    buffer_type x_saved{};     // skip_predictor::last_output, branches after the first: the last computed input
    std::size_t size = 0;
    std::size_t computes = 0;  // computed steps of this branch in the generation
    double timestep_last = 0;
    double timestep_prev = 0;
    std::uint64_t open_serial = 0;  // the pending step begun and not finished
    std::size_t open_step = detail::no_step;          // ... and its step
    std::size_t last_step = detail::no_step;          // the step of its last finished evaluation
    std::size_t last_compute_step = detail::no_step;  // the step its cached vector is from
    bool allocated = false;                           // sized for the current generation
  };

  static config validated(const config& cfg) {
    cfg.validate();
    if (cfg.predictor == skip_predictor::linear_in_timestep && !detail::has_extrapolation<Tensor>::value)
      throw error(detail::message("skip_predictor::linear_in_timestep needs tensor_traits::copy and "
                                  "apply_delta_extrapolated, which this tensor type's traits do not provide"));
    if (cfg.predictor == skip_predictor::last_output && !detail::has_output_reuse<Tensor>::value)
      throw error(detail::message("skip_predictor::last_output needs tensor_traits::save_input and "
                                  "apply_saved_output, which this tensor type's traits do not provide"));
    if (detail::needs_scoped_statistics(cfg) && !detail::has_scoped_statistics<Tensor>::value)
      throw error(detail::message(detail::scoped_statistics_need(cfg),
                                  " needs tensor_traits::reduce_abs_diff_scoped and commit_scoped, which this tensor "
                                  "type's traits do not provide (the host backends do)"));
    return cfg;
  }

  static Policy make_policy(const config& cfg) {
    if constexpr (std::is_constructible_v<Policy, const config&>) {
      return Policy(cfg);
    } else {
      static_assert(std::is_default_constructible_v<Policy>,
                    "easycache: this policy needs arguments: construct the controller with (config, policy)");
      Policy policy{};
      if constexpr (detail::has_configure<Policy>::value) policy.configure(cfg);
      return policy;
    }
  }

  // A new configuration reaches the policy through its configure(config) if it
  // has one (keeping its own parameters), else by rebuilding it from the config.
  void configure_policy(const config& cfg) {
    if constexpr (detail::has_configure<Policy>::value) {
      policy_.configure(cfg);
    } else if constexpr (std::is_constructible_v<Policy, const config&>) {
      policy_ = Policy(cfg);
    }
  }

  // An output the controller cannot resize is written as it is: check it
  // before the denoiser or a skip writes into it. (A resizable one may be
  // empty here; it is checked once the denoiser has filled it.)
  static void check_output_before_writing([[maybe_unused]] const Tensor& out) {
    if constexpr (detail::has_check<Tensor>::value && !detail::has_resize_output<Tensor>::value) traits::check(out);
  }

  void check_distinct(const Tensor& x, const Tensor& out, const step_info& info) const {
    bool aliased = &x == &out;
    if constexpr (detail::has_same_storage<Tensor>::value) aliased = aliased || traits::same_storage(x, out);
    if (aliased)
      throw error(detail::message("out must not share memory with x (step ", info.index, ", branch ", info.branch,
                                  "): the denoiser would overwrite the input the cache needs"));
  }

  void check_live() const {
    if (!live_)
      throw error("easycache: this controller was moved from; assign a controller to it before using it again");
  }

  std::size_t schedule_steps(const step_info& info) const noexcept { return info.steps ? info.steps : config_.steps; }

  std::uint64_t& open_serial_of(const step_info& info) {
    if (info.extra_evaluation) return extra_serial_;
    return info.branch == 0 ? anchor_open_serial_ : branches_[info.branch].open_serial;
  }

  // A returned output is checked before it reaches `out`, so that a refused one
  // (the denoiser returned its input, or a view of it) leaves `out` as it was.
  template <class Result>
  void assign_result(const Tensor& x, Tensor& out, Result&& result, const step_info& info) {
    if constexpr (detail::has_same_storage<Tensor>::value &&
                  std::is_same_v<std::remove_cv_t<std::remove_reference_t<Result>>, Tensor>) {
      if (&result == &x || traits::same_storage(x, result))
        throw error(detail::message("the denoiser returned its input, or a tensor sharing its memory (step ",
                                    info.index, ", branch ", info.branch,
                                    "): the cache needs the input unchanged; return a new tensor"));
    }
    out = std::forward<Result>(result);
  }

  // The denoiser threw: a loop that logs the failure and goes on evaluates the
  // other branches of this step and then the next step, which are computed.
  void note_failure(const pending& p) noexcept {
    if (p.info_.extra_evaluation || p.info_.branch != 0 || anchor_open_serial_ != p.serial_) return;
    anchor_open_serial_ = 0;
    anchor_failed_step_ = p.info_.index;
  }

  static step_record make_record(const step_info& info) {
    step_record record;
    record.step = info.index;
    record.branch = info.branch;
    record.timestep = info.timestep;
    return record;
  }

  double progress_of(const step_info& info) const noexcept {
    if (std::isfinite(info.progress)) return info.progress;
    return static_cast<double>(info.index) / static_cast<double>(schedule_steps(info));
  }

  bool predicts_linearly() const noexcept { return config_.predictor == skip_predictor::linear_in_timestep; }
  bool reuses_output() const noexcept { return config_.predictor == skip_predictor::last_output; }

  // Everything a new generation needs; buffers are reused when the sizes match.
  void start_generation(const Tensor& x, std::size_t size, std::size_t first, std::size_t steps) {
    const auto& s = config_.sampling;
    if (s.height != 0 && size % (s.height * s.width) != 0)
      throw error(detail::message("input of ", size, " elements is not a whole number of ", s.height, "x", s.width,
                                  " planes (config.sampling.height x width)"));
    const std::size_t conditions = config_.batched_conditions;
    if (size % conditions != 0)
      throw error(detail::message("input of ", size, " elements is not ", conditions,
                                  " equal slices (config.batched_conditions)"));
    if (s.height != 0 && (size / conditions) % (s.height * s.width) != 0)
      throw error(detail::message("each of the ", conditions, " batched conditions of ", size / conditions,
                                  " elements is not a whole number of ", s.height, "x", s.width,
                                  " planes (config.sampling.height x width)"));
    // The previous generation ends here, its statistics and trace with it, so
    // that a failing allocation below leaves them empty and consistent.
    in_generation_ = false;
    sequence_.stop();
    stats_ = statistics{};
    trace_.clear();
    policy_.reset();
    if (branches_.size() != config_.branches) {
      branches_.clear();
      branches_.resize(config_.branches);
    }
    for (branch_state& b : branches_) {
      b.allocated = false;
      b.computes = 0;
      b.open_serial = 0;
      b.open_step = b.last_step = b.last_compute_step = detail::no_step;
    }
    extra_serial_ = 0;
    anchor_open_serial_ = finished_anchor_serial_ = 0;
    anchor_failed_step_ = anchor_last_compute_step_ = detail::no_step;
    // Room for one record per evaluation, and one extra evaluation per branch and step (finish_step grows it beyond).
    if (config_.record_trace) trace_.reserve(2 * (steps - first) * config_.branches);
    traits::allocate(x_last_, x);
    if (config_.input_change == input_change_reference::previous_step) traits::allocate(x_prev_, x);
    if (scoped_statistics()) traits::allocate(v_last_, x);
    traits::prepare(workspace_, x);
    allocate_branch(branches_[0], x, size, true);
    anchor_size_ = size;
    computes_ = 0;
    has_prev_ = false;
    prev_is_last_ = false;
    commit_pending_ = false;
    commit_measured_ = false;
    transformation_rate_ = std::numeric_limits<double>::quiet_NaN();
    output_norm_ = std::numeric_limits<double>::quiet_NaN();
    sequence_.start(first, steps);
    in_generation_ = true;
  }

  void allocate_branch(branch_state& b, const Tensor& x, std::size_t size, bool anchor) {
    traits::allocate(b.delta, x);
    if constexpr (detail::has_extrapolation<Tensor>::value)
      if (predicts_linearly()) traits::allocate(b.delta_prev, x);
    // The anchor's last computed input is x_last_ already.
    if constexpr (detail::has_output_reuse<Tensor>::value)
      if (reuses_output() && !anchor) traits::allocate(b.x_saved, x);
    b.size = size;
    b.allocated = true;
    b.computes = 0;
  }

  // Reads the pending sums (the one device→host transfer of a step), combines
  // them across ranks when a reduction is set, and turns the last commit's sums
  // into k and ‖v‖. Returns dx. `norm_count`: the elements of the output norm
  // when it is not over the sampled ones (config.output_norm).
  double read_statistics(std::size_t count, std::size_t norm_count) {
    double sums[statistic_slot_count] = {};
    traits::read(workspace_, sums);
    double values[statistic_slot_count + 2] = {};
    for (std::size_t i = 0; i < statistic_slot_count; ++i) values[i] = sums[i];
    values[statistic_slot_count] = static_cast<double>(count);
    values[statistic_slot_count + 1] = static_cast<double>(norm_count);
    const bool separate_norm_count = config_.output_norm == output_norm_scope::every_element;
    if (reduction_) reduction_(values, statistic_slot_count + (separate_norm_count ? 2 : 1));
    const double n = values[statistic_slot_count];
    auto mean = [&](statistic_slot slot) {
      const double elements = slot == statistic_slot::output_norm && separate_norm_count
                                  ? values[statistic_slot_count + 1]
                                  : n;
      return detail::decision_value(config_, values[static_cast<std::size_t>(slot)] / elements);
    };
    if (commit_pending_) {
      output_norm_ = mean(statistic_slot::output_norm);
      if (commit_measured_)
        transformation_rate_ = detail::next_transformation_rate(config_, transformation_rate_,
                                                                mean(statistic_slot::output_change),
                                                                mean(statistic_slot::input_change_since_compute));
      commit_pending_ = false;
    }
    return mean(statistic_slot::input_change);
  }

  bool scoped_statistics() const noexcept { return detail::needs_scoped_statistics(config_); }

  // dx into the workspace: the backend's pass, or its scoped one for the peer variants.
  void reduce_input_change(const Tensor& x, const buffer_type& reference, std::size_t size) {
    if constexpr (detail::has_scoped_statistics<Tensor>::value) {
      if (scoped_statistics()) {
        traits::reduce_abs_diff_scoped(workspace_, statistic_slot::input_change, x, reference,
                                       detail::scope_of(config_, size));
        return;
      }
    }
    traits::reduce_abs_diff(workspace_, statistic_slot::input_change, x, reference, config_.sampling);
  }

  void commit_anchor(branch_state& anchor, const Tensor& x, const Tensor& out) {
    if constexpr (detail::has_scoped_statistics<Tensor>::value) {
      if (scoped_statistics()) {
        traits::commit_scoped(workspace_, x, out, x_last_, anchor.delta, v_last_, computes_ >= 1,
                              detail::scope_of(config_, anchor.size));
        return;
      }
    }
    traits::commit(workspace_, x, out, x_last_, anchor.delta, computes_ >= 1, config_.sampling);
  }

  // Elements the sampled statistics visit, and those of the output norm.
  std::size_t sampled_elements(std::size_t size) const noexcept {
    return sampled_count(size / config_.batched_conditions, config_.sampling);
  }
  std::size_t norm_elements(std::size_t size) const noexcept {
    return config_.output_norm == output_norm_scope::every_element ? size : sampled_elements(size);
  }

  void begin_anchor(const Tensor& x, pending& p) {
    const step_info& info = p.info_;
    const std::size_t steps = schedule_steps(info);
    const detail::step_kind kind =
        in_generation_ ? sequence_.classify(info.index, steps) : detail::step_kind::start;
    if (kind != detail::step_kind::start) {
      if (p.size_ != anchor_size_)
        throw error(detail::message("input size changed within a generation: ", p.size_, " elements at step ",
                                    info.index, ", ", anchor_size_,
                                    " before (call reset() to start a new generation with other sizes)"));
      if constexpr (detail::has_check_compatible<Tensor>::value) traits::check_compatible(x, x_last_);
    } else {
      start_generation(x, p.size_, info.index, steps);
    }
    const branch_state& anchor = branches_[0];

    step_context& ctx = p.context_;
    ctx.step = info.index;
    ctx.steps = steps;
    ctx.first_step = sequence_.first();
    ctx.progress = progress_of(info);
    ctx.sigma = info.timestep;
    ctx.has_history = computes_ >= 2 && has_prev_ && anchor.computes > 0;

    step_record& record = p.record_;
    record = make_record(info);

    std::optional<verdict> planned = policy_.plan(ctx);
    // After a step that was not taken, dx would span several steps and the
    // cached vector is older than the rule assumes: compute.
    if (kind == detail::step_kind::gap && (!planned || planned->action == action::skip))
      planned = verdict{action::compute, reason::out_of_sequence};
    const bool can_measure = config_.input_change == input_change_reference::previous_step ? has_prev_ : computes_ > 0;
    verdict chosen;
    if (!planned || (config_.measure_forced_steps && can_measure)) {
      const buffer_type& reference =
          (config_.input_change == input_change_reference::last_compute || prev_is_last_) ? x_last_ : x_prev_;
      reduce_input_change(x, reference, p.size_);
      const double input_change = read_statistics(sampled_elements(p.size_), norm_elements(p.size_));
      record.input_change = input_change;
      record.transformation_rate = transformation_rate_;
      record.output_norm = output_norm_;
      if (!planned) {
        // Means of absolute values are never negative; a statistics reduction
        // that made one so would otherwise give a negative ε, and skips.
        const bool usable = std::isfinite(input_change) && input_change >= 0 && std::isfinite(transformation_rate_) &&
                            transformation_rate_ >= 0 && std::isfinite(output_norm_) && output_norm_ > 0 &&
                            (config_.guard != statistics_guard::positive_input_change || input_change > 0);
        if (usable) {
          chosen = policy_.decide(ctx, step_measurement{input_change, transformation_rate_, output_norm_});
        } else {
          chosen = verdict{action::compute, reason::degenerate_statistics};
        }
      }
    }
    if (planned) chosen = *planned;
    record.predicted_error = chosen.predicted_error;
    record.accumulated_error = chosen.accumulated_error;
    if (chosen.action == action::skip && anchor.computes == 0) chosen = verdict{action::compute, reason::no_history};
    p.verdict_ = chosen;
    p.retention_ = detail::retention_of(config_, ctx.progress, ctx.sigma);
  }

  void begin_branch(const Tensor& x, pending& p) {
    const step_info& info = p.info_;
    const bool anchor_open = in_generation_ && anchor_open_serial_ != 0 && anchor_open_step_ == info.index;
    const bool anchor_finished = in_generation_ && sequence_.last() == info.index;
    const bool anchor_failed = in_generation_ && anchor_failed_step_ == info.index;
    if (!anchor_open && !anchor_finished && !anchor_failed) {
      const std::size_t current = in_generation_ ? sequence_.last() : detail::no_step;
      throw error(detail::message("branch ", info.branch, " at step ", info.index,
                                  " before branch 0 of that step: branch 0 (the anchor) must be begun first",
                                  current != detail::no_step ? " (current step is " : "",
                                  current != detail::no_step ? std::to_string(current) : "",
                                  current != detail::no_step ? ")" : ""));
    }
    const branch_state& branch = branches_[info.branch];  // sized for config.branches: a generation is in progress
    if (info.steps != 0 && info.steps != sequence_.steps())
      throw error(detail::message("step_info::steps of branch ", info.branch, " is ", info.steps, " at step ",
                                  info.index, "; branch 0's schedule has ", sequence_.steps()));
    if (branch.last_step == info.index)
      throw error(detail::message("branch ", info.branch, " evaluated twice at step ", info.index,
                                  " (mark the second evaluation of a multi-evaluation sampler with "
                                  "step_info::extra_evaluation)"));
    if (branch.allocated && p.size_ != branch.size)
      throw error(detail::message("input size of branch ", info.branch, " changed within a generation: ", p.size_,
                                  " elements at step ", info.index, ", ", branch.size, " before"));
    if constexpr (detail::has_check_compatible<Tensor>::value) {
      if (branch.allocated) traits::check_compatible(x, branch.delta);
    }
    p.record_ = make_record(info);
    if (anchor_open) {
      // Both decisions before one batched model call (two-phase API).
      p.verdict_ = anchor_open_verdict_;
      p.anchor_serial_ = anchor_open_serial_;
    } else if (anchor_finished) {
      p.verdict_ = decision_;
      p.anchor_serial_ = finished_anchor_serial_;
    } else {
      p.verdict_ = verdict{action::compute, reason::out_of_sequence};
    }
    p.retention_ = detail::retention_of(config_, progress_of(info), info.timestep);
    if (p.verdict_.action == action::skip) {
      if (!branch.allocated || branch.computes == 0) {
        p.verdict_ = verdict{action::compute, reason::no_history};
      } else if (branch.last_compute_step == detail::no_step || branch.last_compute_step < anchor_last_compute_step_) {
        // The anchor's criterion bounds the drift since its own last compute only.
        p.verdict_ = verdict{action::compute, reason::stale_branch};
      }
    }
  }

  void finish_anchor(const pending& p, const Tensor& x, Tensor& out) {
    branch_state& anchor = branches_[0];
    const verdict& chosen = p.verdict_;
    if (chosen.action == action::skip) {
      buffer_type* input_copy =
          config_.input_change == input_change_reference::previous_step ? &x_prev_ : nullptr;
      guarded([&] { skip_output(anchor, x, out, input_copy, p.info_); });
      if (input_copy) {
        has_prev_ = true;
        prev_is_last_ = false;
      }
    } else if (p.retention_ != detail::retention::everything) {
      // Computed outside the window by a peer variant: its cached vector at most.
      // (Not with the last-output predictor: the anchor's output is x_last + Δ,
      // and x_last is kept by computes inside the window only.)
      if (p.retention_ == detail::retention::cached_vector && !reuses_output()) {
        guarded([&] {
          keep_previous_delta(anchor, x);
          traits::store_delta(x, out, anchor.delta);
        });
        computed(anchor, p.info_);
        anchor_last_compute_step_ = p.info_.index;
      }
    } else {
      guarded([&] {
        keep_previous_delta(anchor, x);
        commit_anchor(anchor, x, out);
      });
      ++computes_;
      commit_pending_ = true;
      commit_measured_ = computes_ >= 2;
      has_prev_ = true;
      prev_is_last_ = true;
      computed(anchor, p.info_);
      anchor_last_compute_step_ = p.info_.index;
    }
    policy_.commit(p.context_, chosen);
    sequence_.taken(p.info_.index);
    // The previous step has ended for every branch: their pending evaluations of
    // it are stale (those of this step, begun before this finish, stay).
    for (branch_state& b : branches_)
      if (b.open_step != p.info_.index) b.open_serial = 0;
    anchor.last_step = p.info_.index;
    anchor_open_serial_ = 0;
    anchor_failed_step_ = detail::no_step;
    finished_anchor_serial_ = p.serial_;
    decision_ = chosen;
    ++stats_.reasons[static_cast<std::size_t>(chosen.reason)];
    ++stats_.steps;
    stats_.skipped_steps += chosen.action == action::skip;
    step_record record = p.record_;
    record.action = chosen.action;
    record.reason = chosen.reason;
    finish(record);
  }

  void finish_branch(const pending& p, const Tensor& x, Tensor& out) {
    branch_state& branch = branches_[p.info_.branch];
    // A branch's buffers and size are fixed at its first finished evaluation, so
    // that a failed one (the denoiser threw, a wrong size) leaves nothing behind.
    if (!branch.allocated) allocate_branch(branch, x, p.size_, false);
    if (p.compute()) {
      // A peer variant that keeps nothing outside the window keeps no cached vector there either.
      if (p.retention_ != detail::retention::nothing) {
        guarded([&] {
          keep_previous_delta(branch, x);
          traits::store_delta(x, out, branch.delta);
          if constexpr (detail::has_output_reuse<Tensor>::value)
            if (reuses_output()) traits::save_input(x, branch.x_saved);
        });
        computed(branch, p.info_);
      }
    } else {
      guarded([&] { skip_output(branch, x, out, nullptr, p.info_); });
    }
    branch.last_step = p.info_.index;
    step_record record = p.record_;
    record.action = p.verdict_.action;
    record.reason = p.verdict_.reason;
    finish(record);
  }

  // The cached prediction for a skipped step: x + Δ, x + Δ extrapolated in the
  // timestep, or the last computed output itself.
  void skip_output(const branch_state& branch, const Tensor& x, Tensor& out, buffer_type* input_copy,
                   const step_info& info) {
    if constexpr (detail::has_output_reuse<Tensor>::value) {
      if (reuses_output()) {
        const buffer_type& x_saved = &branch == &branches_[0] ? x_last_ : branch.x_saved;
        traits::apply_saved_output(x, x_saved, branch.delta, out, input_copy);
        return;
      }
    }
    if constexpr (detail::has_extrapolation<Tensor>::value) {
      if (predicts_linearly() && branch.computes >= 2 && branch.timestep_last != branch.timestep_prev) {
        const double weight = (info.timestep - branch.timestep_last) / (branch.timestep_last - branch.timestep_prev);
        // Finite timesteps whose differences overflow give an infinite or NaN
        // weight, which would make every element ±∞ or NaN: no extrapolation then.
        if (std::isfinite(weight)) {
          traits::apply_delta_extrapolated(x, branch.delta, branch.delta_prev, weight, out, input_copy);
          return;
        }
      }
    }
    traits::apply_delta(x, branch.delta, out, input_copy);
  }

  // x: the step's input, whose stream (on a GPU) the copy is queued on.
  void keep_previous_delta(branch_state& branch, [[maybe_unused]] const Tensor& x) {
    if constexpr (detail::has_extrapolation<Tensor>::value)
      if (predicts_linearly() && branch.computes > 0) traits::copy(x, branch.delta, branch.delta_prev);
  }

  static void computed(branch_state& branch, const step_info& info) noexcept {
    ++branch.computes;
    branch.last_compute_step = info.index;
    branch.timestep_prev = branch.timestep_last;
    branch.timestep_last = info.timestep;
  }

  void prepare_output(Tensor& out, const Tensor& like) {
    if constexpr (detail::has_resize_output<Tensor>::value) {
      traits::resize_output(out, like);
    } else {
      if (traits::size(out) != traits::size(like))
        throw error(detail::message("output has ", traits::size(out), " elements, input has ", traits::size(like)));
    }
  }

  // A backend pass that fails half-way leaves buffers in an unknown state:
  // forget the generation's history so that nothing stale is ever reused.
  template <class Pass>
  void guarded(Pass&& pass) {
    try {
      pass();
    } catch (...) {
      in_generation_ = false;
      sequence_.stop();
      throw;
    }
  }

  void finish(const step_record& record) {
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

  std::vector<branch_state> branches_;
  buffer_type x_last_{};  // input of the last computed step (anchor)
  buffer_type x_prev_{};  // input of the previous step, when it was skipped (else x_last_ holds it)
  buffer_type v_last_{};  // the peer variants' scoped statistics: the anchor's last computed output (sampled elements)
  workspace_type workspace_{};
  std::size_t anchor_size_ = 0;
  std::size_t computes_ = 0;  // anchor computed steps in this generation
  std::uint64_t serial_ = 0;  // numbers the pending steps
  std::uint64_t extra_serial_ = 0;
  detail::generation_sequence sequence_;
  std::uint64_t anchor_open_serial_ = 0;      // the anchor's pending step begun and not finished
  std::size_t anchor_open_step_ = 0;          // ... its step
  verdict anchor_open_verdict_{};             // ... and its verdict (other branches may begin before it finishes)
  std::uint64_t finished_anchor_serial_ = 0;  // the anchor's pending step finished last
  std::size_t anchor_failed_step_ = detail::no_step;        // the anchor's denoiser threw at this step
  std::size_t anchor_last_compute_step_ = detail::no_step;  // the step the anchor's cached vector is from
  detail::live_flag live_;
  bool in_generation_ = false;
  bool has_prev_ = false;
  bool prev_is_last_ = false;     // the previous input equals x_last_ (the previous step was computed)
  bool commit_pending_ = false;   // the workspace holds sums of a commit not read yet
  bool commit_measured_ = false;  // ... and they include the output and input change
  double transformation_rate_ = std::numeric_limits<double>::quiet_NaN();
  double output_norm_ = std::numeric_limits<double>::quiet_NaN();
  verdict decision_{};  // the anchor's verdict for the current step
};

}  // namespace easycache
