// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The vocabulary of the statistics: which elements the passes visit, and the
// slots their sums go to. Standard library only, so that the kernels in
// detail/ depend on it and on nothing of the configuration.
#pragma once

#include <cstddef>

namespace easycache {

/// Which elements the statistics (the norms) are computed over.
///
/// stride 1 uses every element (the reference). With stride s > 1 and a layout of
/// [..., height, width] (row-major, width innermost), only elements whose row and
/// column are multiples of s take part, like ComfyUI's 8× spatial subsampling.
/// With height and width left 0 the tensor is seen as one long row: every s-th
/// element. The cached vectors themselves are always kept whole.
struct statistics_sampling {
  std::size_t stride = 1;
  std::size_t height = 0;
  std::size_t width = 0;
};

/// Slots of the per-step sums a backend accumulates. Each slot holds a *sum* of
/// absolute values over the sampled elements; the controller divides by the
/// element count (so that partial sums can be combined across ranks).
enum class statistic_slot : std::size_t {
  input_change = 0,                ///< Σ|x_t − reference input| (dx)
  output_change = 1,               ///< Σ|v_t − v_at_last_compute| (k's numerator)
  input_change_since_compute = 2,  ///< Σ|x_t − x_at_last_compute| (k's denominator)
  output_norm = 3,                 ///< Σ|v_t|
};
inline constexpr std::size_t statistic_slot_count = 4;

/// The statistics the peer variants ask for (config::batched_conditions,
/// output_norm, arithmetic), for the optional reduce_abs_diff_scoped and
/// commit_scoped members: the `sampling` pattern over the first `extent`
/// elements only (the anchor's slice of a batched call), the output norm over
/// every element or those, and the order of summation.
struct statistics_scope {
  statistics_sampling sampling;
  /// Elements [0, extent) are sampled from (a whole number of sampling planes).
  std::size_t extent = 0;
  /// Σ|v| over every element of the tensor, not over the sampled ones.
  bool norm_every_element = false;
  /// Each sum one accumulator of the element type, in element order
  /// (stable-diffusion.cpp's float sums); otherwise each term in double, in
  /// element order.
  bool sequential = false;
};

/// Number of elements the statistics visit for a tensor of `size` elements.
inline std::size_t sampled_count(std::size_t size, const statistics_sampling& sampling) noexcept {
  const std::size_t s = sampling.stride;
  if (s <= 1) return size;
  // ⌈n / s⌉ without n + s − 1, which wraps for strides near SIZE_MAX.
  auto ceil_div = [s](std::size_t n) { return n / s + (n % s != 0); };
  if (sampling.height == 0) return ceil_div(size);
  const std::size_t plane = sampling.height * sampling.width;
  const std::size_t planes = plane ? size / plane : 0;
  return planes * ceil_div(sampling.height) * ceil_div(sampling.width);
}

}  // namespace easycache
