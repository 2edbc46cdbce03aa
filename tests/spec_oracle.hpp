// A literal transcription of docs/algorithm.md, written for clarity
// and not for speed: whole vectors of doubles, no fusion, no aliasing tricks.
// The tests compare the controller against it on scripted and random
// trajectories.
#pragma once

#include <cmath>
#include <cstddef>
#include <optional>
#include <vector>

#include <easycache/config.hpp>
#include <easycache/types.hpp>

namespace oracle {

using vec = std::vector<double>;

inline std::vector<std::size_t> sampled_indices(std::size_t n, const easycache::statistics_sampling& s) {
  std::vector<std::size_t> indices;
  for (std::size_t i = 0; i < n; ++i) {
    if (s.stride <= 1) {
      indices.push_back(i);
    } else if (s.height == 0) {
      if (i % s.stride == 0) indices.push_back(i);
    } else {
      const std::size_t column = i % s.width;
      const std::size_t row = (i / s.width) % s.height;
      if (row % s.stride == 0 && column % s.stride == 0) indices.push_back(i);
    }
  }
  return indices;
}

// ‖a − b‖: mean absolute value over the (sampled) elements.
inline double norm_of_difference(const vec& a, const vec& b, const easycache::statistics_sampling& s) {
  const auto indices = sampled_indices(a.size(), s);
  double sum = 0;
  for (std::size_t i : indices) sum += std::abs(a[i] - b[i]);
  return sum / static_cast<double>(indices.size());
}

inline double norm(const vec& a, const easycache::statistics_sampling& s) {
  return norm_of_difference(a, vec(a.size(), 0.0), s);
}

struct result {
  vec output;
  easycache::action action;
};

class model {
 public:
  explicit model(const easycache::config& cfg) : cfg_(cfg), delta_(cfg.branches) {}

  // One evaluation; `f` maps an input to the denoiser output.
  template <class F>
  result step(const vec& x, std::size_t t, std::size_t branch, F&& f) {
    if (branch != 0) {
      auto& delta = delta_[branch];
      if (anchor_action_ == easycache::action::skip && delta) return {add(x, *delta), easycache::action::skip};
      vec v = f(x);
      delta = subtract(v, x);
      return {v, easycache::action::compute};
    }
    const std::size_t n_steps = cfg_.steps;
    bool forced;
    if (cfg_.window) {
      const double p = static_cast<double>(t) / static_cast<double>(n_steps);
      forced = p < cfg_.window->start || p >= cfg_.window->end;
    } else {
      forced = t < cfg_.warmup_steps || t >= n_steps - 1;
    }
    easycache::action decision = easycache::action::compute;
    if (forced) {
      accumulated_ = 0;  // step 1
    } else if (x_prev_ && v_last_ && k_) {  // step 2
      const vec& reference =
          cfg_.input_change == easycache::input_change_reference::previous_step ? *x_prev_ : *x_last_;
      const double dx = norm_of_difference(x, reference, cfg_.sampling);
      const double epsilon = *k_ * (dx / norm(*v_last_, cfg_.sampling));
      accumulated_ += epsilon;
      if (accumulated_ < cfg_.threshold) {
        decision = easycache::action::skip;
      } else {
        accumulated_ = 0;
      }
    }
    x_prev_ = x;  // step 4
    anchor_action_ = decision;
    if (decision == easycache::action::skip) return {add(x, *delta_[0]), decision};
    vec v = f(x);  // step 5
    if (v_last_) k_ = norm_of_difference(v, *v_last_, cfg_.sampling) / norm_of_difference(x, *x_last_, cfg_.sampling);
    x_last_ = x;
    v_last_ = v;
    delta_[0] = subtract(v, x);
    return {v, decision};
  }

  double accumulated_error() const { return accumulated_; }

 private:
  static vec add(const vec& a, const vec& b) {
    vec r(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) r[i] = a[i] + b[i];
    return r;
  }
  static vec subtract(const vec& a, const vec& b) {
    vec r(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
    return r;
  }

  easycache::config cfg_;
  std::optional<vec> x_prev_, x_last_, v_last_;
  std::vector<std::optional<vec>> delta_;
  std::optional<double> k_;
  double accumulated_ = 0;
  easycache::action anchor_action_ = easycache::action::compute;
};

}  // namespace oracle
