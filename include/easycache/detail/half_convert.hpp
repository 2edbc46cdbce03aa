// SPDX-License-Identifier: MIT
//
// Runs of 16-bit elements to and from float, for the host passes over
// float16 / bfloat16 tensors. binary16 uses the CPU's F16C conversions where
// it has them (one vcvtph2ps / vcvtps2ph per 8 elements; checked once at run
// time unless the compiler already targets F16C), a portable scalar
// conversion otherwise; bfloat16 is a shift (and a rounding) that compilers
// vectorize. Both give the same bits: round to nearest even, a NaN kept (and
// quieted, as F16C does), provided the default rounding mode (the portable
// path rounds binary16 subnormals through a float addition).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../half.hpp"

/// Define EASYCACHE_DISABLE_F16C to take the portable conversions everywhere
/// (bench/overhead_half.sh compares the two); like the other configuration
/// macros it must be the same in every translation unit of a program. On
/// g++ and clang the F16C path is always chosen at run time, whatever the
/// compiler flags, so that translation units built with and without -mf16c
/// hold the same inline functions (an -mf16c unit must not make the others
/// skip the check on a CPU without F16C).
#if defined(EASYCACHE_DISABLE_F16C)
#elif (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define EASYCACHE_DETAIL_F16C 1  // where the CPU has it, checked at run time
#define EASYCACHE_DETAIL_F16C_TARGET __attribute__((target("avx,f16c")))
#elif defined(_MSC_VER) && defined(__AVX2__)
#include <immintrin.h>
#define EASYCACHE_DETAIL_F16C 2  // /arch:AVX2 implies F16C
#endif
#ifndef EASYCACHE_DETAIL_F16C_TARGET
#define EASYCACHE_DETAIL_F16C_TARGET
#endif

namespace easycache::detail::half_convert {

template <class S>
inline constexpr bool is_16bit = std::is_same_v<S, float16> || std::is_same_v<S, bfloat16>;

/// Element i of p as a float (the element types the host passes take), and its store.
template <class S>
inline auto value(const S* p, std::size_t i) noexcept {
  if constexpr (is_16bit<S>) {
    std::uint16_t bits;
    std::memcpy(&bits, reinterpret_cast<const unsigned char*>(p) + i * 2, 2);
    return std::is_same_v<S, float16> ? half_bits::from_binary16(bits) : half_bits::from_bfloat16(bits);
  } else {
    S v;
    std::memcpy(&v, reinterpret_cast<const unsigned char*>(p) + i * sizeof(S), sizeof(S));
    return v;
  }
}
template <class S, class V>
inline void put(S* p, std::size_t i, V v) noexcept {
  if constexpr (is_16bit<S>) {
    const float f = static_cast<float>(v);
    const std::uint16_t bits = std::is_same_v<S, float16> ? half_bits::to_binary16(f) : half_bits::to_bfloat16(f);
    std::memcpy(reinterpret_cast<unsigned char*>(p) + i * 2, &bits, 2);
  } else {
    const S s = static_cast<S>(v);
    std::memcpy(reinterpret_cast<unsigned char*>(p) + i * sizeof(S), &s, sizeof(S));
  }
}

#if defined(EASYCACHE_DETAIL_F16C)
EASYCACHE_DETAIL_F16C_TARGET inline void decode_f16c(const unsigned char* from, float* to, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(to + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(from + 2 * i))));
  for (; i < n; ++i) to[i] = value(reinterpret_cast<const float16*>(from), i);
}
EASYCACHE_DETAIL_F16C_TARGET inline void encode_f16c(const float* from, unsigned char* to, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(to + 2 * i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(from + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  for (; i < n; ++i) put(reinterpret_cast<float16*>(to), i, from[i]);
}
#endif

/// Whether binary16 runs use F16C on this CPU.
inline bool uses_f16c() noexcept {
#if EASYCACHE_DETAIL_F16C == 2
  return true;
#elif EASYCACHE_DETAIL_F16C == 1
  // CPUID.1:ECX bits 27 (OSXSAVE), 28 (AVX), 29 (F16C), and the OS saving
  // the YMM registers (XCR0 bits 1 and 2). (clang 14's __builtin_cpu_supports
  // does not know "f16c".)
  static const bool supported = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const unsigned needed = (1u << 27) | (1u << 28) | (1u << 29);
    if ((ecx & needed) != needed) return false;
    unsigned low = 0, high = 0;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    const unsigned long long xcr0 = (static_cast<unsigned long long>(high) << 32) | low;
    return (xcr0 & 6u) == 6u;
  }();
  return supported;
#else
  return false;
#endif
}

/// to[0, n) = from[0, n) as floats. `fast`: uses_f16c(), read once by the caller.
template <class S>
inline void decode(const S* from, float* to, std::size_t n, [[maybe_unused]] bool fast) noexcept {
  const auto* bytes = reinterpret_cast<const unsigned char*>(from);
  if constexpr (std::is_same_v<S, float16>) {
#if defined(EASYCACHE_DETAIL_F16C)
    if (fast) return decode_f16c(bytes, to, n);
#endif
    for (std::size_t i = 0; i < n; ++i) to[i] = value(from, i);
  } else {
    static_assert(std::is_same_v<S, bfloat16>, "decode: a 16-bit type");
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t bits;
      std::memcpy(&bits, bytes + 2 * i, 2);
      const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
      std::memcpy(to + i, &u, 4);
    }
  }
}

/// to[0, n) = from[0, n) rounded to S.
template <class S>
inline void encode(const float* from, S* to, std::size_t n, [[maybe_unused]] bool fast) noexcept {
  auto* bytes = reinterpret_cast<unsigned char*>(to);
  if constexpr (std::is_same_v<S, float16>) {
#if defined(EASYCACHE_DETAIL_F16C)
    if (fast) return encode_f16c(from, bytes, n);
#endif
    for (std::size_t i = 0; i < n; ++i) put(to, i, from[i]);
  } else {
    static_assert(std::is_same_v<S, bfloat16>, "encode: a 16-bit type");
    // Branch-free, so that it vectorizes: the rounded bits, or a quiet NaN.
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t u;
      std::memcpy(&u, from + i, 4);
      const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
      const std::uint32_t quiet = (u >> 16) | 0x0040u;
      const std::uint16_t bits = static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
      std::memcpy(bytes + 2 * i, &bits, 2);
    }
  }
}

}  // namespace easycache::detail::half_convert
