// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// What the controller asks of a tensor, over tensor_traits: the checks of
// inputs and outputs, and the choice between a backend's passes (its scoped
// statistics for the peer variants). Kept apart so that the controller reads
// as the algorithm.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../error.hpp"
#include "../tensor_traits.hpp"
#include "../types.hpp"
#include "format.hpp"
#include "peer_rules.hpp"

namespace easycache::detail {

/// `Traits`: tensor_traits<Tensor> (or the controller's placeholder for an unsupported type).
template <class Tensor, class Traits>
struct tensor_ops {
  using buffer_type = typename Traits::buffer_type;
  using workspace_type = typename Traits::workspace_type;

  /// `cfg` validated, and refused when it needs a traits member this type lacks.
  static config validated(const config& cfg) {
    cfg.validate();
    if (cfg.predictor == skip_predictor::linear_in_timestep && !has_extrapolation<Tensor>::value)
      throw error(message("skip_predictor::linear_in_timestep needs tensor_traits::copy and "
                          "apply_delta_extrapolated, which this tensor type's traits do not provide"));
    if (cfg.predictor == skip_predictor::last_output && !has_output_reuse<Tensor>::value)
      throw error(message("skip_predictor::last_output needs tensor_traits::save_input and "
                          "apply_saved_output, which this tensor type's traits do not provide"));
    if (needs_scoped_statistics(cfg) && !has_scoped_statistics<Tensor>::value)
      throw error(message(scoped_statistics_need(cfg),
                          " needs tensor_traits::reduce_abs_diff_scoped and commit_scoped, which this tensor "
                          "type's traits do not provide (the host backends do)"));
    return cfg;
  }

  /// Σ|x − reference| into the workspace's input_change slot.
  static void reduce_input_change(workspace_type& workspace, const Tensor& x, const buffer_type& reference,
                                  const config& cfg, std::size_t size) {
    if constexpr (has_scoped_statistics<Tensor>::value) {
      if (needs_scoped_statistics(cfg)) {
        Traits::reduce_abs_diff_scoped(workspace, statistic_slot::input_change, x, reference, scope_of(cfg, size));
        return;
      }
    }
    Traits::reduce_abs_diff(workspace, statistic_slot::input_change, x, reference, cfg.sampling);
  }

  /// The anchor's commit pass: its sums, then x_last = x and delta = v − x
  /// (and v_last, for the scoped statistics).
  static void commit(workspace_type& workspace, const Tensor& x, const Tensor& v, buffer_type& x_last,
                     buffer_type& delta, [[maybe_unused]] buffer_type& v_last, bool measure_change, const config& cfg,
                     [[maybe_unused]] std::size_t size) {
    if constexpr (has_scoped_statistics<Tensor>::value) {
      if (needs_scoped_statistics(cfg)) {
        Traits::commit_scoped(workspace, x, v, x_last, delta, v_last, measure_change, scope_of(cfg, size));
        return;
      }
    }
    Traits::commit(workspace, x, v, x_last, delta, measure_change, cfg.sampling);
  }

  /// An output the controller cannot resize is written as it is: checked
  /// before the denoiser or a skip writes into it. (A resizable one may be
  /// empty here; it is checked once the denoiser has filled it.)
  static void check_output_before_writing([[maybe_unused]] const Tensor& out) {
    if constexpr (has_check<Tensor>::value && !has_resize_output<Tensor>::value) Traits::check(out);
  }

  /// The denoiser's output has the input's size and fits `state`, a buffer of
  /// the generation (element type, device), when one is given.
  static void check_denoiser_output(const Tensor& out, const step_info& info, std::size_t size,
                                    [[maybe_unused]] const buffer_type* state) {
    const std::size_t produced = Traits::size(out);
    if (produced != size)
      throw error(message("denoiser output has ", produced, " elements at step ", info.index, ", branch ",
                          info.branch, "; the input has ", size));
    if constexpr (has_check<Tensor>::value) Traits::check(out);
    if constexpr (has_check_compatible<Tensor>::value)
      if (state) Traits::check_compatible(out, *state);
  }

  static void check_distinct(const Tensor& x, const Tensor& out, const step_info& info) {
    bool aliased = &x == &out;
    if constexpr (has_same_storage<Tensor>::value) aliased = aliased || Traits::same_storage(x, out);
    if (aliased)
      throw error(message("out must not share memory with x (step ", info.index, ", branch ", info.branch,
                          "): the denoiser would overwrite the input the cache needs"));
  }

  /// out = result, checked first, so that a refused one (the denoiser returned
  /// its input, or a view of it) leaves `out` as it was.
  template <class Result>
  static void assign_result(const Tensor& x, Tensor& out, Result&& result, const step_info& info) {
    if constexpr (has_same_storage<Tensor>::value &&
                  std::is_same_v<std::remove_cv_t<std::remove_reference_t<Result>>, Tensor>) {
      if (&result == &x || Traits::same_storage(x, result))
        throw error(message("the denoiser returned its input, or a tensor sharing its memory (step ", info.index,
                            ", branch ", info.branch, "): the cache needs the input unchanged; return a new tensor"));
    }
    out = std::forward<Result>(result);
  }

  /// `out` sized like `like`: resized when the type allows, else checked.
  static void prepare_output(Tensor& out, const Tensor& like) {
    if constexpr (has_resize_output<Tensor>::value) {
      Traits::resize_output(out, like);
    } else {
      if (Traits::size(out) != Traits::size(like))
        throw error(message("output has ", Traits::size(out), " elements, input has ", Traits::size(like)));
    }
  }
};

}  // namespace easycache::detail
