// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The controller's first state machine: which evaluations may begin and
// finish, in which order, and which generation they belong to. Plain numbers
// only (step indices, branch indices, serials), so that it reads and tests
// apart from the caching rules.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../decision.hpp"
#include "../error.hpp"
#include "../types.hpp"
#include "format.hpp"
#include "generation.hpp"

namespace easycache::detail {

/// What a branch other than the anchor follows at its step.
struct anchor_follow {
  verdict decision;              ///< the anchor's verdict, or compute/out_of_sequence
  std::uint64_t anchor_serial;   ///< the anchor evaluation it follows (0: none, it failed)
};

/// Order and staleness of the evaluations of one controller.
///
/// Every begun evaluation gets a serial; a branch (and the extra evaluations)
/// has at most one open at a time, and finishing one that is not the latest
/// of its branch is refused. Branch 0 (the anchor) decides each step for all
/// branches: the others begin once it has begun (two-phase, batched guidance)
/// or finished, and finish after it. A failed anchor evaluation lets the
/// other branches of its step go on, computed.
class step_sequencer {
 public:
  /// A generation is in progress.
  bool active() const noexcept { return active_; }
  const generation_sequence& sequence() const noexcept { return sequence_; }

  /// The schedule length an evaluation belongs to, or easycache::error when
  /// its branch is not one of `branches` or its step is beyond the schedule.
  /// Other branches and extra evaluations are of branch 0's schedule unless
  /// they say otherwise.
  std::size_t schedule_of(const step_info& info, std::size_t configured_steps, std::size_t branches) const {
    if (info.branch >= branches)
      throw error(message("branch ", info.branch, " out of range: config.branches is ", branches));
    const bool own = info.steps != 0 || (info.branch == 0 && !info.extra_evaluation) || !active_;
    const std::size_t steps = own ? (info.steps ? info.steps : configured_steps) : sequence_.steps();
    if (info.index >= steps)
      throw error(message("step ", info.index, " out of range: the schedule has ", steps, " steps (",
                          info.steps ? "step_info::steps" : own ? "config.steps" : "the generation's schedule",
                          "; steps are 0-based; pass step_info::steps for a schedule of another length)"));
    return steps;
  }

  /// Where branch 0's evaluation of `index` stands (throws for a repeat of the last step taken).
  step_kind classify_anchor(std::size_t index, std::size_t steps) const {
    return active_ ? sequence_.classify(index, steps) : step_kind::start;
  }

  void check_extra_evaluation(const step_info& info) const {
    if (!active_)
      throw error(message("extra evaluation at step ", info.index,
                          " without a generation in progress: a generation starts with branch 0's "
                          "evaluation of a step"));
  }

  /// What branch `info.branch` follows at its step; throws easycache::error
  /// when the anchor has not begun that step, for another schedule length, or
  /// for a second evaluation of the branch at the step.
  anchor_follow follow_anchor(const step_info& info) const {
    const bool open = active_ && anchor_open_serial_ != 0 && anchor_open_step_ == info.index;
    const bool finished = active_ && sequence_.last() == info.index;
    const bool failed = active_ && anchor_failed_step_ == info.index;
    if (!open && !finished && !failed) {
      const std::size_t current = active_ ? sequence_.last() : no_step;
      throw error(message("branch ", info.branch, " at step ", info.index,
                          " before branch 0 of that step: branch 0 (the anchor) must be begun first",
                          current != no_step ? " (current step is " : "",
                          current != no_step ? std::to_string(current) : "", current != no_step ? ")" : ""));
    }
    if (info.steps != 0 && info.steps != sequence_.steps())
      throw error(message("step_info::steps of branch ", info.branch, " is ", info.steps, " at step ", info.index,
                          "; branch 0's schedule has ", sequence_.steps()));
    if (branches_[info.branch].last_step == info.index)
      throw error(message("branch ", info.branch, " evaluated twice at step ", info.index,
                          " (mark the second evaluation of a multi-evaluation sampler with "
                          "step_info::extra_evaluation)"));
    // Both decisions before one batched model call (two-phase API).
    if (open) return {anchor_open_verdict_, anchor_open_serial_};
    if (finished) return {decision_, finished_anchor_serial_};
    return {verdict{action::compute, reason::out_of_sequence}, 0};
  }

  /// Records a begun evaluation; returns its serial.
  std::uint64_t opened(const step_info& info, const verdict& decided) noexcept {
    const std::uint64_t serial = ++serial_;
    if (info.extra_evaluation) {
      extra_serial_ = serial;
    } else if (info.branch == 0) {
      anchor_open_serial_ = serial;
      anchor_open_step_ = info.index;
      anchor_open_verdict_ = decided;
    } else {
      branches_[info.branch].open_serial = serial;
      branches_[info.branch].open_step = info.index;
    }
    return serial;
  }

