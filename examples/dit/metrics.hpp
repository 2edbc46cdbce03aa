// Image-quality metrics of a generated clip against a reference clip.
//
// Both clips are clamped to [-1, 1] and mapped to [0, 1] (data range 1) first.
// PSNR: over every value of the clip. SSIM (Wang et al. 2004): per frame, an 11×11
// Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, over the window positions that
// fit inside the frame ("valid"), averaged over positions and then frames.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace dit {

/// A clip's values in [0, 1]: clamped from [-1, 1].
inline Eigen::ArrayXd unit_range(const Eigen::VectorXf& clip) {
  return ((clip.cast<double>().array().max(-1.0).min(1.0)) + 1.0) / 2.0;
}

/// PSNR in dB of `clip` against `reference` (+infinity when equal).
inline double psnr(const Eigen::VectorXf& clip, const Eigen::VectorXf& reference) {
  if (clip.size() != reference.size() || clip.size() == 0)
    throw std::invalid_argument("psnr: clips of " + std::to_string(clip.size()) + " and " +
                                std::to_string(reference.size()) + " values");
  const double mse = (unit_range(clip) - unit_range(reference)).square().mean();
  return mse == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(1.0 / mse);
}

/// Mean SSIM of `clip` against `reference`, both `frames` frames of height × width.
inline double ssim(const Eigen::VectorXf& clip, const Eigen::VectorXf& reference, std::size_t frames,
                   std::size_t height, std::size_t width) {
  constexpr std::size_t window = 11;
  constexpr double sigma = 1.5, c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  const auto expected = static_cast<Eigen::Index>(frames * height * width);
  if (clip.size() != expected || reference.size() != expected || height < window || width < window)
    throw std::invalid_argument("ssim: clips of " + std::to_string(clip.size()) + " and " +
                                std::to_string(reference.size()) + " values for " + std::to_string(frames) + "x" +
                                std::to_string(height) + "x" + std::to_string(width) + " (frames must be >= " +
                                std::to_string(window) + "x" + std::to_string(window) + ")");
  double weights[window][window];
  double total = 0;
  for (std::size_t i = 0; i < window; ++i)
    for (std::size_t j = 0; j < window; ++j) {
      const double di = static_cast<double>(i) - 5.0, dj = static_cast<double>(j) - 5.0;
      total += weights[i][j] = std::exp(-(di * di + dj * dj) / (2 * sigma * sigma));
    }
  const Eigen::ArrayXd a = unit_range(clip), b = unit_range(reference);
  double sum = 0;
  std::size_t count = 0;
  for (std::size_t f = 0; f < frames; ++f) {
    double frame_sum = 0;
    std::size_t positions = 0;
    for (std::size_t y = 0; y + window <= height; ++y)
      for (std::size_t x = 0; x + window <= width; ++x) {
        double mean_a = 0, mean_b = 0, aa = 0, bb = 0, ab = 0;
        for (std::size_t i = 0; i < window; ++i)
          for (std::size_t j = 0; j < window; ++j) {
            const auto at = static_cast<Eigen::Index>((f * height + y + i) * width + x + j);
            const double w = weights[i][j] / total;
            mean_a += w * a(at);
            mean_b += w * b(at);
            aa += w * a(at) * a(at);
            bb += w * b(at) * b(at);
            ab += w * a(at) * b(at);
          }
        const double var_a = aa - mean_a * mean_a, var_b = bb - mean_b * mean_b, cov = ab - mean_a * mean_b;
        frame_sum += ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) /
                     ((mean_a * mean_a + mean_b * mean_b + c1) * (var_a + var_b + c2));
        ++positions;
      }
    sum += frame_sum / static_cast<double>(positions);
    ++count;
  }
  return sum / static_cast<double>(count);
}

}  // namespace dit
