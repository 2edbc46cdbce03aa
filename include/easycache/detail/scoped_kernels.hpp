// SPDX-License-Identifier: MIT
//
// The host passes of the peer variants' statistics (statistics_scope): the
// sampling pattern within the anchor's slice, the output norm over every
// element or the sampled ones, and sums in a fixed element order, in double
// or (sequential) in one accumulator of the element type (float for 16-bit
// elements), so that they are
// the peers' sums to the last bit. Scalar loops, one pass each; the default
// statistics keep the vectorized passes of host_kernels.hpp.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "../sampling.hpp"
#include "half_convert.hpp"
#include "host_kernels.hpp"

namespace easycache::detail::scoped {

// Elements go through bytes, as in the other host passes (host tensors may
// start at any address); 16-bit elements are computed in float.
using half_convert::put;
using half_convert::value;

template <class S>
using arithmetic = decltype(value(static_cast<const S*>(nullptr), 0));

/// The sampled elements of [0, extent) in ascending order: every element,
/// every stride-th one, or every stride-th row and column of each height x
/// width plane (the elements of host::for_each_chunk and sampled_count).
class sample_cursor {
 public:
  static constexpr std::size_t done = std::numeric_limits<std::size_t>::max();

  sample_cursor(std::size_t extent, const statistics_sampling& s) noexcept
      : extent_(extent), stride_(s.stride <= 1 ? 1 : s.stride), height_(s.height), width_(s.width),
        index_(extent == 0 ? done : 0) {}

  std::size_t index() const noexcept { return index_; }

  void advance() noexcept {
    if (index_ == done) return;
    if (height_ == 0 || stride_ == 1) {
      // Comparing with the distance left keeps index + stride from wrapping.
      index_ = stride_ < extent_ - index_ ? index_ + stride_ : done;
      return;
    }
    if (stride_ < width_ - column_) {
      column_ += stride_;
    } else {
      column_ = 0;
      if (stride_ < height_ - row_in_plane_) {
        row_ += stride_;
        row_in_plane_ += stride_;
      } else {
        row_ += height_ - row_in_plane_;  // row 0 of the next plane
        row_in_plane_ = 0;
      }
    }
    const std::size_t rows = extent_ / width_;
    index_ = row_ < rows ? row_ * width_ + column_ : done;
  }

 private:
  std::size_t extent_, stride_, height_, width_;
  std::size_t index_;
  std::size_t row_ = 0, row_in_plane_ = 0, column_ = 0;
};

template <class S, bool Sequential>
using accumulator = std::conditional_t<Sequential, S, double>;

template <class E, class B, bool Sequential>
double sum_abs_diff(const E* a, const B* b, const statistics_scope& scope) noexcept {
  accumulator<arithmetic<E>, Sequential> sum = 0;
  for (sample_cursor at(scope.extent, scope.sampling); at.index() != sample_cursor::done; at.advance()) {
    const std::size_t i = at.index();
    sum += static_cast<accumulator<arithmetic<E>, Sequential>>(std::abs(value(a, i) - value(b, i)));
  }
  return static_cast<double>(sum);
}

/// Σ|a − b| over the scope's sampled elements (a the tensor, b a cached vector).
template <class E, class B>
double sum_abs_diff(const E* a, const B* b, const statistics_scope& scope) noexcept {
  return scope.sequential ? sum_abs_diff<E, B, true>(a, b, scope) : sum_abs_diff<E, B, false>(a, b, scope);
}

struct commit_sums {
  double output_change = 0;  // Σ|v − v_last|
  double input_change = 0;   // Σ|x − x_last|
  double output_norm = 0;    // Σ|v|
};

template <class E, class B, bool Sequential>
commit_sums commit(const E* x, const E* v, B* x_last, B* delta, B* v_last, std::size_t n, bool measure_change,
                   const statistics_scope& scope) noexcept {
  using S = arithmetic<E>;
  using A = accumulator<S, Sequential>;
  A change = 0, moved = 0, norm = 0;
  sample_cursor sampled(scope.extent < n ? scope.extent : n, scope.sampling);
  for (std::size_t i = 0; i < n; ++i) {
    const S xi = value(x, i), vi = value(v, i);
    if (i == sampled.index()) {
      if (measure_change) {
        change += static_cast<A>(std::abs(vi - static_cast<S>(value(v_last, i))));
        moved += static_cast<A>(std::abs(xi - static_cast<S>(value(x_last, i))));
      }
      if (!scope.norm_every_element) norm += static_cast<A>(std::abs(vi));
      put(v_last, i, vi);
      sampled.advance();
    }
    if (scope.norm_every_element) norm += static_cast<A>(std::abs(vi));
    put(x_last, i, xi);
    put(delta, i, vi - xi);
  }
  return {static_cast<double>(change), static_cast<double>(moved), static_cast<double>(norm)};
}

/// The commit of a computed anchor step, one pass: the scope's sums (output
/// change from the kept output and input change when measure_change, output
/// norm always), then x_last = x, delta = v − x, and v_last = v at the sampled elements.
template <class E, class B>
commit_sums commit(const E* x, const E* v, B* x_last, B* delta, B* v_last, std::size_t n, bool measure_change,
                   const statistics_scope& scope) noexcept {
  return scope.sequential ? commit<E, B, true>(x, v, x_last, delta, v_last, n, measure_change, scope)
                          : commit<E, B, false>(x, v, x_last, delta, v_last, n, measure_change, scope);
}

}  // namespace easycache::detail::scoped
