// SPDX-License-Identifier: MIT
//
// Fused passes over host memory, shared by every host backend. Each function
// is one pass: it reads each input once and writes each output once.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "../sampling.hpp"
#include "simd.hpp"

namespace easycache::detail::host {

// Float sums are accumulated in float over short blocks, in several
// independent lanes (so that the compiler can vectorize without -ffast-math),
// and the block sums in double: accurate to a few float ulps of the block.
inline constexpr std::size_t lanes = 8;
inline constexpr std::size_t block = 1024;

template <class S>
using lane_type = std::conditional_t<std::is_same_v<S, double>, double, float>;

// Element i of p, and its store. Host tensors may start at any byte (ggml
// tensors inside packed buffers, a float* at an odd address), so every element
// is copied through a byte pointer, which promises no alignment: the same
// instructions as p[i] on x86-64 and AArch64, vectorized alike, and defined
// behaviour where p[i] is not.
template <class S>
inline S load(const S* p, std::size_t i) noexcept {
  S value;
  std::memcpy(&value, reinterpret_cast<const unsigned char*>(p) + i * sizeof(S), sizeof(S));
  return value;
}
template <class S>
inline void store(S* p, std::size_t i, S value) noexcept {
  std::memcpy(reinterpret_cast<unsigned char*>(p) + i * sizeof(S), &value, sizeof(S));
}

// Calls chunk(begin, end, sample_step) over [0, n) in order. The sampled
// elements of a chunk are begin, begin + sample_step, ... < end; sample_step 0
// means none. Stride 1 gives the single chunk [0, n) with step 1.
template <class Chunk>
void for_each_chunk(std::size_t n, const statistics_sampling& sampling, Chunk&& chunk) {
  // A stride beyond the extent it steps over samples the same elements as the
  // extent itself; clamping it keeps s * block and i + s from wrapping around.
  const std::size_t extent = sampling.height == 0 ? n : std::max(sampling.height, sampling.width);
  const std::size_t s = std::min(sampling.stride, std::max(extent, std::size_t{1}));
  if (s <= 1) {
    chunk(std::size_t{0}, n, std::size_t{1});
  } else if (sampling.height == 0) {
    const std::size_t length = s * block;
    for (std::size_t begin = 0; begin < n; begin += length) chunk(begin, begin + length < n ? begin + length : n, s);
  } else {
    const std::size_t width = sampling.width;
    std::size_t row = 0;
    for (std::size_t begin = 0; begin < n; begin += width, ++row) {
      const std::size_t end = begin + width < n ? begin + width : n;
      chunk(begin, end, (row % sampling.height) % s == 0 ? s : std::size_t{0});
    }
  }
}

// The float passes, four lanes at a time, and the double sum, two (simd.hpp).
// Each has the scalar code's lane order, and writes with streaming stores
// where `Stream`.
namespace vec {

template <bool Stream>
inline void put(float* p, simd::f32x4 a) noexcept {
  if constexpr (Stream) {
    simd::stream(p, a);
  } else {
    simd::store(p, a);
  }
}

// Σ|a_i − b_i| over [begin, end): 8 lanes in two vectors, in float over blocks.
inline double sum_abs_diff(const float* a, const float* b, std::size_t begin, std::size_t end) noexcept {
  double total = 0;
  std::size_t i = begin;
  while (i + lanes <= end) {
    simd::f32x4 low = simd::zero(), high = simd::zero();
    const std::size_t stop = i + block <= end ? i + block : end - (end - i) % lanes;
    for (; i < stop; i += lanes) {
      low = low + simd::abs(simd::load(a + i) - simd::load(b + i));
      high = high + simd::abs(simd::load(a + i + 4) - simd::load(b + i + 4));
    }
    simd::add_lanes(low, high, total);
  }
  for (; i < end; ++i) total += static_cast<double>(std::abs(load(a, i) - load(b, i)));
  return total;
}

// The same over doubles: 8 lanes in four vectors, in double.
inline double sum_abs_diff(const double* a, const double* b, std::size_t begin, std::size_t end) noexcept {
  double total = 0;
  std::size_t i = begin;
  while (i + lanes <= end) {
    simd::f64x2 acc[4];
    for (simd::f64x2& lane_pair : acc) lane_pair = simd::zero_f64x2();
    const std::size_t stop = i + block <= end ? i + block : end - (end - i) % lanes;
    for (; i < stop; i += lanes)
      for (std::size_t h = 0; h < 4; ++h)
        acc[h] = acc[h] + simd::abs(simd::load(a + i + 2 * h) - simd::load(b + i + 2 * h));
    simd::add_lanes(acc, total);
  }
  for (; i < end; ++i) total += std::abs(load(a, i) - load(b, i));
  return total;
}

// The vector loops run to n rounded down to 4, the scalar tails from there: a
// tail that starts where a `i + 4 <= n` loop stopped made g++ -O3 warn of an
// iteration that would overflow (-Waggressive-loop-optimizations).
template <bool Stream>
void add(const float* x, const float* delta, float* out, float* copy, std::size_t n) noexcept {
  const std::size_t vector_end = n - n % 4;
  if (copy) {
    for (std::size_t i = 0; i < vector_end; i += 4) {
      const simd::f32x4 xi = simd::load(x + i);
      put<Stream>(copy + i, xi);
      put<Stream>(out + i, xi + simd::load(delta + i));
    }
    for (std::size_t i = vector_end; i < n; ++i) {
      const float xi = load(x, i);
      store(copy, i, xi);
      store(out, i, xi + load(delta, i));
    }
  } else {
    for (std::size_t i = 0; i < vector_end; i += 4) put<Stream>(out + i, simd::load(x + i) + simd::load(delta + i));
    for (std::size_t i = vector_end; i < n; ++i) store(out, i, load(x, i) + load(delta, i));
  }
  if constexpr (Stream) simd::stream_fence();
}

template <bool Stream>
void add_extrapolated(const float* x, const float* delta, const float* delta_prev, float weight, float* out,
                      float* copy, std::size_t n) noexcept {
  const simd::f32x4 w = simd::splat(weight);
  const std::size_t vector_end = n - n % 4;
  for (std::size_t i = 0; i < vector_end; i += 4) {
    const simd::f32x4 xi = simd::load(x + i), di = simd::load(delta + i);
    if (copy) put<Stream>(copy + i, xi);
    put<Stream>(out + i, xi + (di + w * (di - simd::load(delta_prev + i))));
  }
  for (std::size_t i = vector_end; i < n; ++i) {
    const float xi = load(x, i), di = load(delta, i);
    if (copy) store(copy, i, xi);
    store(out, i, xi + (di + weight * (di - load(delta_prev, i))));
  }
  if constexpr (Stream) simd::stream_fence();
}

// The unsampled commit with its sums, over [0, n).
template <bool Stream, bool MeasureChange>
void commit(const float* x, const float* v, float* x_last, float* delta, std::size_t n, double& output_change,
            double& input_change, double& output_norm) noexcept {
  std::size_t i = 0;
  while (i + lanes <= n) {
    simd::f32x4 change[2] = {simd::zero(), simd::zero()}, moved[2] = {simd::zero(), simd::zero()},
                norm[2] = {simd::zero(), simd::zero()};
    const std::size_t stop = i + block <= n ? i + block : n - (n - i) % lanes;
    for (; i < stop; i += lanes)
      for (std::size_t h = 0; h < 2; ++h) {
        const std::size_t k = i + 4 * h;
        const simd::f32x4 xi = simd::load(x + k), vi = simd::load(v + k);
        if constexpr (MeasureChange) {
          const simd::f32x4 li = simd::load(x_last + k), di = simd::load(delta + k);
          change[h] = change[h] + simd::abs(vi - (li + di));
          moved[h] = moved[h] + simd::abs(xi - li);
        }
        norm[h] = norm[h] + simd::abs(vi);
        put<Stream>(x_last + k, xi);
        put<Stream>(delta + k, vi - xi);
      }
    simd::add_lanes(change[0], change[1], output_change);
    simd::add_lanes(moved[0], moved[1], input_change);
    simd::add_lanes(norm[0], norm[1], output_norm);
  }
  for (; i < n; ++i) {
    const float xi = load(x, i), vi = load(v, i);
    if constexpr (MeasureChange) {
      const float li = load(x_last, i);
      output_change += static_cast<double>(std::abs(vi - (li + load(delta, i))));
      input_change += static_cast<double>(std::abs(xi - li));
    }
    output_norm += static_cast<double>(std::abs(vi));
    store(x_last, i, xi);
    store(delta, i, vi - xi);
  }
  if constexpr (Stream) simd::stream_fence();
}

}  // namespace vec

// Σ|a_i − b_i| over i = begin, begin + step, ... < end.
template <class S>
double sum_abs_diff_range(const S* a, const S* b, std::size_t begin, std::size_t end, std::size_t step) {
  using L = lane_type<S>;
  double total = 0;
  if (step == 1) return vec::sum_abs_diff(a, b, begin, end);
  for (std::size_t i = begin; i < end; i += step)
    total += static_cast<double>(std::abs(static_cast<L>(load(a, i)) - static_cast<L>(load(b, i))));
  return total;
}

/// Σ|a − b| over the sampled elements.
template <class S>
double sum_abs_diff(const S* a, const S* b, std::size_t n, const statistics_sampling& sampling) {
  double total = 0;
  for_each_chunk(n, sampling, [&](std::size_t begin, std::size_t end, std::size_t step) {
    if (step) total += sum_abs_diff_range(a, b, begin, end, step);
  });
  return total;
}

/// out = x + delta; and copy = x when copy is not null. One pass.
template <class S>
void add(const S* x, const S* delta, S* out, S* copy, std::size_t n) {
  if constexpr (std::is_same_v<S, float>) {
    if (simd::use_streaming_stores(n, out, copy)) {
      vec::add<true>(x, delta, out, copy, n);
    } else {
      vec::add<false>(x, delta, out, copy, n);
    }
  } else if (copy) {
    for (std::size_t i = 0; i < n; ++i) {
      const S xi = load(x, i);
      store(copy, i, xi);
      store(out, i, xi + load(delta, i));
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) store(out, i, load(x, i) + load(delta, i));
  }
}

/// out = x + delta + weight·(delta − delta_prev); and copy = x when copy is not null.
template <class S>
void add_extrapolated(const S* x, const S* delta, const S* delta_prev, double weight, S* out, S* copy,
                      std::size_t n) {
  const S w = static_cast<S>(weight);
  if constexpr (std::is_same_v<S, float>) {
    if (simd::use_streaming_stores(n, out, copy)) {
      vec::add_extrapolated<true>(x, delta, delta_prev, w, out, copy, n);
    } else {
      vec::add_extrapolated<false>(x, delta, delta_prev, w, out, copy, n);
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const S xi = load(x, i), di = load(delta, i);
      if (copy) store(copy, i, xi);
      store(out, i, xi + (di + w * (di - load(delta_prev, i))));
    }
  }
}

/// out = a + b; and copy = x when copy is not null.
template <class S>
void add_buffers(const S* a, const S* b, const S* x, S* out, S* copy, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (copy) store(copy, i, load(x, i));
    store(out, i, load(a, i) + load(b, i));
  }
}

