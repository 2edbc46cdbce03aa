// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Per-sample decisions inside a batch of independent samples (beyond the
// paper, whose statistics span the whole batch): each sample has its own
// state and decision, and the engine runs the model only for the samples that
// need it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "../controller.hpp"
#include "../error.hpp"
#include "../detail/format.hpp"

namespace easycache {

/// One controller per sample of a batch. `SampleView` is a tensor type that
/// views one sample (an Eigen::Map or easycache::host_buffer over a slice of the
/// batch tensor, an at::Tensor slice, ...); the caller builds the views.
///
///   batch_controller<host_buffer<float>> cache(cfg, batch);
///   const std::vector<bool>& run = cache.begin_step(inputs, {i, sigma});
///   model_on_subset(run, inputs, outputs);   // only where run[s]
///   cache.finish_step(inputs, outputs);      // fills the others from the cache
template <class SampleView, class Policy = easycache_policy>
class batch_controller {
 public:
  using sample_controller = controller<SampleView, Policy>;

  /// `batch` samples, each with its own copy of `cfg` and of the policy.
  batch_controller(const config& cfg, std::size_t batch, const Policy& policy)
      : mask_(batch, false) {
    if (batch == 0) throw error(detail::message("batch_controller: batch must be >= 1 (got 0)"));
    samples_.reserve(batch);
    pending_.reserve(batch);
    begun_.reserve(batch);
    for (std::size_t s = 0; s < batch; ++s) samples_.emplace_back(cfg, policy);
  }
  batch_controller(const config& cfg, std::size_t batch) : batch_controller(cfg, batch, Policy(cfg)) {}

  std::size_t batch() const noexcept { return samples_.size(); }

  /// Decides for every sample; returns the mask of samples that need the model
  /// (valid until the next call). Throws easycache::error for a wrong number of
  /// inputs or any sample's bad input; then no sample has changed (except that,
  /// as step 0 of one controller does, step 0 has started a new generation in
  /// the samples before the refused one) and a step begun before can still be finished.
  const std::vector<bool>& begin_step(const std::vector<SampleView>& inputs, const step_info& info) {
    check_count(inputs.size(), "inputs");
    begun_.clear();
    for (std::size_t s = 0; s < samples_.size(); ++s) begun_.push_back(samples_[s].begin_step(inputs[s], info));
    pending_.swap(begun_);
    finished_ = 0;
    for (std::size_t s = 0; s < samples_.size(); ++s) mask_[s] = pending_[s].compute();
    return mask_;
  }

  /// Completes the step: where the mask was true, `outputs[s]` must hold the
  /// model's output; elsewhere it receives the cached prediction. The samples
  /// finish in order: if one refuses its input or output (easycache::error),
  /// those before it have finished and a second call, with that sample's input
  /// or output fixed, resumes at it.
  void finish_step(const std::vector<SampleView>& inputs, std::vector<SampleView>& outputs) {
    check_count(inputs.size(), "inputs");
    check_count(outputs.size(), "outputs");
    if (pending_.size() != samples_.size())
      throw error(detail::message("batch_controller::finish_step without begin_step"));
    for (; finished_ < samples_.size(); ++finished_)
      samples_[finished_].finish_step(pending_[finished_], inputs[finished_], outputs[finished_]);
    pending_.clear();
    finished_ = 0;
  }

  /// begin_step, then `denoiser(mask)` (which must write outputs[s] for every
  /// s with mask[s]) when any sample needs it, then finish_step.
  template <class BatchDenoiser>
  void step(const std::vector<SampleView>& inputs, std::vector<SampleView>& outputs, const step_info& info,
            BatchDenoiser&& denoiser) {
    const std::vector<bool>& mask = begin_step(inputs, info);
    bool any = false;
    for (bool m : mask) any = any || m;
    if (any) denoiser(mask);
    finish_step(inputs, outputs);
  }

  /// Resets every sample.
  void reset() noexcept {
    for (auto& s : samples_) s.reset();
    pending_.clear();
    finished_ = 0;
  }

  /// The controller of one sample (its stats, trace, policy).
  const sample_controller& sample(std::size_t s) const { return samples_.at(s); }

  /// Counters summed over the samples (calls and skips count sample evaluations).
  statistics stats() const {
    statistics total;
    for (const auto& s : samples_) {
      const statistics& one = s.stats();
      total.steps = std::max(total.steps, one.steps);
      total.evaluations += one.evaluations;
      total.calls += one.calls;
      total.skips += one.skips;
      total.extra_evaluations += one.extra_evaluations;
      total.skipped_steps += one.skipped_steps;
      for (std::size_t r = 0; r < reason_count; ++r) total.reasons[r] += one.reasons[r];
    }
    return total;
  }

 private:
  void check_count(std::size_t n, const char* what) const {
    if (n != samples_.size())
      throw error(detail::message("batch_controller: ", n, " ", what, " for a batch of ", samples_.size()));
  }

  std::vector<sample_controller> samples_;
  std::vector<typename sample_controller::pending> pending_;  // the step begun, one per sample
  std::vector<typename sample_controller::pending> begun_;    // a begin_step under way
  std::size_t finished_ = 0;                                   // samples of the step already finished
  std::vector<bool> mask_;
};

}  // namespace easycache
