// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Recorded trajectories: the inputs and denoiser outputs of an uncached run,
// saved once, so that policies can be unit-tested and compared without the model.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <ostream>
#include <streambuf>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../controller.hpp"
#include "../error.hpp"
#include "../backends/host_buffer.hpp"
#include "../trace.hpp"
#include "../detail/format.hpp"

namespace easycache {

/// The inputs and outputs of every evaluation of one uncached generation
/// (float, host memory): steps × branches tensors of `size` elements each.
class recorded_trajectory {
 public:
  recorded_trajectory() = default;
  /// Room for `steps` × `branches` evaluations of `size` elements. Throws
  /// easycache::error when that many elements cannot be counted (the product
  /// overflows), before anything is allocated.
  recorded_trajectory(std::size_t steps, std::size_t branches, std::size_t size)
      : steps_(checked_steps(steps, branches, size)), branches_(branches), size_(size), timesteps_(steps, 0.0),
        inputs_(steps * branches * size), outputs_(steps * branches * size), filled_(steps * branches, false) {}

  /// Stores one evaluation of the uncached run.
  void record(std::size_t step, std::size_t branch, double timestep, const float* input, const float* output) {
    if (step >= steps_ || branch >= branches_)
      throw error(detail::message("recorded_trajectory::record: step ", step, ", branch ", branch,
                                  " outside ", steps_, " steps x ", branches_, " branches"));
    timesteps_[step] = timestep;
    const std::size_t at = (step * branches_ + branch) * size_;
    for (std::size_t i = 0; i < size_; ++i) {
      inputs_[at + i] = input[i];
      outputs_[at + i] = output[i];
    }
    filled_[step * branches_ + branch] = true;
  }

  std::size_t steps() const noexcept { return steps_; }
  std::size_t branches() const noexcept { return branches_; }
  std::size_t size() const noexcept { return size_; }
  double timestep(std::size_t step) const { return timesteps_.at(step); }
  // data() + offset: a recording of 0-element tensors has no element to take the address of.
  const float* input(std::size_t step, std::size_t branch) const { return inputs_.data() + offset(step, branch); }
  const float* output(std::size_t step, std::size_t branch) const { return outputs_.data() + offset(step, branch); }
  /// Every evaluation was recorded.
  bool complete() const noexcept {
    for (bool f : filled_)
      if (!f) return false;
    return true;
  }

  /// Binary format: the 8 bytes "ECTRAJ2f" ("ECTRAJ", the format version '2',
  /// the element type 'f' for float; 'd' would be double), then u64 steps,
  /// branches, size, then the timesteps (f64), inputs and outputs (f32),
  /// little-endian as in memory, and nothing after them.
  void save(std::ostream& out) const {
    out.write(magic, 8);
    const std::uint64_t header[3] = {steps_, branches_, size_};
    out.write(reinterpret_cast<const char*>(header), sizeof header);
    out.write(reinterpret_cast<const char*>(timesteps_.data()), static_cast<std::streamsize>(steps_ * sizeof(double)));
    const auto bytes = static_cast<std::streamsize>(inputs_.size() * sizeof(float));
    out.write(reinterpret_cast<const char*>(inputs_.data()), bytes);
    out.write(reinterpret_cast<const char*>(outputs_.data()), bytes);
    if (!out) throw error(detail::message("recorded_trajectory::save: write failed"));
  }

  /// Reads what save() wrote; the stream must end where the recording does.
  /// Throws easycache::error for another format, another version of this one
  /// (version 1 did not record its element type), elements of another type, an
  /// implausible header, a file that ends early or bytes after the payload the
  /// header describes; memory grows with the data actually read, never with what
  /// a (corrupted) header claims, and at most 4096 bytes after the payload are read.
  static recorded_trajectory load(std::istream& in) {
    char head[8] = {};
    in.read(head, 8);
    if (!in || std::char_traits<char>::compare(head, magic, 6) != 0)
      throw error(detail::message("recorded_trajectory::load: not a recorded trajectory"));
    if (head[6] == '0' && head[7] == '1')
      throw error(detail::message("recorded_trajectory::load: format version 01 (ECTRAJ01, without its element "
                                  "type) is no longer read; this library reads version 2: record the run again"));
    if (head[6] != magic[6])
      throw error(detail::message("recorded_trajectory::load: format version ", describe(head[6]),
                                  " is not one this library reads (version 2)"));
    if (head[7] == 'd')
      throw error(detail::message("recorded_trajectory::load: the file holds double elements, this recording is float"));
    if (head[7] != magic[7])
      throw error(detail::message("recorded_trajectory::load: element type ", describe(head[7]),
                                  " is not one this library knows ('f' float, 'd' double)"));
    std::uint64_t header[3] = {};
    in.read(reinterpret_cast<char*>(header), sizeof header);
    if (!in) throw error(detail::message("recorded_trajectory::load: file ends early, in the header"));
    if (header[0] == 0 || header[1] == 0 || header[0] > (1u << 20) || header[1] > 64 || header[2] > (1ull << 32))
      throw error(detail::message("recorded_trajectory::load: implausible header (", header[0], " steps, ",
                                  header[1], " branches, ", header[2], " elements)"));
    recorded_trajectory t;
    t.steps_ = static_cast<std::size_t>(header[0]);
    t.branches_ = static_cast<std::size_t>(header[1]);
    t.size_ = static_cast<std::size_t>(header[2]);
    const std::size_t count = elements(t.steps_, t.branches_, t.size_);
    if (!read_values(in, t.timesteps_, t.steps_) || !read_values(in, t.inputs_, count) ||
        !read_values(in, t.outputs_, count))
      throw error(detail::message("recorded_trajectory::load: file ends early (the header says ", t.steps_,
                                  " steps, ", t.branches_, " branches, ", t.size_, " elements)"));
    const std::streamsize after = bytes_after(in);
    if (after != 0)
      throw error(detail::message("recorded_trajectory::load: ", after, after < tail_bound ? "" : " or more",
                                  " bytes after the payload the header describes (", t.steps_, " steps, ",
                                  t.branches_, " branches, ", t.size_, " elements)"));
    t.filled_.assign(t.steps_ * t.branches_, true);
    return t;
  }

