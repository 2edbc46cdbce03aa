// SPDX-License-Identifier: MIT
//
// The host passes for tensors of element type E with the controller's cached
// vectors of element type B: E = B = float or double go straight to
// host_kernels.hpp; a 16-bit E (float16, bfloat16), with B float or E, is
// processed in tiles of the float passes' block (1024 elements): each tile of
// every 16-bit operand is converted to float on the stack, the float pass of
// host_kernels.hpp runs on it, and the tiles it wrote are converted back. Each
// byte of memory is still read once and written once per pass (the tiles stay
// in L1), and every sum is added in the float pass's order: the results are
// the float pass's on the converted values, bit for bit. (No streaming stores
// inside tiles.)
#pragma once

#include <cmath>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "../sampling.hpp"
#include "half_convert.hpp"
#include "host_kernels.hpp"

namespace easycache::detail::host::mixed {

using half_convert::is_16bit;

/// Whether the pair (E, B) needs the converting passes.
template <class E, class B>
inline constexpr bool converts = is_16bit<E> || is_16bit<B>;

// A tile is the float passes' block, so that the tiles' sums are added in the
// order of the float pass over the whole tensor: the same bits.
inline constexpr std::size_t tile = block;  // 4 KiB of floats per operand

// One operand's tile as floats: the memory itself for float, a staged
// conversion otherwise. read() converts in, written() converts back out.
template <class S, bool Const = false>
class tile_of {
 public:
  using pointer = std::conditional_t<Const, const S*, S*>;
  tile_of(pointer base, bool fast) noexcept : base_(base), fast_(fast) {}

  /// The floats of [begin, begin + count), converted in.
  auto read(std::size_t begin, std::size_t count) noexcept {
    if constexpr (std::is_same_v<S, float>) {
      return base_ + begin;
    } else {
      half_convert::decode(base_ + begin, staged_, count, fast_);
      return static_cast<std::conditional_t<Const, const float*, float*>>(staged_);
    }
  }
  /// Where to write the floats of [begin, ...), without reading them first.
  float* target(std::size_t begin) noexcept {
    static_assert(!Const, "a read-only tile");
    if constexpr (std::is_same_v<S, float>) {
      return base_ + begin;
    } else {
      return staged_;
    }
  }
  /// Converts what was written to target() or read() back out.
  void written(std::size_t begin, std::size_t count) noexcept {
    if constexpr (!std::is_same_v<S, float> && !Const) half_convert::encode(staged_, base_ + begin, count, fast_);
  }

