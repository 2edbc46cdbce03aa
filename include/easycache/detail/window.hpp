// SPDX-License-Identifier: MIT
//
// Where a call falls in the window variant: on its progress, or on its sigma
// as ComfyUI's node and stable-diffusion.cpp compare it (config::window_sigma).
#pragma once

#include <cmath>
#include <optional>

#include "../config.hpp"
#include "float32.hpp"

namespace easycache::detail {

enum class window_position { before, inside, past };

/// By sigma when `in_sigma` is set and the call gives one (the peers' test:
/// past when not σ > σ_end, inside when σ <= σ_start, each side rounded to
/// float32), else by progress (start <= p < end; a NaN progress is inside).
inline window_position position_in_window(const schedule_window& window, const std::optional<sigma_window>& in_sigma,
                                          double progress, double sigma) noexcept {
  if (in_sigma && !std::isnan(sigma)) {
    const float s = to_float(sigma);
    if (!(s > to_float(in_sigma->sigma_of(window.end, false)))) return window_position::past;
    if (!(s <= to_float(in_sigma->sigma_of(window.start, true)))) return window_position::before;
    return window_position::inside;
  }
  if (progress < window.start) return window_position::before;
  if (progress >= window.end) return window_position::past;
  return window_position::inside;
}

}  // namespace easycache::detail
