// SPDX-License-Identifier: MIT
#pragma once

#include <sstream>
#include <string>
#include <utility>

namespace easycache::detail {

// Builds an error message from pieces; numbers print with enough digits to
// identify the bad value ("-0.1", "nan", "inf").
template <class... Parts>
std::string message(Parts&&... parts) {
  std::ostringstream out;
  out.precision(10);
  out << "easycache: ";
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace easycache::detail
