// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Observability: a plain record per step and branch, counters derived from
// them, and CSV / JSON writers. Nothing here prints unless called.
#pragma once

#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <limits>
#include <locale>
#include <ostream>
#include <sstream>
#include <string>
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
  /// On a computed step of branch 0 after its first compute of the generation:
  /// the error a skip would have made here, mean |v − p| / mean |v| over the
  /// sampled elements, p what the configured predictor would have returned —
  /// the realized counterpart of accumulated_error (which predicts it before the
  /// step). Measured in the commit pass, which reads v and the cached vectors
  /// anyway; NaN where the backend does not measure it (CUDA tensors, the
  /// peer variants' scoped statistics, traits without commit_predicting).
  /// Under a statistics reduction it is this rank's own (decisions never read it).
  double realized_error = std::numeric_limits<double>::quiet_NaN();
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
  std::size_t skipped_steps = 0;      ///< anchor steps skipped (each branch followed)
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
// The writers format every number here, into their own buffer, and hand the
// stream only finished bytes through write(): the text is then the same
// whatever the stream's flags, precision, width, fill and locale (and the
// global locale), and none of that state is touched.

inline void append_integer(std::string& text, std::size_t value) {
  char digits[std::numeric_limits<std::size_t>::digits10 + 2];
  text.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
}

// 17 significant digits through a stream of the classic locale: reads back as
// the same double, for standard libraries without floating-point to_chars.
inline void append_double_classic(std::string& text, double value) {
  std::ostringstream digits;
  digits.imbue(std::locale::classic());
  digits.precision(std::numeric_limits<double>::max_digits10);
  digits << value;
  text += digits.str();
}

// The shortest text that reads back as the same double; not-a-number is
// `missing`, and ±infinity is ±1e999 (JSON has no infinity; this parses as ±inf).
inline void append_number(std::string& text, double value, const char* missing) {
  if (std::isnan(value)) {
    text += missing;
  } else if (std::isinf(value)) {
    text += value > 0 ? "1e999" : "-1e999";
  } else {
#if defined(__cpp_lib_to_chars)
    char digits[32];  // the longest shortest form, "-2.2250738585072014e-308", has 24
    text.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
#else
    append_double_classic(text, value);
#endif
  }
}

inline void write_text(std::ostream& out, const std::string& text) {
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}
}  // namespace detail

/// One line for a log, like stable-diffusion.cpp's: "easycache: skipped 30 of 50
/// steps (60 of 100 evaluations from the cache), 2.50x fewer denoiser calls".
/// The same text whatever the global locale.
inline std::string summary(const statistics& stats) {
  std::string text = "easycache: skipped ";
  detail::append_integer(text, stats.skipped_steps);
  text += " of ";
  detail::append_integer(text, stats.steps);
  text += " steps (";
  detail::append_integer(text, stats.skips);
  text += " of ";
  detail::append_integer(text, stats.evaluations);
  text += " evaluations from the cache), ";
  // Two decimals, rounded, without the locale-dependent stream or printf.
  const auto hundredths = static_cast<std::size_t>(stats.speedup_in_calls() * 100.0 + 0.5);
  detail::append_integer(text, hundredths / 100);
  text += '.';
  text += static_cast<char>('0' + (hundredths / 10) % 10);
  text += static_cast<char>('0' + hundredths % 10);
  text += "x fewer denoiser calls";
  return text;
}


/// Writes the trace as CSV with a header line; unmeasured values are empty
/// fields, infinities ±1e999, and every other number the shortest text that
/// reads back as the same value. The bytes do not depend on the stream's
/// formatting state or locale, nor on the global locale, and that state is left
/// as it was. Reads only its arguments. A failing stream throws only if its
/// exceptions() ask for it (the text then stops where it failed).
inline void write_csv(std::ostream& out, const std::vector<step_record>& trace) {
  std::string line =
      "step,branch,timestep,input_change,transformation_rate,output_norm,predicted_error,"
      "accumulated_error,realized_error,action,reason\n";
  detail::write_text(out, line);
  for (const step_record& r : trace) {
    if (!out) return;
    line.clear();
    detail::append_integer(line, r.step);
    line += ',';
    detail::append_integer(line, r.branch);
    line += ',';
    for (double v : {r.timestep, r.input_change, r.transformation_rate, r.output_norm, r.predicted_error,
                     r.accumulated_error, r.realized_error}) {
      detail::append_number(line, v, "");
      line += ',';
    }
    line += to_string(r.action);
    line += ',';
    line += to_string(r.reason);
    line += '\n';
    detail::write_text(out, line);
  }
}

/// Writes {"stats": {...}, "trace": [...]} as JSON; unmeasured values are null,
/// infinities ±1e999. Numbers, stream state and exceptions as write_csv.
inline void write_json(std::ostream& out, const statistics& stats, const std::vector<step_record>& trace) {
  std::string text = "{\"stats\":{\"steps\":";
  detail::append_integer(text, stats.steps);
  text += ",\"evaluations\":";
  detail::append_integer(text, stats.evaluations);
  text += ",\"calls\":";
  detail::append_integer(text, stats.calls);
  text += ",\"skips\":";
  detail::append_integer(text, stats.skips);
  text += ",\"extra_evaluations\":";
  detail::append_integer(text, stats.extra_evaluations);
  text += ",\"speedup_in_calls\":";
  detail::append_number(text, stats.speedup_in_calls(), "null");
  text += ",\"reasons\":{";
  for (std::size_t i = 0; i < reason_count; ++i) {
    text += i ? ",\"" : "\"";
    text += to_string(static_cast<reason>(i));
    text += "\":";
    detail::append_integer(text, stats.reasons[i]);
  }
  text += "}},\"trace\":[";
  detail::write_text(out, text);
  const char* names[] = {"timestep",        "input_change",      "transformation_rate", "output_norm",
                         "predicted_error", "accumulated_error", "realized_error"};
  bool first = true;
  for (const step_record& r : trace) {
    if (!out) return;
    text.assign(first ? "\n{\"step\":" : ",\n{\"step\":");
    detail::append_integer(text, r.step);
    text += ",\"branch\":";
    detail::append_integer(text, r.branch);
    const double values[] = {r.timestep,       r.input_change,      r.transformation_rate, r.output_norm,
                             r.predicted_error, r.accumulated_error, r.realized_error};
    for (std::size_t i = 0; i < 7; ++i) {
      text += ",\"";
      text += names[i];
      text += "\":";
      detail::append_number(text, values[i], "null");
    }
    text += ",\"action\":\"";
    text += to_string(r.action);
    text += "\",\"reason\":\"";
    text += to_string(r.reason);
    text += "\"}";
    detail::write_text(out, text);
    first = false;
  }
  detail::write_text(out, "\n]}\n");
}

}  // namespace easycache
