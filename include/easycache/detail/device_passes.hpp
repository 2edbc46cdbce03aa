// SPDX-License-Identifier: MIT
//
// The per-thread work of the CUDA backend's kernels (easycache/backends/cuda.cuh), as
// __host__ __device__ functions: a kernel calls them with its global thread
// index and the grid's thread count; a host test calls them for every thread of
// the same grid and compares the result with the host kernels. Element types
// plug in through element<S> (float here; cuda.cuh adds __half and
// __nv_bfloat16). Arithmetic is in float, like the host kernels' float path.
#pragma once

#include <cmath>
#include <cstddef>

#include "../sampling.hpp"

#if defined(__CUDACC__)
#define EASYCACHE_HOST_DEVICE __host__ __device__
#else
#define EASYCACHE_HOST_DEVICE
#endif

namespace easycache::detail::device {

/// Loads and stores elements of type S as float.
template <class S>
struct element;

template <>
struct element<float> {
  static EASYCACHE_HOST_DEVICE float load(float v) { return v; }
  static EASYCACHE_HOST_DEVICE float store(float v) { return v; }
};

/// Which elements the statistics visit (statistics_sampling), as a map from
/// the j-th visited element to its index and a test of an index: every
/// `stride`-th element, or every `stride`-th row and column of each
/// height x width plane. The same elements as detail::host::for_each_chunk.
struct sampling_map {
  std::size_t stride = 1;
  std::size_t height = 0;
  std::size_t width = 0;

  static sampling_map of(const statistics_sampling& s) noexcept { return {s.stride, s.height, s.width}; }

  /// Number of visited elements among n.
  EASYCACHE_HOST_DEVICE std::size_t count(std::size_t n) const {
    if (stride <= 1) return n;
    if (height == 0) return ceil_div(n);
    return (n / (height * width)) * rows() * columns();
  }

  /// Index of the j-th visited element (j < count(n)).
  EASYCACHE_HOST_DEVICE std::size_t element(std::size_t j) const {
    if (stride <= 1) return j;
    if (height == 0) return j * stride;
    const std::size_t per_plane = rows() * columns();
    const std::size_t plane = j / per_plane, within = j % per_plane;
    return plane * height * width + (within / columns()) * stride * width + (within % columns()) * stride;
  }

  /// Whether element i is visited.
  EASYCACHE_HOST_DEVICE bool visits(std::size_t i) const {
    if (stride <= 1) return true;
    if (height == 0) return i % stride == 0;
    return ((i / width) % height) % stride == 0 && (i % width) % stride == 0;
  }

 private:
  // ⌈n / stride⌉ without n + stride − 1, which wraps for strides near SIZE_MAX.
  EASYCACHE_HOST_DEVICE std::size_t ceil_div(std::size_t n) const { return n / stride + (n % stride != 0); }
  EASYCACHE_HOST_DEVICE std::size_t rows() const { return ceil_div(height); }
  EASYCACHE_HOST_DEVICE std::size_t columns() const { return ceil_div(width); }
};

/// The three sums of a commit (see tensor_traits::commit), one thread's share.
struct commit_sums {
  float output_change = 0;  // Σ|v − (x_last + delta)|
  float input_change = 0;   // Σ|x − x_last|
  float output_norm = 0;    // Σ|v|
};

/// Σ|a − b| over visited elements j = thread, thread + threads, ... < count.
template <class S>
EASYCACHE_HOST_DEVICE float thread_abs_diff(const S* a, const S* b, const sampling_map& map, std::size_t count,
                                            std::size_t thread, std::size_t threads) {
  float sum = 0.0f;
  for (std::size_t j = thread; j < count; j += threads) {
    const std::size_t i = map.element(j);
    sum += fabsf(element<S>::load(a[i]) - element<S>::load(b[i]));
  }
  return sum;
}

/// The commit over elements i = thread, thread + threads, ... < n: the sums over
/// the visited ones (output and input change only when measure_change), then
/// x_last = x and delta = v − x.
template <class S>
EASYCACHE_HOST_DEVICE commit_sums thread_commit(const S* x, const S* v, S* x_last, S* delta, std::size_t n,
                                                const sampling_map& map, bool measure_change, std::size_t thread,
                                                std::size_t threads) {
  commit_sums sums;
  for (std::size_t i = thread; i < n; i += threads) {
    const float xi = element<S>::load(x[i]), vi = element<S>::load(v[i]);
    if (map.visits(i)) {
      sums.output_norm += fabsf(vi);
      if (measure_change) {
        const float last = element<S>::load(x_last[i]);
        sums.output_change += fabsf(vi - (last + element<S>::load(delta[i])));
        sums.input_change += fabsf(xi - last);
      }
    } else {
      // 0 for a finite output; NaN for ±∞ or NaN, which makes the norm NaN so
      // that a non-finite output where the statistics do not look is never cached.
      sums.output_norm += vi - vi;
    }
    x_last[i] = x[i];
    delta[i] = element<S>::store(vi - xi);
  }
  return sums;
}

/// out = x + delta (and copy = x when copy is not null) over i = thread, thread + threads, ... < n.
template <class S>
EASYCACHE_HOST_DEVICE void thread_apply(const S* x, const S* delta, S* out, S* copy, std::size_t n,
                                        std::size_t thread, std::size_t threads) {
  for (std::size_t i = thread; i < n; i += threads) {
    const S xi = x[i];
    if (copy) copy[i] = xi;
    out[i] = element<S>::store(element<S>::load(xi) + element<S>::load(delta[i]));
  }
}

/// out = x + delta + weight·(delta − delta_prev) (and copy = x when copy is not
/// null) over i = thread, thread + threads, ... < n: float arithmetic, rounded
/// once when stored (the device may contract the product and sum into an fma).
template <class S>
EASYCACHE_HOST_DEVICE void thread_apply_extrapolated(const S* x, const S* delta, const S* delta_prev, float weight,
                                                     S* out, S* copy, std::size_t n, std::size_t thread,
                                                     std::size_t threads) {
  for (std::size_t i = thread; i < n; i += threads) {
    const S xi = x[i];
    if (copy) copy[i] = xi;
    const float d = element<S>::load(delta[i]);
    out[i] = element<S>::store(element<S>::load(xi) + (d + weight * (d - element<S>::load(delta_prev[i]))));
  }
}

/// delta = v − x over i = thread, thread + threads, ... < n.
template <class S>
EASYCACHE_HOST_DEVICE void thread_store_delta(const S* x, const S* v, S* delta, std::size_t n, std::size_t thread,
                                              std::size_t threads) {
  for (std::size_t i = thread; i < n; i += threads)
    delta[i] = element<S>::store(element<S>::load(v[i]) - element<S>::load(x[i]));
}

/// Launch shape: threads per block, and the most blocks of a reduction (their
/// partial sums are added in a fixed order, so results do not depend on timing).
inline constexpr unsigned block_threads = 256;
inline constexpr unsigned max_reduction_blocks = 1024;
inline constexpr unsigned max_elementwise_blocks = 8192;

/// Blocks for `work` items (at least one, so that empty tensors still write their sums).
inline unsigned grid_blocks(std::size_t work, unsigned most) noexcept {
  const std::size_t blocks = (work + block_threads - 1) / block_threads;
  return blocks == 0 ? 1u : blocks > most ? most : static_cast<unsigned>(blocks);
}

}  // namespace easycache::detail::device