 private:
  static constexpr const char magic[9] = "ECTRAJ2f";
  static constexpr std::streamsize tail_bound = 4096;

  // A header byte for a message: the character where it is printable, else its code.
  static std::string describe(char byte) {
    const auto code = static_cast<unsigned char>(byte);
    if (code >= 0x20 && code < 0x7f) return std::string{'\'', byte, '\''};
    return "byte " + std::to_string(static_cast<unsigned>(code));
  }

  // How many bytes follow the payload, counted up to tail_bound. Through the
  // stream buffer, so that a stream that ends exactly there gets no eofbit (nor
  // the exception a caller may have asked for on it).
  static std::streamsize bytes_after(std::istream& in) {
    std::streambuf* source = in.rdbuf();
    if (std::char_traits<char>::eq_int_type(source->sgetc(), std::char_traits<char>::eof())) return 0;
    char tail[tail_bound];
    return source->sgetn(tail, tail_bound);
  }

  // steps × branches × size, refused when it overflows or exceeds what a vector can hold.
  static std::size_t elements(std::size_t steps, std::size_t branches, std::size_t size) {
    const std::size_t most = std::vector<float>().max_size();
    if ((branches != 0 && steps > most / branches) || (size != 0 && steps * branches > most / size))
      throw error(detail::message("recorded_trajectory: ", steps, " steps x ", branches, " branches x ", size,
                                  " elements is too many to hold"));
    return steps * branches * size;
  }
  static std::size_t checked_steps(std::size_t steps, std::size_t branches, std::size_t size) {
    elements(steps, branches, size);
    return steps;
  }

  // Reads `count` values in chunks of 1 MiB: a header that claims more than the
  // stream holds fails at the stream's end, having allocated about what was read.
  template <class T>
  static bool read_values(std::istream& in, std::vector<T>& values, std::size_t count) {
    constexpr std::size_t chunk = (std::size_t{1} << 20) / sizeof(T);
    values.clear();
    while (values.size() < count) {
      const std::size_t at = values.size(), n = std::min(chunk, count - at);
      values.resize(at + n);
      in.read(reinterpret_cast<char*>(values.data() + at), static_cast<std::streamsize>(n * sizeof(T)));
      if (!in) return false;
    }
    return true;
  }
  std::size_t offset(std::size_t step, std::size_t branch) const {
    if (step >= steps_ || branch >= branches_)
      throw error(detail::message("recorded_trajectory: step ", step, ", branch ", branch, " outside the recording"));
    return (step * branches_ + branch) * size_;
  }

  std::size_t steps_ = 0, branches_ = 0, size_ = 0;
  std::vector<double> timesteps_;
  std::vector<float> inputs_, outputs_;
  std::vector<bool> filled_;
};

/// What a replay produced.
struct replay_result {
  std::vector<step_record> trace;
  statistics stats;
  /// Per evaluation (step-major, then branch): mean |output − recorded output|,
  /// 0 on computed evaluations; the error a skip makes at that step.
  std::vector<double> output_error;
};

/// Runs a controller with `policy` over a recording, open loop: each step gets
/// the recorded input, and the "denoiser" returns the recorded output. The
/// decisions are therefore a deterministic function of the recording, the
/// configuration and the policy: a policy can be unit-tested on real data.
template <class Policy>
replay_result replay(const recorded_trajectory& recording, const config& cfg, Policy policy) {
  if (cfg.steps != recording.steps() || cfg.branches != recording.branches())
    throw error(detail::message("replay: config has ", cfg.steps, " steps and ", cfg.branches,
                                " branches, the recording ", recording.steps(), " and ", recording.branches()));
  if (!recording.complete()) throw error(detail::message("replay: the recording misses evaluations"));
  controller<host_buffer<float>, Policy> cache(cfg, std::move(policy));
  std::vector<float> input(recording.size()), output(recording.size());
  host_buffer<float> x{input.data(), input.size()}, out{output.data(), output.size()};
  replay_result result;
  for (std::size_t t = 0; t < recording.steps(); ++t) {
    for (std::size_t b = 0; b < recording.branches(); ++b) {
      const float* recorded_input = recording.input(t, b);
      const float* recorded_output = recording.output(t, b);
      input.assign(recorded_input, recorded_input + recording.size());
      bool computed = false;
      cache.step(x, out, step_info{t, recording.timestep(t), b}, [&](const host_buffer<float>&, host_buffer<float>& v) {
        computed = true;
        for (std::size_t i = 0; i < v.size; ++i) v.data[i] = recorded_output[i];
      });
      // A computed evaluation returns the recorded output itself: no error, even
      // where that output is NaN or infinite (|NaN − NaN| would say otherwise).
      double error_sum = 0;
      for (std::size_t i = 0; i < recording.size() && !computed; ++i)
        error_sum += std::abs(static_cast<double>(output[i]) - static_cast<double>(recorded_output[i]));
      result.output_error.push_back(recording.size() ? error_sum / static_cast<double>(recording.size()) : 0.0);
    }
  }
  result.trace = cache.trace();
  result.stats = cache.stats();
  return result;
}

/// replay() with the reference rule.
inline replay_result replay(const recorded_trajectory& recording, const config& cfg) {
  return replay(recording, cfg, easycache_policy(cfg));
}

}  // namespace easycache