/// to = from.
template <class S>
void copy(const S* from, S* to, std::size_t n) {
  if (n) std::memcpy(to, from, n * sizeof(S));
}

/// delta = v − x.
template <class S>
void subtract(const S* v, const S* x, S* delta, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) store(delta, i, load(v, i) - load(x, i));
}

struct commit_sums {
  double output_change = 0;  // Σ|v − (x_last + delta)|
  double input_change = 0;   // Σ|x − x_last|
  double output_norm = 0;    // Σ|v|
};

// The sums of a commit over sampled elements of one chunk (before it is overwritten).
template <class S>
void commit_sums_range(const S* x, const S* v, const S* x_last, const S* delta, std::size_t begin, std::size_t end,
                       std::size_t step, bool measure_change, commit_sums& sums) {
  using L = lane_type<S>;
  for (std::size_t i = begin; i < end; i += step) {
    const L vi = static_cast<L>(load(v, i));
    sums.output_norm += static_cast<double>(std::abs(vi));
    if (measure_change) {
      const L li = static_cast<L>(load(x_last, i));
      sums.output_change += static_cast<double>(std::abs(vi - (li + static_cast<L>(load(delta, i)))));
      sums.input_change += static_cast<double>(std::abs(static_cast<L>(load(x, i)) - li));
    }
  }
}

