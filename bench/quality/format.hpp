// Number formatting shared by the quality benchmarks' tables.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace bench {

/// `value` printed with the printf `spec` ("%.1f"), or "∞".
inline std::string format(double value, const char* spec = "%.1f") {
  if (std::isinf(value)) return "∞";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, spec, value);
  return buffer;
}

}  // namespace bench
