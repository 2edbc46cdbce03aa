// A small, exact flow-matching denoiser for the examples: the data are a
// mixture of Gaussians around a few smooth "images", so the velocity that a
// perfectly trained model would predict has a closed form.
//
// Convention (Wan2.1 / rectified flow): x_sigma = (1 − sigma)·x0 + sigma·noise,
// the model predicts v = noise − x0, and the Euler step is
// x_{sigma'} = x_sigma + (sigma' − sigma)·v.
#pragma once

#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include <Eigen/Core>

namespace example {

class mixture_model {
 public:
  // `classes` prototype images of height × width with `channels` channels.
  mixture_model(std::size_t channels, std::size_t height, std::size_t width, std::size_t classes, double spread = 0.1)
      : size_(channels * height * width), spread_(spread) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> frequency(1.0f, 4.0f), phase(0.0f, 6.28f);
    for (std::size_t k = 0; k < classes; ++k) {
      Eigen::VectorXf mean(static_cast<Eigen::Index>(size_));
      const float fx = frequency(rng), fy = frequency(rng), p = phase(rng);
      for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t y = 0; y < height; ++y)
          for (std::size_t x = 0; x < width; ++x) {
            const float u = static_cast<float>(x) / static_cast<float>(width);
            const float w = static_cast<float>(y) / static_cast<float>(height);
            mean(static_cast<Eigen::Index>((c * height + y) * width + x)) =
                std::sin(6.28f * fx * u + p + static_cast<float>(c)) * std::cos(6.28f * fy * w);
          }
      means_.push_back(mean);
    }
    weights_.resize(classes);
  }

  std::size_t size() const { return size_; }
  std::size_t classes() const { return means_.size(); }

  // The velocity at x for noise level sigma, for one class (or all when
  // only_class < 0). Writes into v without allocating.
  void velocity(const Eigen::VectorXf& x, double sigma, int only_class, Eigen::VectorXf& v) {
    const double s2 = spread_ * spread_;
    const double c2 = (1 - sigma) * (1 - sigma) * s2 + sigma * sigma;
    double best = -1e300;
    for (std::size_t k = 0; k < means_.size(); ++k) {
      if (only_class >= 0 && static_cast<std::size_t>(only_class) != k) {
        weights_[k] = -1e300;
        continue;
      }
      const double distance =
          static_cast<double>((x - static_cast<float>(1 - sigma) * means_[k]).squaredNorm());
      weights_[k] = -distance / (2 * c2);
      if (weights_[k] > best) best = weights_[k];
    }
    double total = 0;
    for (double& w : weights_) total += (w = std::exp(w - best));
    // E[x0 | x] = Σ_k r_k (mu_k + (1 − sigma) s² / c² (x − (1 − sigma) mu_k))
    const float gain = static_cast<float>((1 - sigma) * s2 / c2);
    v = gain * x;  // the x-term, whatever the class weights (they sum to 1)
    for (std::size_t k = 0; k < means_.size(); ++k) {
      const float r = static_cast<float>(weights_[k] / total);
      if (r != 0.0f) v += (r * (1.0f - gain * static_cast<float>(1 - sigma))) * means_[k];
    }
    // v = (x − E[x0 | x]) / sigma
    v = (x - v) / static_cast<float>(sigma);
  }

 private:
  std::size_t size_;
  double spread_;
  std::vector<Eigen::VectorXf> means_;
  std::vector<double> weights_;
};

// Wan2.1's flow-matching schedule: N sigmas from 1 towards 0, shifted, then 0.
inline std::vector<double> shifted_sigmas(std::size_t steps, double shift) {
  std::vector<double> sigmas(steps + 1);
  for (std::size_t i = 0; i <= steps; ++i) {
    const double t = 1.0 - static_cast<double>(i) / static_cast<double>(steps);
    sigmas[i] = shift * t / (1 + (shift - 1) * t);
  }
  return sigmas;
}

// Peak signal-to-noise ratio of `a` against `b`, for data in about [-1, 1] (peak-to-peak 2).
inline double psnr(const Eigen::VectorXf& a, const Eigen::VectorXf& b) {
  const double mse = static_cast<double>((a - b).squaredNorm()) / static_cast<double>(a.size());
  return mse == 0 ? INFINITY : 10 * std::log10(4.0 / mse);
}

}  // namespace example
