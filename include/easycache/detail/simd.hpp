// SPDX-License-Identifier: MIT
//
// Four floats (and two doubles) at a time, for the fused host passes: SSE2 on
// x86-64 (always present there), NEON on AArch64, plain arrays elsewhere. Left
// to itself the compiler vectorizes the 8-lane reductions across the wrong
// loop (shuffles and spills, measured at about 60% of memcpy bandwidth);
// spelled out, each load feeds one add. The lane order of every sum is the
// scalar code's, so results do not depend on which branch is compiled. Loads
// and stores take any address (a float* at an odd byte included):
// _mm_loadu_ps / _mm_storeu_ps on SSE2, a 16-byte memcpy elsewhere (one
// unaligned ldr / str on AArch64), never a dereference of the pointer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define EASYCACHE_DETAIL_SIMD_SSE2 1
#elif defined(__ARM_NEON) || defined(__aarch64__)
#include <arm_neon.h>
#define EASYCACHE_DETAIL_SIMD_NEON 1
#endif

/// Latents of at least this many bytes are written with non-temporal
/// (streaming) stores on x86-64, which skip the read of each line before it is
/// written and leave the cache to what the next pass reads. Off by default
/// (SIZE_MAX): on the machine of docs/performance.md they made steps on 16-30 MB
/// latents 5-100x slower (lines still in the last-level cache must be flushed
/// first) and gained nothing reliable on 256 MB ones. Define it before
/// including easycache to try it on another machine (0: always stream).
#ifndef EASYCACHE_STREAMING_STORES_MIN_BYTES
#define EASYCACHE_STREAMING_STORES_MIN_BYTES SIZE_MAX
#endif