  /// Throws easycache::error unless the evaluation begun with `serial` (and
  /// following the anchor's `anchor_serial`) may finish now.
  void check_finishable(const step_info& info, std::uint64_t serial, std::uint64_t anchor_serial,
                        bool same_controller) const {
    const bool current = same_controller && serial != 0 && active_ &&
                         (info.extra_evaluation || info.branch < branches_.size()) && open_serial_of(info) == serial;
    if (!current)
      throw error(message("finish_step for step ", info.index, ", branch ", info.branch,
                          " that is not the latest begin_step of that branch (finished or begun again "
                          "already, or stale after reset(), a new generation, the next step, or from another "
                          "controller)"));
    if (!info.extra_evaluation && info.branch != 0 && anchor_serial != 0 && anchor_serial != finished_anchor_serial_) {
      if (anchor_serial == anchor_open_serial_)
        throw error(message("finish_step for branch ", info.branch, " at step ", info.index,
                            " before branch 0 of that step has finished: begin the branches in any order "
                            "after branch 0, then finish branch 0 first"));
      throw error(message("finish_step for branch ", info.branch, " at step ", info.index,
                          ": branch 0 of that step was begun again since this branch began; begin it again"));
    }
  }

  /// The evaluation is finishing: it can no longer be finished again.
  void close(const step_info& info) noexcept { open_serial_of(info) = 0; }

  /// Branch 0 finished step `index` with `decided`: the previous step has
  /// ended for every branch, so their pending evaluations of it are stale
  /// (those of this step, begun before this finish, stay).
  void anchor_finished(std::size_t index, std::uint64_t serial, const verdict& decided) noexcept {
    sequence_.taken(index);
    for (branch_slot& b : branches_)
      if (b.open_step != index) b.open_serial = 0;
    branches_[0].last_step = index;
    anchor_open_serial_ = 0;
    anchor_failed_step_ = no_step;
    finished_anchor_serial_ = serial;
    decision_ = decided;
  }

  void branch_finished(std::size_t branch, std::size_t index) noexcept { branches_[branch].last_step = index; }

  /// Branch 0's evaluation begun with `serial` failed after it began (the
  /// denoiser threw): the other branches of its step, and the next step, go on computed.
  void anchor_failed(const step_info& info, std::uint64_t serial) noexcept {
    if (info.extra_evaluation || info.branch != 0 || anchor_open_serial_ != serial) return;
    anchor_open_serial_ = 0;
    anchor_failed_step_ = info.index;
  }

  /// Ends the generation in progress: every pending evaluation is stale.
  void stop() noexcept {
    active_ = false;
    sequence_.stop();
  }

  /// Forgets every evaluation, for a generation of `branches` branches about to start.
  void clear(std::size_t branches) {
    stop();
    branches_.assign(branches, branch_slot{});
    extra_serial_ = 0;
    anchor_open_serial_ = finished_anchor_serial_ = 0;
    anchor_failed_step_ = no_step;
  }

  /// The generation starts at step `first` of a schedule of `steps`.
  void start(std::size_t first, std::size_t steps) noexcept {
    sequence_.start(first, steps);
    active_ = true;
  }

 private:
  struct branch_slot {
    std::uint64_t open_serial = 0;    // the pending evaluation begun and not finished
    std::size_t open_step = no_step;  // ... and its step
    std::size_t last_step = no_step;  // the step of its last finished evaluation
  };

  std::uint64_t& open_serial_of(const step_info& info) noexcept {
    if (info.extra_evaluation) return extra_serial_;
    return info.branch == 0 ? anchor_open_serial_ : branches_[info.branch].open_serial;
  }
  std::uint64_t open_serial_of(const step_info& info) const noexcept {
    if (info.extra_evaluation) return extra_serial_;
    return info.branch == 0 ? anchor_open_serial_ : branches_[info.branch].open_serial;
  }

  generation_sequence sequence_;
  std::vector<branch_slot> branches_;
  std::uint64_t serial_ = 0;  // numbers the evaluations begun
  std::uint64_t extra_serial_ = 0;
  std::uint64_t anchor_open_serial_ = 0;      // the anchor's pending evaluation begun and not finished
  std::size_t anchor_open_step_ = 0;          // ... its step
  verdict anchor_open_verdict_{};             // ... and its verdict (other branches may begin before it finishes)
  std::uint64_t finished_anchor_serial_ = 0;  // the anchor's evaluation finished last
  std::size_t anchor_failed_step_ = no_step;  // the anchor's denoiser threw at this step
  verdict decision_{};                        // the anchor's verdict for the step finished last
  bool active_ = false;
};

}  // namespace easycache::detail
