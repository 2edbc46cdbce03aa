// Small helpers shared by the tests.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <easycache/easycache.hpp>
#include <easycache/eigen.hpp>

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

}  // namespace test
