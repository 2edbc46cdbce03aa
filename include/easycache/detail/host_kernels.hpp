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

/// What a skip would have returned at a computed step, for the commit pass to
/// measure against the step's output (step_record::realized_error) in the
/// same pass: none; x + Δ (the constant predictor); or, for the linear
/// predictor, x + Δ + w·(Δ − Δ_prev) when it extrapolates, x + Δ when it has
/// no weight yet, and then the pass also moves Δ into Δ_prev (the copy the
/// predictor needs before Δ is overwritten, folded into this pass).
enum class prediction_kind { none, constant, linear_constant, linear };

template <class S>
struct prediction_args {
  prediction_kind kind = prediction_kind::none;
  S* delta_prev = nullptr;  // kind linear_constant or linear: Δ_prev, read (linear) and then set to Δ
  S weight = 0;             // kind linear: w
};

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

// total + Σ|a_i − b_i| over [begin, end): 8 lanes in two vectors, in float
// over blocks, each block's lanes added to the running total in double.
inline double sum_abs_diff(const float* a, const float* b, std::size_t begin, std::size_t end,
                           double total = 0) noexcept {
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

// The unsampled commit with its sums, over [0, n); with a prediction (only
// where MeasureChange: a previous compute exists), also Σ|v − p| and, for the
// linear predictor, Δ_prev = Δ.
template <bool Stream, bool MeasureChange, prediction_kind Prediction = prediction_kind::none>
void commit(const float* x, const float* v, float* x_last, float* delta, std::size_t n, double& output_change,
            double& input_change, double& output_norm, float* delta_prev = nullptr, float weight = 0,
            double* skip_error = nullptr) noexcept {
  static_assert(MeasureChange || Prediction == prediction_kind::none, "a prediction needs a previous compute");
  constexpr bool predicts = Prediction != prediction_kind::none;
  constexpr bool moves_delta = Prediction == prediction_kind::linear_constant || Prediction == prediction_kind::linear;
  const simd::f32x4 w = simd::splat(weight);
  std::size_t i = 0;
  while (i + lanes <= n) {
    simd::f32x4 change[2] = {simd::zero(), simd::zero()}, moved[2] = {simd::zero(), simd::zero()},
                norm[2] = {simd::zero(), simd::zero()}, error[2] = {simd::zero(), simd::zero()};
    const std::size_t stop = i + block <= n ? i + block : n - (n - i) % lanes;
    for (; i < stop; i += lanes)
      for (std::size_t h = 0; h < 2; ++h) {
        const std::size_t k = i + 4 * h;
        const simd::f32x4 xi = simd::load(x + k), vi = simd::load(v + k);
        if constexpr (MeasureChange) {
          const simd::f32x4 li = simd::load(x_last + k), di = simd::load(delta + k);
          change[h] = change[h] + simd::abs(vi - (li + di));
          moved[h] = moved[h] + simd::abs(xi - li);
          if constexpr (Prediction == prediction_kind::linear) {
            error[h] = error[h] + simd::abs(vi - (xi + (di + w * (di - simd::load(delta_prev + k)))));
          } else if constexpr (predicts) {
            error[h] = error[h] + simd::abs(vi - (xi + di));
          }
          if constexpr (moves_delta) put<Stream>(delta_prev + k, di);
        }
        norm[h] = norm[h] + simd::abs(vi);
        put<Stream>(x_last + k, xi);
        put<Stream>(delta + k, vi - xi);
      }
    simd::add_lanes(change[0], change[1], output_change);
    simd::add_lanes(moved[0], moved[1], input_change);
    simd::add_lanes(norm[0], norm[1], output_norm);
    if constexpr (predicts) simd::add_lanes(error[0], error[1], *skip_error);
  }
  for (; i < n; ++i) {
    const float xi = load(x, i), vi = load(v, i);
    if constexpr (MeasureChange) {
      const float li = load(x_last, i), di = load(delta, i);
      output_change += static_cast<double>(std::abs(vi - (li + di)));
      input_change += static_cast<double>(std::abs(xi - li));
      if constexpr (Prediction == prediction_kind::linear) {
        *skip_error += static_cast<double>(std::abs(vi - (xi + (di + weight * (di - load(delta_prev, i))))));
      } else if constexpr (predicts) {
        *skip_error += static_cast<double>(std::abs(vi - (xi + di)));
      }
      if constexpr (moves_delta) store(delta_prev, i, di);
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
  double skip_error = 0;     // Σ|v − p|, p the prediction (prediction_kind), when there is one
};

// The prediction's term at element i, before Δ (and Δ_prev) are overwritten.
template <class L, class S>
L skip_term(prediction_kind kind, L xi, L vi, L di, const prediction_args<S>& prediction, std::size_t i) {
  if (kind == prediction_kind::linear) {
    const L dpi = static_cast<L>(load(prediction.delta_prev, i));
    return std::abs(vi - (xi + (di + static_cast<L>(prediction.weight) * (di - dpi))));
  }
  return std::abs(vi - (xi + di));
}

// The sums of a commit over sampled elements of one chunk (before it is overwritten).
template <class S>
void commit_sums_range(const S* x, const S* v, const S* x_last, const S* delta, std::size_t begin, std::size_t end,
                       std::size_t step, bool measure_change, commit_sums& sums,
                       const prediction_args<S>& prediction = {}) {
  using L = lane_type<S>;
  const bool predicts = measure_change && prediction.kind != prediction_kind::none;
  for (std::size_t i = begin; i < end; i += step) {
    const L vi = static_cast<L>(load(v, i));
    sums.output_norm += static_cast<double>(std::abs(vi));
    if (measure_change) {
      const L li = static_cast<L>(load(x_last, i)), xi = static_cast<L>(load(x, i));
      const L di = static_cast<L>(load(delta, i));
      sums.output_change += static_cast<double>(std::abs(vi - (li + di)));
      sums.input_change += static_cast<double>(std::abs(xi - li));
      if (predicts) sums.skip_error += static_cast<double>(skip_term<L>(prediction.kind, xi, vi, di, prediction, i));
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

// Δ_prev = Δ over [begin, end), before commit_writes overwrites Δ (the linear predictor's copy).
template <class S>
void move_delta(const S* delta, S* delta_prev, std::size_t begin, std::size_t end) noexcept {
  for (std::size_t i = begin; i < end; ++i) store(delta_prev, i, load(delta, i));
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
template <bool MeasureChange, prediction_kind Prediction = prediction_kind::none>
void commit_lanes(const double* x, const double* v, double* x_last, double* delta, std::size_t n,
                  commit_sums& sums, const prediction_args<double>& prediction = {}) noexcept {
  constexpr bool predicts = Prediction != prediction_kind::none;
  constexpr bool moves_delta = Prediction == prediction_kind::linear_constant || Prediction == prediction_kind::linear;
  const simd::f64x2 w = simd::splat_f64x2(prediction.weight);
  double* const delta_prev = prediction.delta_prev;
  std::size_t i = 0;
  while (i + lanes <= n) {
    simd::f64x2 change[4], moved[4], norm[4], error[4];
    for (std::size_t h = 0; h < 4; ++h) change[h] = moved[h] = norm[h] = error[h] = simd::zero_f64x2();
    const std::size_t stop = i + block <= n ? i + block : n - (n - i) % lanes;
    for (; i < stop; i += lanes)
      for (std::size_t h = 0; h < 4; ++h) {
        const std::size_t k = i + 2 * h;
        const simd::f64x2 xi = simd::load(x + k), vi = simd::load(v + k);
        if constexpr (MeasureChange) {
          const simd::f64x2 li = simd::load(x_last + k), di = simd::load(delta + k);
          change[h] = change[h] + simd::abs(vi - (li + di));
          moved[h] = moved[h] + simd::abs(xi - li);
          if constexpr (Prediction == prediction_kind::linear) {
            error[h] = error[h] + simd::abs(vi - (xi + (di + w * (di - simd::load(delta_prev + k)))));
          } else if constexpr (predicts) {
            error[h] = error[h] + simd::abs(vi - (xi + di));
          }
          if constexpr (moves_delta) simd::store(delta_prev + k, di);
        }
        norm[h] = norm[h] + simd::abs(vi);
        simd::store(x_last + k, xi);
        simd::store(delta + k, vi - xi);
      }
    simd::add_lanes(change, sums.output_change);
    simd::add_lanes(moved, sums.input_change);
    simd::add_lanes(norm, sums.output_norm);
    if constexpr (predicts) simd::add_lanes(error, sums.skip_error);
  }
  if (i < n) {
    commit_sums_range(x, v, x_last, delta, i, n, 1, MeasureChange, sums, prediction);
    if constexpr (moves_delta) move_delta(delta, delta_prev, i, n);
    commit_writes(x, v, x_last, delta, i, n);
  }
}

// The unsampled float commit over [0, n), its sums added to `sums` (block by
// block, as one call over the whole tensor would add them), with streaming
// stores where `stream`. The 16-bit passes call it tile by tile.
inline void commit_unsampled(const float* x, const float* v, float* x_last, float* delta, std::size_t n,
                             bool measure_change, const prediction_args<float>& prediction, commit_sums& sums,
                             bool stream) noexcept {
  const prediction_kind kind = measure_change ? prediction.kind : prediction_kind::none;
  auto run = [&](auto stream_tag, auto measure_tag, auto prediction_tag) {
    vec::commit<decltype(stream_tag)::value, decltype(measure_tag)::value, decltype(prediction_tag)::value>(
        x, v, x_last, delta, n, sums.output_change, sums.input_change, sums.output_norm, prediction.delta_prev,
        prediction.weight, &sums.skip_error);
  };
  using yes = std::true_type;
  using no = std::false_type;
  using none = std::integral_constant<prediction_kind, prediction_kind::none>;
  using constant = std::integral_constant<prediction_kind, prediction_kind::constant>;
  using linear_constant = std::integral_constant<prediction_kind, prediction_kind::linear_constant>;
  using linear = std::integral_constant<prediction_kind, prediction_kind::linear>;
  auto with_stream = [&](auto stream_tag) {
    if (!measure_change) return run(stream_tag, no{}, none{});
    switch (kind) {
      case prediction_kind::none: return run(stream_tag, yes{}, none{});
      case prediction_kind::constant: return run(stream_tag, yes{}, constant{});
      case prediction_kind::linear_constant: return run(stream_tag, yes{}, linear_constant{});
      case prediction_kind::linear: return run(stream_tag, yes{}, linear{});
    }
  };
  if (stream) {
    with_stream(yes{});
  } else {
    with_stream(no{});
  }
}

/// The commit of a computed anchor step, one pass: the sums (output change and
/// input change since the last compute when measure_change; output norm
/// always), then x_last = x and delta = v − x. With a prediction and
/// measure_change, also Σ|v − p| of what a skip would have returned, and (the
/// linear predictor) Δ_prev = Δ; without measure_change a prediction is ignored.
template <class S>
commit_sums commit(const S* x, const S* v, S* x_last, S* delta, std::size_t n, bool measure_change,
                   const statistics_sampling& sampling, const prediction_args<S>& prediction = {}) {
  commit_sums sums;
  const prediction_kind kind = measure_change ? prediction.kind : prediction_kind::none;
  if (sampling.stride <= 1) {
    if constexpr (std::is_same_v<S, float>) {
      commit_unsampled(x, v, x_last, delta, n, measure_change, prediction, sums,
                       simd::use_streaming_stores(n, x_last, delta));
      return sums;
    } else {
      if (!measure_change) {
        commit_lanes<false>(x, v, x_last, delta, n, sums);
      } else {
        switch (kind) {
          case prediction_kind::none: commit_lanes<true>(x, v, x_last, delta, n, sums); break;
          case prediction_kind::constant:
            commit_lanes<true, prediction_kind::constant>(x, v, x_last, delta, n, sums, prediction);
            break;
          case prediction_kind::linear_constant:
            commit_lanes<true, prediction_kind::linear_constant>(x, v, x_last, delta, n, sums, prediction);
            break;
          case prediction_kind::linear:
            commit_lanes<true, prediction_kind::linear>(x, v, x_last, delta, n, sums, prediction);
            break;
        }
      }
      return sums;
    }
  }
  // The norm misses unsampled elements: v − v is 0 for a finite v and NaN
  // otherwise, so a non-finite output anywhere makes the norm NaN and is never
  // cached (in this pass, which reads every element anyway).
  S finite_check = 0;
  const prediction_args<S> used{kind, prediction.delta_prev, prediction.weight};
  const bool moves = kind == prediction_kind::linear_constant || kind == prediction_kind::linear;
  for_each_chunk(n, sampling, [x, v, x_last, delta, measure_change, &sums, &finite_check, &used, moves](
                                  std::size_t begin, std::size_t end, std::size_t step) {
    if (step) commit_sums_range(x, v, x_last, delta, begin, end, step, measure_change, sums, used);
    if (moves) move_delta(delta, used.delta_prev, begin, end);
    finite_check += commit_writes_checked(x, v, x_last, delta, begin, end);
  });
  sums.output_norm += static_cast<double>(finite_check);
  return sums;
}

}  // namespace easycache::detail::host
