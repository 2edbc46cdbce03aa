// Small helpers shared by the tests.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

namespace test {

// "CCSS..." from a trace, for one branch.
inline std::string pattern(const std::vector<easycache::step_record>& trace, std::size_t branch = 0) {
  std::string p;
  for (const auto& r : trace)
    if (r.branch == branch) p += r.action == easycache::action::skip ? 'S' : 'C';
  return p;
}

inline std::vector<easycache::reason> reasons(const std::vector<easycache::step_record>& trace,
                                              std::size_t branch = 0) {
  std::vector<easycache::reason> out;
  for (const auto& r : trace)
    if (r.branch == branch) out.push_back(r.reason);
  return out;
}

// A vector of n elements all equal to `value`: its mean absolute value is |value|.
inline Eigen::VectorXd constant(std::size_t n, double value) {
  return Eigen::VectorXd::Constant(static_cast<Eigen::Index>(n), value);
}

// The hand-checkable denoiser of the small cases: v = x + 8, so every mean-abs
// norm is a plain number, k = |Δv| / |Δx| = 1, and ‖v_t‖ = 8 + ‖x_t‖.
inline Eigen::VectorXd affine(const Eigen::VectorXd& x) { return (x.array() + 8.0).matrix(); }

// The small configuration of the hand-checked cases: τ 0.5, warm-up 2 steps.
inline easycache::config small_config(std::size_t steps = 8) {
  easycache::config cfg;
  cfg.steps = steps;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.5;
  return cfg;
}

}  // namespace test
