// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// 16-bit floating-point element types for host tensors: IEEE 754 binary16
// (ggml's GGML_TYPE_F16, at::kHalf) and bfloat16 (GGML_TYPE_BF16,
// at::kBFloat16). Storage types only: two bytes with the format's bits, and
// conversions to and from float (round to nearest even, NaN kept a NaN, ±Inf
// and subnormals exact). The host passes compute in float (host_buffer.hpp).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace easycache {

namespace detail::half_bits {

inline std::uint32_t bits_of(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float float_of(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// All ones where `condition`, else zero.
inline std::uint32_t mask(bool condition) noexcept { return 0u - static_cast<std::uint32_t>(condition); }

// Both conversions are written as selects between a few integer results, with
// no branch and no float subnormal in any intermediate, so that loops of them
// vectorize and stay exact when the caller runs with denormals flushed (DAZ/FTZ).
inline float from_binary16(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t magnitude = h & 0x7fffu;
  // Normal: rebias the exponent (127 − 15 = 112). Inf and NaN: all-ones exponent, the mantissa kept.
  const std::uint32_t normal = (magnitude + (112u << 10)) << 13;
  const std::uint32_t mantissa = magnitude & 0x03ffu;
  const std::uint32_t special = 0x7f800000u | (mantissa << 13) | (mask(mantissa != 0) & 0x00400000u);  // NaN: quiet
  // Subnormal (and zero): mantissa · 2^-24, exact in float and itself a normal float.
  const std::uint32_t subnormal = bits_of(static_cast<float>(magnitude) * 5.9604644775390625e-8f);
  const std::uint32_t is_subnormal = mask(magnitude < 0x0400u), is_special = mask(magnitude >= 0x7c00u);
  return float_of(sign | (subnormal & is_subnormal) | (special & is_special) | (normal & ~(is_subnormal | is_special)));
}

inline std::uint16_t to_binary16(float f) noexcept {
  const std::uint32_t u = bits_of(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t magnitude = u & 0x7fffffffu;
  // A normal binary16: rebias the exponent and round the 13 dropped bits to
  // nearest even; a carry out of the mantissa bumps the exponent, up to Inf
  // from 65520 on.
  const std::uint32_t normal = (magnitude + 0xc8000fffu + ((magnitude >> 13) & 1u)) >> 13;
  // Below 2^-14: adding 0.5 (whose ulp is binary16's subnormal step, 2^-24)
  // rounds the value to a multiple of 2^-24 in the FPU's round-to-nearest-even,
  // left in the low mantissa bits; 2^-14 itself rounds up to the smallest normal.
  const std::uint32_t subnormal = bits_of(float_of(magnitude) + 0.5f) - 0x3f000000u;
  // ≥ 65520: Inf; a NaN: quiet, with the top of its payload.
  const std::uint32_t special = 0x7c00u | (mask(magnitude > 0x7f800000u) & (0x0200u | ((magnitude >> 13) & 0x03ffu)));
  const std::uint32_t is_subnormal = mask(magnitude < 0x38800000u), is_special = mask(magnitude >= 0x477ff000u);
  return static_cast<std::uint16_t>(sign | (subnormal & is_subnormal) | (special & is_special) |
                                    (normal & ~(is_subnormal | is_special)));
}

inline float from_bfloat16(std::uint16_t b) noexcept { return float_of(static_cast<std::uint32_t>(b) << 16); }

inline std::uint16_t to_bfloat16(float f) noexcept {
  const std::uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace detail::half_bits

/// IEEE 754 binary16, as stored: 1 sign, 5 exponent, 10 mantissa bits.
/// Layout-compatible with uint16_t, ggml_fp16_t, at::Half and _Float16, so a
/// host tensor of those is viewed as float16 elements.
struct float16 {
  std::uint16_t bits;  ///< uninitialized by default, as a float is: float16{} is +0

  float16() noexcept = default;
  /// f rounded to nearest even (±Inf from ±65520 on, a NaN stays a NaN).
  explicit float16(float f) noexcept : bits(detail::half_bits::to_binary16(f)) {}
  /// Exact.
  explicit operator float() const noexcept { return detail::half_bits::from_binary16(bits); }
  static constexpr float16 from_bits(std::uint16_t b) noexcept {
    float16 h{};
    h.bits = b;
    return h;
  }
};

/// bfloat16, as stored: the top 16 bits of a float (8 exponent, 7 mantissa bits).
/// Layout-compatible with uint16_t, ggml_bf16_t and at::BFloat16.
struct bfloat16 {
  std::uint16_t bits;  ///< uninitialized by default, as a float is: bfloat16{} is +0

  bfloat16() noexcept = default;
  /// f rounded to nearest even (a NaN stays a NaN).
  explicit bfloat16(float f) noexcept : bits(detail::half_bits::to_bfloat16(f)) {}
  /// Exact.
  explicit operator float() const noexcept { return detail::half_bits::from_bfloat16(bits); }
  static constexpr bfloat16 from_bits(std::uint16_t b) noexcept {
    bfloat16 h{};
    h.bits = b;
    return h;
  }
};

static_assert(sizeof(float16) == 2 && sizeof(bfloat16) == 2, "easycache: 16-bit element types must be two bytes");
static_assert(std::is_trivial_v<float16> && std::is_trivial_v<bfloat16>,
              "easycache: 16-bit element types are trivial, as float is (memcpy, arrays of them uninitialized)");

}  // namespace easycache
