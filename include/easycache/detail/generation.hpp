// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Where a generation starts and ends: the anchor's step sequence, kept apart
// from the caching rules so that the controller reads as the algorithm.
#pragma once

#include <cstddef>
#include <limits>

#include "../error.hpp"
#include "format.hpp"

namespace easycache::detail {

inline constexpr std::size_t no_step = std::numeric_limits<std::size_t>::max();

/// How branch 0's evaluation of a step relates to the generation in progress.
enum class step_kind {
  start,  ///< begins a new generation at this step
  next,   ///< the step after the last one taken
  gap,    ///< a later step: the steps in between were not taken (a failure, left out)
};

/// The anchor's steps within one generation of a schedule of `steps` steps.
///
/// A generation starts at whatever step the sampler starts (img2img starts
/// mid-schedule) and ends with the schedule's last step. Branch 0 at a step
/// before the last one taken, at any step once the last one is taken, or with
/// another schedule length begins a new generation; at the step taken last it
/// is refused (an unmarked second evaluation); later steps continue it.
class generation_sequence {
 public:
  /// Throws easycache::error for a repeat of the last step taken.
  step_kind classify(std::size_t index, std::size_t steps) const {
    if (!active_ || last_ == no_step || steps != steps_) return step_kind::start;
    if (complete_ && !(index == last_ && last_ != first_)) return step_kind::start;
    if (index < last_) return step_kind::start;
    if (index == last_)
      throw error(message("branch 0 evaluated twice at step ", index,
                          ": mark the second evaluation of a multi-evaluation sampler (Heun, DPM2) with "
                          "step_info::extra_evaluation, or call reset() to start the generation again"));
    return index == last_ + 1 ? step_kind::next : step_kind::gap;
  }

  void start(std::size_t first, std::size_t steps) noexcept {
    active_ = true;
    complete_ = false;
    first_ = first;
    steps_ = steps;
    last_ = no_step;
  }
  /// Branch 0 finished step `index`.
  void taken(std::size_t index) noexcept {
    last_ = index;
    complete_ = index + 1 >= steps_;
  }
  void stop() noexcept { active_ = false; }

  std::size_t first() const noexcept { return first_; }
  std::size_t steps() const noexcept { return steps_; }
  /// The last step branch 0 finished, or no_step.
  std::size_t last() const noexcept { return last_; }

 private:
  std::size_t first_ = 0;
  std::size_t steps_ = 0;
  std::size_t last_ = no_step;
  bool active_ = false;
  bool complete_ = false;
};

/// True until moved from; a moved-from controller refuses to step instead of
/// reading the buffers it no longer has.
class live_flag {
 public:
  live_flag() = default;
  live_flag(const live_flag&) = default;
  live_flag& operator=(const live_flag&) = default;
  live_flag(live_flag&& other) noexcept : live_(other.live_) { other.live_ = false; }
  live_flag& operator=(live_flag&& other) noexcept {
    if (this != &other) {
      live_ = other.live_;
      other.live_ = false;
    }
    return *this;
  }
  ~live_flag() = default;
  explicit operator bool() const noexcept { return live_; }

 private:
  bool live_ = true;
};

}  // namespace easycache::detail
