// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The controller's third state machine: what each branch keeps from its
// computed steps, and what a skipped step returns (config::predictor). The
// tensor work is the backend's (tensor_traits); this part chooses the pass.
#pragma once

#include <cmath>
#include <cstddef>

#include "../config.hpp"
#include "../error.hpp"
#include "../tensor_traits.hpp"
#include "../types.hpp"
#include "format.hpp"
#include "generation.hpp"

namespace easycache::detail {

/// The cached state of one branch, and the skip predictor over it.
/// `Traits`: tensor_traits<Tensor> (or the controller's placeholder for an unsupported type).
template <class Tensor, class Traits>
struct branch_cache {
  using buffer_type = typename Traits::buffer_type;

  buffer_type delta{};       // Δ = v − x of the last computed step
  buffer_type delta_prev{};  // skip_predictor::linear_in_timestep: Δ of the computed step before
  buffer_type x_saved{};     // skip_predictor::last_output, branches after the first: the last computed input
  std::size_t size = 0;
  std::size_t computes = 0;  // computed steps of this branch in the generation
  double timestep_last = 0;
  double timestep_prev = 0;
  std::size_t last_compute_step = no_step;  // the step its cached vector is from
  bool allocated = false;                   // sized for the current generation

  /// Throws easycache::error when the predictor needs a timestep `info` lacks.
  static void check_timestep(const step_info& info, skip_predictor predictor) {
    if (predictor == skip_predictor::linear_in_timestep && !info.extra_evaluation && !std::isfinite(info.timestep))
      throw error(message("the linear_in_timestep predictor needs a finite step_info::timestep (got ",
                          info.timestep, " at step ", info.index, ", branch ", info.branch, ")"));
  }

  /// A generation begins: nothing kept (buffers stay for reuse).
  void forget() noexcept {
    allocated = false;
    computes = 0;
    last_compute_step = no_step;
  }

  /// Sizes the buffers the predictor needs. The anchor's last computed input
  /// is the controller's x_last already, so it needs no x_saved.
  void allocate(const Tensor& x, std::size_t elements, bool anchor, skip_predictor predictor) {
    Traits::allocate(delta, x);
    if constexpr (has_extrapolation<Tensor>::value)
      if (predictor == skip_predictor::linear_in_timestep) Traits::allocate(delta_prev, x);
    if constexpr (has_output_reuse<Tensor>::value)
      if (predictor == skip_predictor::last_output && !anchor) Traits::allocate(x_saved, x);
    size = elements;
    allocated = true;
    computes = 0;
  }

  /// Before a compute overwrites Δ: the linear predictor keeps the one before.
  /// x: the step's input, whose stream (on a GPU) the copy is queued on.
  void keep_previous_delta([[maybe_unused]] const Tensor& x, skip_predictor predictor) {
    if constexpr (has_extrapolation<Tensor>::value)
      if (predictor == skip_predictor::linear_in_timestep && computes > 0) Traits::copy(x, delta, delta_prev);
  }

  /// A computed step of a branch after the first: Δ = v − x (and x for last_output).
  void store(const Tensor& x, const Tensor& v, skip_predictor predictor) {
    Traits::store_delta(x, v, delta);
    if constexpr (has_output_reuse<Tensor>::value)
      if (predictor == skip_predictor::last_output) Traits::save_input(x, x_saved);
  }

  /// The computed step `index` at `timestep` is now the one the cache is from.
  void computed(std::size_t index, double timestep) noexcept {
    ++computes;
    last_compute_step = index;
    timestep_prev = timestep_last;
    timestep_last = timestep;
  }

  /// The cached prediction for a skipped step at `timestep`: x + Δ, x + Δ
  /// extrapolated in the timestep, or the last computed output itself
  /// (`anchor_input`: the anchor's last computed input, null for other branches).
  /// `input_copy`, when not null, receives x in the same pass.
  void predict(const Tensor& x, Tensor& out, buffer_type* input_copy, double timestep,
               [[maybe_unused]] const buffer_type* anchor_input, skip_predictor predictor) const {
    if constexpr (has_output_reuse<Tensor>::value) {
      if (predictor == skip_predictor::last_output) {
        Traits::apply_saved_output(x, anchor_input ? *anchor_input : x_saved, delta, out, input_copy);
        return;
      }
    }
    if constexpr (has_extrapolation<Tensor>::value) {
      double weight = 0;
      if (predictor == skip_predictor::linear_in_timestep && extrapolation_weight(timestep, weight)) {
        Traits::apply_delta_extrapolated(x, delta, delta_prev, weight, out, input_copy);
        return;
      }
    }
    Traits::apply_delta(x, delta, out, input_copy);
  }

  /// The linear predictor's weight at `timestep`, (t − t_a) / (t_a − t_b), when it
  /// extrapolates: two computes with distinct timesteps and a finite weight
  /// (finite timesteps whose differences overflow give an infinite or NaN
  /// weight, which would make every element ±∞ or NaN: no extrapolation then).
  bool extrapolation_weight(double timestep, double& weight) const noexcept {
    if (computes < 2 || timestep_last == timestep_prev) return false;
    weight = (timestep - timestep_last) / (timestep_last - timestep_prev);
    return std::isfinite(weight);
  }
};

}  // namespace easycache::detail