// The commit's writes over [begin, end): x_last = x, delta = v − x. The
// pointers are parameters, not captures by reference: the byte stores of
// store() may alias any object in memory, and a pointer kept there would be
// reloaded at every element (which stops the vectorizer).
template <class S>
void commit_writes(const S* x, const S* v, S* x_last, S* delta, std::size_t begin, std::size_t end) noexcept {
  for (std::size_t i = begin; i < end; ++i) {
    const S xi = load(x, i);
    store(x_last, i, xi);
    store(delta, i, load(v, i) - xi);
  }
}

// commit_writes, also returning the sum of v − v (0, or NaN for a non-finite v).
template <class S>
S commit_writes_checked(const S* x, const S* v, S* x_last, S* delta, std::size_t begin, std::size_t end) noexcept {
  S check = 0;
  for (std::size_t i = begin; i < end; ++i) {
    const S xi = load(x, i), vi = load(v, i);
    check += vi - vi;
    store(x_last, i, xi);
    store(delta, i, vi - xi);
  }
  return check;
}

// The unsampled commit of doubles over [0, n): the 8 lanes in four vectors,
// in double over blocks. Left to the vectorizer (once the loads were memcpys)
// the lane loop was unrolled first and then vectorized across iterations of
// the block loop, with shuffles: 1.4x (clang 14) to 2.4x (g++ 12) slower.
template <bool MeasureChange>
void commit_lanes(const double* x, const double* v, double* x_last, double* delta, std::size_t n,
                  commit_sums& sums) noexcept {
  std::size_t i = 0;
  while (i + lanes <= n) {
    simd::f64x2 change[4], moved[4], norm[4];
    for (std::size_t h = 0; h < 4; ++h) change[h] = moved[h] = norm[h] = simd::zero_f64x2();
    const std::size_t stop = i + block <= n ? i + block : n - (n - i) % lanes;
    for (; i < stop; i += lanes)
      for (std::size_t h = 0; h < 4; ++h) {
        const std::size_t k = i + 2 * h;
        const simd::f64x2 xi = simd::load(x + k), vi = simd::load(v + k);
        if constexpr (MeasureChange) {
          const simd::f64x2 li = simd::load(x_last + k), di = simd::load(delta + k);
          change[h] = change[h] + simd::abs(vi - (li + di));
          moved[h] = moved[h] + simd::abs(xi - li);
        }
        norm[h] = norm[h] + simd::abs(vi);
        simd::store(x_last + k, xi);
        simd::store(delta + k, vi - xi);
      }
    simd::add_lanes(change, sums.output_change);
    simd::add_lanes(moved, sums.input_change);
    simd::add_lanes(norm, sums.output_norm);
  }
  if (i < n) {
    commit_sums_range(x, v, x_last, delta, i, n, 1, MeasureChange, sums);
    commit_writes(x, v, x_last, delta, i, n);
  }
}

