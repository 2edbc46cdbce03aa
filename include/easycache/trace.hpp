// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Observability: a plain record per step and branch, counters derived from
// them, and CSV / JSON writers. Nothing here prints unless called.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <ostream>
#include <vector>

#include "types.hpp"

namespace easycache {

/// One evaluation (a step of one branch). Statistics that were not measured
/// on this evaluation are NaN.
struct step_record {
  std::size_t step = 0;
  std::size_t branch = 0;
  double timestep = std::numeric_limits<double>::quiet_NaN();
  /// dx: mean |x_t − reference| (previous step, or last compute in that variant).
  double input_change = std::numeric_limits<double>::quiet_NaN();
  /// k: transformation rate of the last two computed steps, as used by this decision.
  double transformation_rate = std::numeric_limits<double>::quiet_NaN();
  /// ‖v_at_last_compute‖ (mean abs) as used by this decision.
  double output_norm = std::numeric_limits<double>::quiet_NaN();
  /// ε_t = k · dx / ‖v_at_last_compute‖.
  double predicted_error = std::numeric_limits<double>::quiet_NaN();
  /// E as compared with τ (including this step's ε); it is reset after a compute.
  double accumulated_error = std::numeric_limits<double>::quiet_NaN();
  easycache::action action = easycache::action::compute;
  easycache::reason reason = easycache::reason::no_history;
};

/// Counters for the current generation.
struct statistics {
  std::size_t steps = 0;        ///< anchor steps taken
  std::size_t evaluations = 0;  ///< branch evaluations asked for (steps × branches)
  std::size_t calls = 0;        ///< denoiser calls made
  std::size_t skips = 0;        ///< evaluations answered from the cache
  std::size_t extra_evaluations = 0;  ///< of the evaluations, extra ones (always computed)
  /// Anchor decisions by reason, indexed by static_cast<std::size_t>(reason).
  std::array<std::size_t, reason_count> reasons{};

  /// evaluations / calls: how many times fewer denoiser calls than without the cache.
  double speedup_in_calls() const noexcept {
    return calls ? static_cast<double>(evaluations) / static_cast<double>(calls) : 1.0;
  }
  /// Anchor decisions made for `r`.
  std::size_t count(easycache::reason r) const noexcept { return reasons[static_cast<std::size_t>(r)]; }
};

namespace detail {
// Restores a stream's precision however the writer exits (a stream with
// exceptions enabled throws from the middle of a write).
class precision_scope {
 public:
  precision_scope(std::ostream& out, std::streamsize precision) : out_(out), saved_(out.precision(precision)) {}
  ~precision_scope() { out_.precision(saved_); }
  precision_scope(const precision_scope&) = delete;
  precision_scope& operator=(const precision_scope&) = delete;

 private:
  std::ostream& out_;
  std::streamsize saved_;
};

inline void write_number(std::ostream& out, double value, const char* missing) {
  if (std::isfinite(value)) {
    out << value;
  } else if (std::isnan(value)) {
    out << missing;
  } else {
    out << (value > 0 ? "1e999" : "-1e999");  // JSON has no infinity; this parses as ±inf
  }
}
}  // namespace detail

/// Writes the trace as CSV with a header line; unmeasured values are empty fields.
/// Reads only its arguments. A failing stream throws only if its exceptions()
/// ask for it (the text then stops where it failed); the stream's precision is
/// restored either way.
inline void write_csv(std::ostream& out, const std::vector<step_record>& trace) {
  const detail::precision_scope precision(out, 9);
  out << "step,branch,timestep,input_change,transformation_rate,output_norm,predicted_error,"
         "accumulated_error,action,reason\n";
  for (const step_record& r : trace) {
    out << r.step << ',' << r.branch << ',';
    for (double v : {r.timestep, r.input_change, r.transformation_rate, r.output_norm, r.predicted_error,
                     r.accumulated_error}) {
      detail::write_number(out, v, "");
      out << ',';
    }
    out << to_string(r.action) << ',' << to_string(r.reason) << '\n';
  }
}

/// Writes {"stats": {...}, "trace": [...]} as JSON; unmeasured values are null.
/// Exceptions as write_csv.
inline void write_json(std::ostream& out, const statistics& stats, const std::vector<step_record>& trace) {
  const detail::precision_scope precision(out, 9);
  out << "{\"stats\":{\"steps\":" << stats.steps << ",\"evaluations\":" << stats.evaluations
      << ",\"calls\":" << stats.calls << ",\"skips\":" << stats.skips
      << ",\"extra_evaluations\":" << stats.extra_evaluations
      << ",\"speedup_in_calls\":" << stats.speedup_in_calls() << ",\"reasons\":{";
  for (std::size_t i = 0; i < reason_count; ++i)
    out << (i ? "," : "") << '"' << to_string(static_cast<reason>(i)) << "\":" << stats.reasons[i];
  out << "}},\"trace\":[";
  bool first = true;
  for (const step_record& r : trace) {
    out << (first ? "" : ",") << "\n{\"step\":" << r.step << ",\"branch\":" << r.branch;
    const char* names[] = {"timestep",    "input_change",    "transformation_rate",
                           "output_norm", "predicted_error", "accumulated_error"};
    const double values[] = {r.timestep,    r.input_change,    r.transformation_rate,
                             r.output_norm, r.predicted_error, r.accumulated_error};
    for (std::size_t i = 0; i < 6; ++i) {
      out << ",\"" << names[i] << "\":";
      detail::write_number(out, values[i], "null");
    }
    out << ",\"action\":\"" << to_string(r.action) << "\",\"reason\":\"" << to_string(r.reason) << "\"}";
    first = false;
  }
  out << "\n]}\n";
}

}  // namespace easycache