 private:
  pointer base_;
  bool fast_;
  float staged_[std::is_same_v<S, float> ? 1 : tile];
};

template <class S>
using input_tile = tile_of<S, true>;

// Calls body(begin, count) over [0, n) in tiles.
template <class Body>
void for_each_tile(std::size_t n, Body&& body) {
  for (std::size_t begin = 0; begin < n; begin += tile) body(begin, n - begin < tile ? n - begin : tile);
}

/// Σ|a − b| over the sampled elements.
template <class E, class B>
double sum_abs_diff(const E* a, const B* b, std::size_t n, const statistics_sampling& sampling) {
  if constexpr (!converts<E, B>) {
    return host::sum_abs_diff<E>(a, b, n, sampling);
  } else {
    const bool fast = half_convert::uses_f16c();
    double total = 0;
    if (sampling.stride <= 1) {
      input_tile<E> ta(a, fast);
      input_tile<B> tb(b, fast);
      for_each_tile(n, [&](std::size_t begin, std::size_t count) {
        total = vec::sum_abs_diff(ta.read(begin, count), tb.read(begin, count), 0, count, total);
      });
      return total;
    }
    for_each_chunk(n, sampling, [&](std::size_t begin, std::size_t end, std::size_t step) {
      if (step)
        for (std::size_t i = begin; i < end; i += step)
          total += static_cast<double>(std::abs(half_convert::value(a, i) - half_convert::value(b, i)));
    });
    return total;
  }
}

/// out = x + delta; and copy = x when copy is not null.
template <class E, class B>
void add(const E* x, const B* delta, E* out, B* copy, std::size_t n) {
  if constexpr (!converts<E, B>) {
    host::add<E>(x, delta, out, copy, n);
  } else {
    const bool fast = half_convert::uses_f16c();
    input_tile<E> tx(x, fast);
    input_tile<B> td(delta, fast);
    tile_of<E> to(out, fast);
    tile_of<B> tc(copy, fast);
    for_each_tile(n, [&](std::size_t begin, std::size_t count) {
      host::add<float>(tx.read(begin, count), td.read(begin, count), to.target(begin),
                       copy ? tc.target(begin) : nullptr, count);
      to.written(begin, count);
      if (copy) tc.written(begin, count);
    });
  }
}

/// out = x + delta + weight·(delta − delta_prev); and copy = x when copy is not null.
template <class E, class B>
void add_extrapolated(const E* x, const B* delta, const B* delta_prev, double weight, E* out, B* copy,
                      std::size_t n) {
  if constexpr (!converts<E, B>) {
    host::add_extrapolated<E>(x, delta, delta_prev, weight, out, copy, n);
  } else {
    const bool fast = half_convert::uses_f16c();
    input_tile<E> tx(x, fast);
    input_tile<B> td(delta, fast), tp(delta_prev, fast);
    tile_of<E> to(out, fast);
    tile_of<B> tc(copy, fast);
    for_each_tile(n, [&](std::size_t begin, std::size_t count) {
      host::add_extrapolated<float>(tx.read(begin, count), td.read(begin, count), tp.read(begin, count), weight,
                                    to.target(begin), copy ? tc.target(begin) : nullptr, count);
      to.written(begin, count);
      if (copy) tc.written(begin, count);
    });
  }
}

/// out = a + b; and copy = x when copy is not null.
template <class E, class B>
void add_buffers(const B* a, const B* b, const E* x, E* out, B* copy, std::size_t n) {
  if constexpr (!converts<E, B>) {
    host::add_buffers<E>(a, b, x, out, copy, n);
  } else {
    const bool fast = half_convert::uses_f16c();
    input_tile<B> ta(a, fast), tb(b, fast);
    input_tile<E> tx(x, fast);
    tile_of<E> to(out, fast);
    tile_of<B> tc(copy, fast);
    for_each_tile(n, [&](std::size_t begin, std::size_t count) {
      host::add_buffers<float>(ta.read(begin, count), tb.read(begin, count),
                               copy ? tx.read(begin, count) : nullptr, to.target(begin),
                               copy ? tc.target(begin) : nullptr, count);
      to.written(begin, count);
      if (copy) tc.written(begin, count);
    });
  }
}

/// to = x, converted to the buffer's type.
template <class E, class B>
void save_input(const E* x, B* to, std::size_t n) {
  if constexpr (std::is_same_v<E, B>) {
    host::copy<E>(x, to, n);
  } else {
    const bool fast = half_convert::uses_f16c();
    input_tile<E> tx(x, fast);
    tile_of<B> tt(to, fast);
    for_each_tile(n, [&](std::size_t begin, std::size_t count) {
      const float* from = tx.read(begin, count);
      float* into = tt.target(begin);
      std::memcpy(into, from, count * sizeof(float));
      tt.written(begin, count);
    });
  }
}

/// delta = v − x.
template <class E, class B>
void subtract(const E* v, const E* x, B* delta, std::size_t n) {
  if constexpr (!converts<E, B>) {
    host::subtract<E>(v, x, delta, n);
  } else {
    const bool fast = half_convert::uses_f16c();
    input_tile<E> tv(v, fast), tx(x, fast);
    tile_of<B> td(delta, fast);
    for_each_tile(n, [&](std::size_t begin, std::size_t count) {
      host::subtract<float>(tv.read(begin, count), tx.read(begin, count), td.target(begin), count);
      td.written(begin, count);
    });
  }
}

/// What a skip would have returned (prediction_args), with Δ_prev in the buffer's type.
template <class B>
struct prediction {
  prediction_kind kind = prediction_kind::none;
  B* delta_prev = nullptr;
  double weight = 0;
};

/// The prediction of tensor_traits' commit_prediction: x + Δ with no Δ_prev
/// (the constant predictor); with one (the linear predictor), x + Δ + w·(Δ −
/// Δ_prev) when it extrapolates and x + Δ until then, moving Δ into Δ_prev.
template <class B>
prediction<B> prediction_for(B* delta_prev, bool extrapolate, double weight) noexcept {
  prediction<B> p;
  p.kind = !delta_prev ? prediction_kind::constant
                       : extrapolate ? prediction_kind::linear : prediction_kind::linear_constant;
  p.delta_prev = delta_prev;
  p.weight = weight;
  return p;
}

/// host::commit over a tensor of E and buffers of B (see there): one pass.
template <class E, class B>
commit_sums commit(const E* x, const E* v, B* x_last, B* delta, std::size_t n, bool measure_change,
                   const statistics_sampling& sampling, const prediction<B>& predicted = {}) {
  if constexpr (!converts<E, B>) {
    prediction_args<E> args;
    args.kind = predicted.kind;
    args.delta_prev = predicted.delta_prev;
    args.weight = static_cast<E>(predicted.weight);
    return host::commit<E>(x, v, x_last, delta, n, measure_change, sampling, args);
  } else {
    const prediction_kind kind = measure_change ? predicted.kind : prediction_kind::none;
    const bool moves = kind == prediction_kind::linear_constant || kind == prediction_kind::linear;
    const bool fast = half_convert::uses_f16c();
    commit_sums sums;
    if (sampling.stride <= 1) {
      input_tile<E> tx(x, fast), tv(v, fast);
      tile_of<B> tl(x_last, fast), td(delta, fast), tp(predicted.delta_prev, fast);
      for_each_tile(n, [&](std::size_t begin, std::size_t count) {
        prediction_args<float> args;
        args.kind = kind;
        args.weight = static_cast<float>(predicted.weight);
        if (kind == prediction_kind::linear) {
          args.delta_prev = tp.read(begin, count);
        } else if (moves) {
          args.delta_prev = tp.target(begin);
        }
        float* last = measure_change ? tl.read(begin, count) : tl.target(begin);
        float* d = measure_change ? td.read(begin, count) : td.target(begin);
        commit_unsampled(tx.read(begin, count), tv.read(begin, count), last, d, count, measure_change, args, sums,
                         false);
        tl.written(begin, count);
        td.written(begin, count);
        if (moves) tp.written(begin, count);
      });
      return sums;
    }
    // Sampled statistics: the sums over the sampled elements, the writes over
    // all of them, and v − v summed into the norm (NaN for a non-finite output
    // anywhere), as host::commit does.
    float finite_check = 0;
    B* const delta_prev = predicted.delta_prev;
    const float weight = static_cast<float>(predicted.weight);
    for_each_chunk(n, sampling, [&](std::size_t begin, std::size_t end, std::size_t step) {
      using half_convert::put;
      using half_convert::value;
      if (step)
        for (std::size_t i = begin; i < end; i += step) {
          const float vi = value(v, i);
          sums.output_norm += static_cast<double>(std::abs(vi));
          if (!measure_change) continue;
          const float xi = value(x, i), li = value(x_last, i), di = value(delta, i);
          sums.output_change += static_cast<double>(std::abs(vi - (li + di)));
          sums.input_change += static_cast<double>(std::abs(xi - li));
          if (kind == prediction_kind::linear) {
            sums.skip_error +=
                static_cast<double>(std::abs(vi - (xi + (di + weight * (di - value(delta_prev, i))))));
          } else if (kind != prediction_kind::none) {
            sums.skip_error += static_cast<double>(std::abs(vi - (xi + di)));
          }
        }
      for (std::size_t i = begin; i < end; ++i) {
        const float xi = value(x, i), vi = value(v, i);
        if (moves) put(delta_prev, i, value(delta, i));
        finite_check += vi - vi;
        put(x_last, i, xi);
        put(delta, i, vi - xi);
      }
    });
    sums.output_norm += static_cast<double>(finite_check);
    return sums;
  }
}

}  // namespace easycache::detail::host::mixed
