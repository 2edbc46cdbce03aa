// SPDX-License-Identifier: MIT
//
// Rounding to float32 for the peer variants' arithmetic (config::arithmetic,
// the window in sigma), defined for every double.
#pragma once

#include <cmath>
#include <limits>

namespace easycache::detail {

/// `value` rounded to the nearest float as IEEE 754 rounds (±∞ from half an
/// ulp beyond the largest float on), without converting a double beyond
/// float's range, which C++ leaves undefined. NaN stays NaN.
inline float to_float(double value) noexcept {
  constexpr float largest = std::numeric_limits<float>::max();
  constexpr double overflow = static_cast<double>(largest) + 0x1p103;  // the largest float + half its ulp
  const double magnitude = std::abs(value);
  if (magnitude > static_cast<double>(largest)) {
    const float rounded = magnitude >= overflow ? std::numeric_limits<float>::infinity() : largest;
    return value < 0 ? -rounded : rounded;
  }
  return static_cast<float>(value);
}

/// to_float(value) as a double.
inline double rounded_to_float(double value) noexcept { return static_cast<double>(to_float(value)); }

}  // namespace easycache::detail
