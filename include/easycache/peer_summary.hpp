// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The lines the peers log at the end of sampling, for a drop-in replacement
// of ComfyUI's EasyCache node or stable-diffusion.cpp's `--cache-mode
// easycache` whose users read them (docs/variants.md, rule 19).
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace easycache {

/// ComfyUI's line: "EasyCache - skipped 3/10 steps (1.43x speedup)." `skipped`:
/// branch 0's skipped steps (statistics::count(reason::below_threshold) with
/// the reference policy); `total_steps`: the sampler's steps (len(sigmas) − 1).
inline std::string comfyui_summary(std::size_t skipped, std::size_t total_steps) {
  const double steps = static_cast<double>(total_steps), skips = static_cast<double>(skipped);
  const double speedup = skipped == total_steps ? 1.0 : steps / (steps - skips);
  char line[160];
  std::snprintf(line, sizeof line, "EasyCache - skipped %zu/%zu steps (%.2fx speedup).", skipped, total_steps,
                speedup);
  return line;
}

/// stable-diffusion.cpp's line: "EasyCache skipped 3/10 steps (1.43x estimated
/// speedup)", "EasyCache skipped 3/3 steps" when every step was skipped,
/// "EasyCache completed without skipping steps" when none was, and nothing
/// for an empty schedule. Arguments as for comfyui_summary.
inline std::string stable_diffusion_cpp_summary(std::size_t skipped, std::size_t total_steps) {
  if (total_steps == 0) return {};
  if (skipped == 0) return "EasyCache completed without skipping steps";
  char line[160];
  if (skipped < total_steps) {
    const double speedup = static_cast<double>(total_steps) / static_cast<double>(total_steps - skipped);
    std::snprintf(line, sizeof line, "EasyCache skipped %zu/%zu steps (%.2fx estimated speedup)", skipped,
                  total_steps, speedup);
  } else {
    std::snprintf(line, sizeof line, "EasyCache skipped %zu/%zu steps", skipped, total_steps);
  }
  return line;
}

}  // namespace easycache