/// The commit of a computed anchor step, one pass: the sums (output change and
/// input change since the last compute when measure_change; output norm
/// always), then x_last = x and delta = v − x.
template <class S>
commit_sums commit(const S* x, const S* v, S* x_last, S* delta, std::size_t n, bool measure_change,
                   const statistics_sampling& sampling) {
  commit_sums sums;
  if (sampling.stride <= 1) {
    if constexpr (std::is_same_v<S, float>) {
      const bool stream = simd::use_streaming_stores(n, x_last, delta);
      auto& [change, moved, norm] = sums;
      if (stream && measure_change) vec::commit<true, true>(x, v, x_last, delta, n, change, moved, norm);
      if (stream && !measure_change) vec::commit<true, false>(x, v, x_last, delta, n, change, moved, norm);
      if (!stream && measure_change) vec::commit<false, true>(x, v, x_last, delta, n, change, moved, norm);
      if (!stream && !measure_change) vec::commit<false, false>(x, v, x_last, delta, n, change, moved, norm);
      return sums;
    } else {
      if (measure_change) {
        commit_lanes<true>(x, v, x_last, delta, n, sums);
      } else {
        commit_lanes<false>(x, v, x_last, delta, n, sums);
      }
      return sums;
    }
  }
  // The norm misses unsampled elements: v − v is 0 for a finite v and NaN
  // otherwise, so a non-finite output anywhere makes the norm NaN and is never
  // cached (in this pass, which reads every element anyway).
  S finite_check = 0;
  for_each_chunk(n, sampling, [x, v, x_last, delta, measure_change, &sums, &finite_check](
                                  std::size_t begin, std::size_t end, std::size_t step) {
    if (step) commit_sums_range(x, v, x_last, delta, begin, end, step, measure_change, sums);
    finite_check += commit_writes_checked(x, v, x_last, delta, begin, end);
  });
  sums.output_norm += static_cast<double>(finite_check);
  return sums;
}

}  // namespace easycache::detail::host