namespace easycache::detail::simd {

#if defined(EASYCACHE_DETAIL_SIMD_SSE2)
struct f32x4 {
  __m128 v;
};
inline f32x4 zero() noexcept { return {_mm_setzero_ps()}; }
inline f32x4 splat(float a) noexcept { return {_mm_set1_ps(a)}; }
inline f32x4 load(const float* p) noexcept { return {_mm_loadu_ps(p)}; }
inline void store(float* p, f32x4 a) noexcept { _mm_storeu_ps(p, a.v); }
inline f32x4 operator+(f32x4 a, f32x4 b) noexcept { return {_mm_add_ps(a.v, b.v)}; }
inline f32x4 operator-(f32x4 a, f32x4 b) noexcept { return {_mm_sub_ps(a.v, b.v)}; }
inline f32x4 operator*(f32x4 a, f32x4 b) noexcept { return {_mm_mul_ps(a.v, b.v)}; }
inline f32x4 abs(f32x4 a) noexcept { return {_mm_andnot_ps(_mm_set1_ps(-0.0f), a.v)}; }
inline void lanes(f32x4 a, float (&out)[4]) noexcept { _mm_storeu_ps(out, a.v); }
inline constexpr bool has_streaming_stores = true;
// p must be 16-byte aligned.
inline void stream(float* p, f32x4 a) noexcept { _mm_stream_ps(p, a.v); }
inline void stream_fence() noexcept { _mm_sfence(); }

struct f64x2 {
  __m128d v;
};
inline f64x2 zero_f64x2() noexcept { return {_mm_setzero_pd()}; }
inline f64x2 load(const double* p) noexcept { return {_mm_loadu_pd(p)}; }
inline void store(double* p, f64x2 a) noexcept { _mm_storeu_pd(p, a.v); }
inline f64x2 operator+(f64x2 a, f64x2 b) noexcept { return {_mm_add_pd(a.v, b.v)}; }
inline f64x2 operator-(f64x2 a, f64x2 b) noexcept { return {_mm_sub_pd(a.v, b.v)}; }
inline f64x2 abs(f64x2 a) noexcept { return {_mm_andnot_pd(_mm_set1_pd(-0.0), a.v)}; }
inline f64x2 operator*(f64x2 a, f64x2 b) noexcept { return {_mm_mul_pd(a.v, b.v)}; }
inline f64x2 splat_f64x2(double a) noexcept { return {_mm_set1_pd(a)}; }
inline void lanes(f64x2 a, double (&out)[2]) noexcept { _mm_storeu_pd(out, a.v); }
#elif defined(EASYCACHE_DETAIL_SIMD_NEON)
struct f32x4 {
  float32x4_t v;
};
inline f32x4 zero() noexcept { return {vdupq_n_f32(0.0f)}; }
inline f32x4 splat(float a) noexcept { return {vdupq_n_f32(a)}; }
inline f32x4 load(const float* p) noexcept {
  f32x4 a;
  std::memcpy(&a.v, reinterpret_cast<const unsigned char*>(p), sizeof a.v);
  return a;
}
inline void store(float* p, f32x4 a) noexcept { std::memcpy(reinterpret_cast<unsigned char*>(p), &a.v, sizeof a.v); }
inline f32x4 operator+(f32x4 a, f32x4 b) noexcept { return {vaddq_f32(a.v, b.v)}; }
inline f32x4 operator-(f32x4 a, f32x4 b) noexcept { return {vsubq_f32(a.v, b.v)}; }
inline f32x4 operator*(f32x4 a, f32x4 b) noexcept { return {vmulq_f32(a.v, b.v)}; }
inline f32x4 abs(f32x4 a) noexcept { return {vabsq_f32(a.v)}; }
inline void lanes(f32x4 a, float (&out)[4]) noexcept { vst1q_f32(out, a.v); }
inline constexpr bool has_streaming_stores = false;
inline void stream(float* p, f32x4 a) noexcept { store(p, a); }
inline void stream_fence() noexcept {}
#else
struct f32x4 {
  float v[4];
};
inline f32x4 zero() noexcept { return {{0.0f, 0.0f, 0.0f, 0.0f}}; }
inline f32x4 splat(float a) noexcept { return {{a, a, a, a}}; }
inline f32x4 load(const float* p) noexcept {
  f32x4 a;
  std::memcpy(a.v, reinterpret_cast<const unsigned char*>(p), sizeof a.v);
  return a;
}
inline void store(float* p, f32x4 a) noexcept { std::memcpy(reinterpret_cast<unsigned char*>(p), a.v, sizeof a.v); }
inline f32x4 operator+(f32x4 a, f32x4 b) noexcept { return {{a.v[0] + b.v[0], a.v[1] + b.v[1], a.v[2] + b.v[2], a.v[3] + b.v[3]}}; }
inline f32x4 operator-(f32x4 a, f32x4 b) noexcept { return {{a.v[0] - b.v[0], a.v[1] - b.v[1], a.v[2] - b.v[2], a.v[3] - b.v[3]}}; }
inline f32x4 operator*(f32x4 a, f32x4 b) noexcept { return {{a.v[0] * b.v[0], a.v[1] * b.v[1], a.v[2] * b.v[2], a.v[3] * b.v[3]}}; }
inline f32x4 abs(f32x4 a) noexcept {
  for (int j = 0; j < 4; ++j) a.v[j] = a.v[j] < 0.0f ? -a.v[j] : a.v[j];
  return a;
}
inline void lanes(f32x4 a, float (&out)[4]) noexcept {
  for (int j = 0; j < 4; ++j) out[j] = a.v[j];
}
inline constexpr bool has_streaming_stores = false;
inline void stream(float* p, f32x4 a) noexcept { store(p, a); }
inline void stream_fence() noexcept {}
#endif

#if !defined(EASYCACHE_DETAIL_SIMD_SSE2)
// Two doubles as a plain pair everywhere but SSE2 (32-bit Arm NEON has no
// double vectors); the compiler pairs the two operations itself.
struct f64x2 {
  double v[2];
};
inline f64x2 zero_f64x2() noexcept { return {{0.0, 0.0}}; }
inline f64x2 load(const double* p) noexcept {
  f64x2 a;
  std::memcpy(a.v, reinterpret_cast<const unsigned char*>(p), sizeof a.v);
  return a;
}
inline void store(double* p, f64x2 a) noexcept { std::memcpy(reinterpret_cast<unsigned char*>(p), a.v, sizeof a.v); }
inline f64x2 operator+(f64x2 a, f64x2 b) noexcept { return {{a.v[0] + b.v[0], a.v[1] + b.v[1]}}; }
inline f64x2 operator-(f64x2 a, f64x2 b) noexcept { return {{a.v[0] - b.v[0], a.v[1] - b.v[1]}}; }
inline f64x2 operator*(f64x2 a, f64x2 b) noexcept { return {{a.v[0] * b.v[0], a.v[1] * b.v[1]}}; }
inline f64x2 splat_f64x2(double a) noexcept { return {{a, a}}; }
inline f64x2 abs(f64x2 a) noexcept {
  for (int j = 0; j < 2; ++j) a.v[j] = a.v[j] < 0.0 ? -a.v[j] : a.v[j];
  return a;
}
inline void lanes(f64x2 a, double (&out)[2]) noexcept {
  for (int j = 0; j < 2; ++j) out[j] = a.v[j];
}
#endif

/// Adds the lanes of two accumulators (lanes 0-3, then 4-7) to `total` in
/// order, in double: the scalar code's order over its 8 lanes.
inline void add_lanes(f32x4 low, f32x4 high, double& total) noexcept {
  float values[4];
  lanes(low, values);
  for (float value : values) total += static_cast<double>(value);
  lanes(high, values);
  for (float value : values) total += static_cast<double>(value);
}

/// The same for four accumulators of two doubles (lanes 0-1, ..., 6-7).
inline void add_lanes(const f64x2 (&accumulators)[4], double& total) noexcept {
  double values[2];
  for (const f64x2& accumulator : accumulators) {
    lanes(accumulator, values);
    total += values[0];
    total += values[1];
  }
}

inline bool aligned16(const void* p) noexcept { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

/// Whether stores of an `n`-float pass go around the cache: a large latent,
/// a CPU with streaming stores, and every destination 16-byte aligned (or null).
inline bool use_streaming_stores(std::size_t n, const float* a, const float* b = nullptr) noexcept {
  return has_streaming_stores && n * sizeof(float) >= EASYCACHE_STREAMING_STORES_MIN_BYTES && aligned16(a) &&
         (b == nullptr || aligned16(b));
}

}  // namespace easycache::detail::simd
