// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
#pragma once

#include <stdexcept>
#include <string>

namespace easycache {

/// The one exception type the library throws for bad input or misuse.
///
/// Derives from std::invalid_argument so that generic handlers catch it; the
/// message always names the offending value. After an easycache::error thrown
/// by a controller operation, the controller is unchanged (strong guarantee)
/// unless the operation's documentation says otherwise.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Thrown by step() when a denoiser of the (x, out) forms returns false (an
/// engine's failure flag). Not a misuse: it is handled as an exception from
/// the denoiser (the controller is unchanged; the loop may retry or go on).
class denoiser_failed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace easycache
