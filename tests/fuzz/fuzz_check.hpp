// The fuzz targets' invariant check: on a violation, print the check, what it
// means and the context (configuration and call), then abort so that libFuzzer
// keeps the input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace fuzz {

// The configuration and the call being checked, printed with a violation.
inline std::string context;

[[noreturn]] inline void violated(const char* condition, const char* what, int line) {
  std::fprintf(stderr, "invariant violated (line %d): %s\n  check: %s\n  context: %s\n", line, what, condition,
               context.c_str());
  std::abort();
}

}  // namespace fuzz

#define FUZZ_CHECK(condition, what)                                 \
  do {                                                              \
    if (!(condition)) ::fuzz::violated(#condition, (what), __LINE__); \
  } while (false)
