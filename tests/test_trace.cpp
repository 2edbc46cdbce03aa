// CSV and JSON export of the trace and stats.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <iomanip>
#include <ios>
#include <limits>
#include <locale>
#include <sstream>
#include <streambuf>
#include <string>
#include <utility>
#include <vector>

#include "helpers.hpp"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {
easycache::controller<Eigen::VectorXd> finished_run() {
  easycache::config cfg;
  cfg.steps = 8;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.5;
  easycache::controller<Eigen::VectorXd> cache(cfg);
  for (std::size_t t = 0; t < 8; ++t) {
    Eigen::VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t, 1.0 - double(t) / 8},
               [](const Eigen::VectorXd& x) { return Eigen::VectorXd((x.array() + 8.0).matrix()); });
  }
  return cache;
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// A decimal comma and '.' between groups of three digits, as in de_DE, built
// here so that no installed locale is needed.
struct comma_decimal : std::numpunct<char> {
  char do_decimal_point() const override { return ','; }
  char do_thousands_sep() const override { return '.'; }
  std::string do_grouping() const override { return "\3"; }
};
std::locale comma_locale() { return std::locale(std::locale::classic(), new comma_decimal); }

// Sets the global locale for one scope, restoring it however the scope ends.
class global_locale_scope {
 public:
  explicit global_locale_scope(const std::locale& locale) : saved_(std::locale::global(locale)) {}
  ~global_locale_scope() { std::locale::global(saved_); }
  global_locale_scope(const global_locale_scope&) = delete;
  global_locale_scope& operator=(const global_locale_scope&) = delete;

 private:
  std::locale saved_;
};

// Numbers that stream formatting mangles: digits past 9, grouping, a negative
// zero, a subnormal, extremes, NaN and infinities.
std::vector<easycache::step_record> awkward_trace() {
  std::vector<easycache::step_record> trace = finished_run().trace();
  easycache::step_record r;
  r.step = 1234567;
  r.branch = 12;
  r.timestep = 0.1;
  r.input_change = 1.0 / 3;
  r.transformation_rate = -0.0;
  r.output_norm = 1e300;
  r.predicted_error = std::numeric_limits<double>::denorm_min();
  r.accumulated_error = 123456789.125;
  r.realized_error = 0.5;
  r.action = easycache::action::skip;
  r.reason = easycache::reason::below_threshold;
  trace.push_back(r);
  r.step = 1000;
  r.branch = 0;
  r.timestep = -2.5e-8;
  r.input_change = std::numeric_limits<double>::quiet_NaN();
  r.transformation_rate = std::numeric_limits<double>::infinity();
  r.output_norm = -std::numeric_limits<double>::infinity();
  r.predicted_error = std::numeric_limits<double>::max();
  r.accumulated_error = 12345678901234567890.0;
  r.action = easycache::action::compute;
  r.reason = easycache::reason::last_step;
  trace.push_back(r);
  return trace;
}

easycache::statistics awkward_stats() {
  easycache::statistics s = finished_run().stats();
  s.evaluations = 3000000;
  s.calls = 7;  // a speedup of 428571.42857142858...
  s.reasons[0] = 1234567;
  return s;
}

// What the writers write to a stream in its default state.
std::string default_csv() {
  std::ostringstream out;
  easycache::write_csv(out, awkward_trace());
  return out.str();
}
std::string default_json() {
  std::ostringstream out;
  easycache::write_json(out, awkward_stats(), awkward_trace());
  return out.str();
}

// A double read back from the writers' text: empty is NaN (CSV), null is NaN (JSON).
double read_back(const std::string& text) {
  if (text.empty() || text == "null") return std::numeric_limits<double>::quiet_NaN();
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);  // the C locale: a program starts in it
  return end == text.c_str() + text.size() ? value : -12345.0;  // a value no field holds
}

bool same_double(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || (a == b && std::signbit(a) == std::signbit(b));
}

// A strict JSON reader (RFC 8259 syntax), enough to check the writers: it
// refuses anything else, and lists every scalar with the key it stands under.
class json_reader {
 public:
  explicit json_reader(std::string text) : text_(std::move(text)) {}
  bool valid() {
    if (!value("")) return false;
    space();
    return at_ == text_.size();
  }
  std::vector<std::pair<std::string, std::string>> scalars;

 private:
  void space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\t' || text_[at_] == '\r'))
      ++at_;
  }
  bool take(char c) {
    space();
    if (at_ < text_.size() && text_[at_] == c) {
      ++at_;
      return true;
    }
    return false;
  }
  bool value(const std::string& key) {
    space();
    if (at_ >= text_.size()) return false;
    const char c = text_[at_];
    if (c == '{') return object();
    if (c == '[') return array(key);
    std::string text;
    if (c == '"' ? !string(text) : !literal(text) && !number(text)) return false;
    scalars.emplace_back(key, text);
    return true;
  }
  bool object() {
    take('{');
    if (take('}')) return true;
    do {
      std::string key;
      space();
      if (!string(key) || !take(':') || !value(key)) return false;
    } while (take(','));
    return take('}');
  }
  bool array(const std::string& key) {
    take('[');
    if (take(']')) return true;
    do {
      if (!value(key)) return false;
    } while (take(','));
    return take(']');
  }
  bool string(std::string& text) {
    if (at_ >= text_.size() || text_[at_] != '"') return false;
    for (++at_; at_ < text_.size(); ++at_) {
      const char c = text_[at_];
      if (c == '"') {
        ++at_;
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20 || c == '\\') return false;  // the writers need no escapes
      text += c;
    }
    return false;
  }
  bool literal(std::string& text) {
    for (const char* word : {"true", "false", "null"}) {
      if (text_.compare(at_, std::string(word).size(), word) == 0) {
        at_ += std::string(word).size();
        text = word;
        return true;
      }
    }
    return false;
  }
  bool digits() {
    const std::size_t from = at_;
    while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') ++at_;
    return at_ > from;
  }
  bool number(std::string& text) {
    const std::size_t from = at_;
    if (at_ < text_.size() && text_[at_] == '-') ++at_;
    if (at_ < text_.size() && text_[at_] == '0') {
      ++at_;
    } else if (!digits()) {
      return false;
    }
    if (at_ < text_.size() && text_[at_] == '.') {
      ++at_;
      if (!digits()) return false;
    }
    if (at_ < text_.size() && (text_[at_] == 'e' || text_[at_] == 'E')) {
      ++at_;
      if (at_ < text_.size() && (text_[at_] == '+' || text_[at_] == '-')) ++at_;
      if (!digits()) return false;
    }
    text = text_.substr(from, at_ - from);
    return true;
  }

  std::string text_;
  std::size_t at_ = 0;
};

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts(1);
  for (char c : text) {
    if (c == separator) {
      parts.emplace_back();
    } else {
      parts.back() += c;
    }
  }
  return parts;
}

// The state a writer must leave as it found it.
struct stream_state {
  std::ios::fmtflags flags;
  std::streamsize precision, width;
  char fill;
  std::locale locale;
  explicit stream_state(const std::ostream& out)
      : flags(out.flags()), precision(out.precision()), width(out.width()), fill(out.fill()), locale(out.getloc()) {}
  bool operator==(const stream_state& o) const {
    return flags == o.flags && precision == o.precision && width == o.width && fill == o.fill && locale == o.locale;
  }
};

// A stream buffer that takes `room` characters, then refuses every write.
class limited_buffer : public std::streambuf {
 public:
  explicit limited_buffer(std::size_t room) : room_(room) {}
  std::string text;

 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    if (text.size() >= room_) return traits_type::eof();
    text += traits_type::to_char_type(c);
    return c;
  }

 private:
  std::size_t room_;
};

// Every formatting state a caller may leave on a stream, one at a time and all together.
struct named_state {
  const char* name;
  void (*apply)(std::ostream&);
};
const named_state stream_states[] = {
    {"showpos", [](std::ostream& o) { o << std::showpos; }},
    {"hex", [](std::ostream& o) { o << std::hex; }},
    {"oct and showbase", [](std::ostream& o) { o << std::oct << std::showbase; }},
    {"fixed", [](std::ostream& o) { o << std::fixed; }},
    {"scientific and uppercase", [](std::ostream& o) { o << std::scientific << std::uppercase; }},
    {"hexfloat", [](std::ostream& o) { o << std::hexfloat; }},
    {"setprecision(2)", [](std::ostream& o) { o << std::setprecision(2); }},
    {"setprecision(40)", [](std::ostream& o) { o << std::setprecision(40); }},
    {"fixed and setprecision(0)", [](std::ostream& o) { o << std::fixed << std::setprecision(0); }},
    {"setw(30)", [](std::ostream& o) { o << std::setw(30); }},
    {"setfill, setw and left", [](std::ostream& o) { o << std::setfill('*') << std::setw(12) << std::left; }},
    {"internal", [](std::ostream& o) { o << std::internal << std::setw(5); }},
    {"boolalpha and showpoint", [](std::ostream& o) { o << std::boolalpha << std::showpoint; }},
    {"comma-decimal locale", [](std::ostream& o) { o.imbue(comma_locale()); }},
    {"all of them", [](std::ostream& o) {
       o.imbue(comma_locale());
       o << std::showpos << std::hex << std::showbase << std::uppercase << std::scientific << std::showpoint
         << std::boolalpha << std::setprecision(3) << std::setfill('#') << std::left << std::setw(17);
     }},
};
}  // namespace

TEST_CASE("CSV: a header and one row per evaluation", "[trace]") {
  auto cache = finished_run();
  std::ostringstream out;
  easycache::write_csv(out, cache.trace());
  const std::string csv = out.str();
  CHECK_THAT(csv, StartsWith("step,branch,timestep,input_change,transformation_rate,output_norm,predicted_error,"
                             "accumulated_error,realized_error,action,reason\n"));
  CHECK(count(csv, "\n") == 9);
  CHECK_THAT(csv, Contains("0,0,1,,,,,,,compute,warmup\n"));  // the first compute: nothing to compare with
  CHECK_THAT(csv, Contains("2,0,0.75,1,1,9,0.1111111111111111,0.1111111111111111,,skip,below_threshold\n"));
  CHECK_THAT(csv, Contains("7,0,0.125,,,,,,0,compute,last_step\n"));  // Δ = 8 at every step: x + Δ is exact
  CHECK(out.precision() == std::ostringstream().precision());  // the stream's state is restored
}

TEST_CASE("JSON: stats and trace with unmeasured values as null", "[trace]") {
  auto cache = finished_run();
  std::ostringstream out;
  easycache::write_json(out, cache.stats(), cache.trace());
  const std::string json = out.str();
  CHECK_THAT(json, StartsWith("{\"stats\":{\"steps\":8,\"evaluations\":8,\"calls\":4,\"skips\":4,\"extra_evaluations\":0,"
                              "\"speedup_in_calls\":2,\"reasons\":{\"warmup\":2,"));
  CHECK(count(json, "{\"step\":") == 8);
  CHECK_THAT(json, Contains("\"input_change\":null"));
  CHECK_THAT(json, Contains("\"action\":\"skip\",\"reason\":\"below_threshold\""));
  CHECK(count(json, "{") == count(json, "}"));
  CHECK(count(json, "[") == count(json, "]"));
  CHECK(json.find("nan") == std::string::npos);
}

TEST_CASE("stats: speedup with no calls does not divide by zero", "[trace]") {
  easycache::statistics s;
  CHECK(s.speedup_in_calls() == 1.0);
  s.evaluations = 10;
  s.calls = 4;
  CHECK(s.speedup_in_calls() == 2.5);
}

TEST_CASE("the trace can be turned off", "[trace]") {
  easycache::config cfg;
  cfg.steps = 4;
  cfg.warmup_steps = 1;
  cfg.record_trace = false;
  easycache::controller<Eigen::VectorXd> cache(cfg);
  int seen = 0;
  cache.on_decision([&](const easycache::step_record&) { ++seen; });
  for (std::size_t t = 0; t < 4; ++t) {
    Eigen::VectorXd out;
    cache.step(test::constant(2, double(t)), out, {t}, [](const Eigen::VectorXd& x) { return Eigen::VectorXd(x * 2); });
  }
  CHECK(cache.trace().empty());
  CHECK(seen == 4);
  CHECK(cache.stats().steps == 4);
}

TEST_CASE("names of actions and reasons", "[trace]") {
  CHECK(std::string(easycache::to_string(easycache::action::skip)) == "skip");
  CHECK(std::string(easycache::to_string(easycache::reason::degenerate_statistics)) == "degenerate_statistics");
  for (std::size_t i = 0; i < easycache::reason_count; ++i)
    CHECK(std::string(easycache::to_string(static_cast<easycache::reason>(i))) != "unknown");
}

TEST_CASE("writers: the same bytes whatever the stream's formatting state, which they leave as it was",
          "[trace][locale]") {
  const std::string csv = default_csv(), json = default_json();
  for (const named_state& state : stream_states) {
    INFO(state.name);
    std::ostringstream csv_out, json_out;
    state.apply(csv_out);
    state.apply(json_out);
    const stream_state csv_before(csv_out), json_before(json_out);
    easycache::write_csv(csv_out, awkward_trace());
    easycache::write_json(json_out, awkward_stats(), awkward_trace());
    CHECK(csv_out.str() == csv);
    CHECK(json_out.str() == json);
    CHECK(stream_state(csv_out) == csv_before);
    CHECK(stream_state(json_out) == json_before);
  }
}

TEST_CASE("writers: the same bytes under a comma-decimal global locale", "[trace][locale]") {
  const std::string csv = default_csv(), json = default_json();
  const global_locale_scope comma(comma_locale());
  std::ostringstream csv_out, json_out;  // created under the global locale: they carry it
  std::ostringstream plain;
  plain << 1234567 << ' ' << 2.5;
  REQUIRE(plain.str() == "1.234.567 2,5");  // the locale does reach ordinary formatting
  easycache::write_csv(csv_out, awkward_trace());
  easycache::write_json(json_out, awkward_stats(), awkward_trace());
  CHECK(csv_out.str() == csv);
  CHECK(json_out.str() == json);
}

TEST_CASE("writers: CSV fields and JSON numbers read back as the same doubles", "[trace][locale]") {
  const std::vector<easycache::step_record> trace = awkward_trace();
  const std::vector<std::string> lines = split(default_csv(), '\n');
  REQUIRE(lines.size() == trace.size() + 2);  // the header, the rows and the empty rest after the last newline
  CHECK(lines.back().empty());
  for (std::size_t i = 0; i < trace.size(); ++i) {
    const easycache::step_record& r = trace[i];
    INFO("row " << i << ": " << lines[i + 1]);
    const std::vector<std::string> fields = split(lines[i + 1], ',');
    REQUIRE(fields.size() == 11);
    CHECK(fields[0] == std::to_string(r.step));
    CHECK(fields[1] == std::to_string(r.branch));
    const double values[] = {r.timestep,       r.input_change,      r.transformation_rate, r.output_norm,
                             r.predicted_error, r.accumulated_error, r.realized_error};
    for (std::size_t f = 0; f < 7; ++f) CHECK(same_double(read_back(fields[f + 2]), values[f]));
    CHECK(fields[9] == easycache::to_string(r.action));
    CHECK(fields[10] == easycache::to_string(r.reason));
  }

  json_reader json(default_json());
  REQUIRE(json.valid());
  const easycache::statistics stats = awkward_stats();
  std::vector<std::string> timesteps, rates, norms, speedups, steps, warmups;
  for (const auto& [key, text] : json.scalars) {
    if (key == "timestep") timesteps.push_back(text);
    if (key == "transformation_rate") rates.push_back(text);
    if (key == "output_norm") norms.push_back(text);
    if (key == "speedup_in_calls") speedups.push_back(text);
    if (key == "step") steps.push_back(text);
    if (key == "warmup") warmups.push_back(text);
  }
  REQUIRE(timesteps.size() == trace.size());
  REQUIRE(rates.size() == trace.size());
  REQUIRE(norms.size() == trace.size());
  REQUIRE(steps.size() == trace.size());
  for (std::size_t i = 0; i < trace.size(); ++i) {
    INFO("record " << i);
    CHECK(steps[i] == std::to_string(trace[i].step));
    CHECK(same_double(read_back(timesteps[i]), trace[i].timestep));
    CHECK(same_double(read_back(rates[i]), trace[i].transformation_rate));
    CHECK(same_double(read_back(norms[i]), trace[i].output_norm));
  }
  REQUIRE(speedups.size() == 1);
  CHECK(same_double(read_back(speedups[0]), stats.speedup_in_calls()));
  CHECK(warmups == std::vector<std::string>{"1234567"});
}

TEST_CASE("writers: numbers in their shortest exact form, infinities as 1e999", "[trace][locale]") {
  const std::string csv = default_csv(), json = default_json();
  CHECK_THAT(csv, Contains("\n1000,0,") && Contains(",,1e999,-1e999,"));
  CHECK_THAT(json, Contains("\"input_change\":null,\"transformation_rate\":1e999,\"output_norm\":-1e999,"));
#if defined(__cpp_lib_to_chars)
  // The shortest form; without floating-point std::to_chars the writers give 17 digits.
  CHECK_THAT(csv, Contains("\n1234567,12,0.1,0.3333333333333333,-0,1e+300,5e-324,123456789.125,0.5,skip,"
                           "below_threshold\n"));
  CHECK_THAT(csv, Contains("\n1000,0,-2.5e-08,,1e999,-1e999,1.7976931348623157e+308,12345678901234567168,0.5,"
                           "compute,last_step\n"));
  CHECK_THAT(json, Contains("{\"step\":1234567,\"branch\":12,\"timestep\":0.1,\"input_change\":0.3333333333333333,"
                            "\"transformation_rate\":-0,\"output_norm\":1e+300,\"predicted_error\":5e-324,"
                            "\"accumulated_error\":123456789.125,\"realized_error\":0.5,\"action\":\"skip\","
                            "\"reason\":\"below_threshold\"}"));
  CHECK_THAT(json, Contains("\"speedup_in_calls\":428571.4285714286,"));
#endif
}

TEST_CASE("writers: the 17-digit form of standard libraries without to_chars reads back exactly, under any locale",
          "[trace][locale]") {
  const global_locale_scope comma(comma_locale());
  for (double value : {0.1, 1.0 / 3, -0.0, 1e300, std::numeric_limits<double>::denorm_min(),
                       std::numeric_limits<double>::max(), 123456789.125, -2.5e-8, 12345678901234567890.0}) {
    std::string text;
    easycache::detail::append_double_classic(text, value);
    INFO(text);
    CHECK(text.find(',') == std::string::npos);
    CHECK(same_double(read_back(text), value));
  }
}

TEST_CASE("writers: a stream that throws keeps its formatting state and got a prefix of the text", "[trace][locale]") {
  const std::string csv = default_csv(), json = default_json();
  for (std::size_t room : {std::size_t{0}, std::size_t{10}, std::size_t{300}, csv.size() - 1}) {
    for (int writer = 0; writer < 2; ++writer) {
      INFO((writer == 0 ? "csv" : "json") << ", room for " << room << " bytes");
      limited_buffer buffer(room);
      std::ostream out(&buffer);
      stream_states[sizeof stream_states / sizeof stream_states[0] - 1].apply(out);  // "all of them"
      out.exceptions(std::ios::badbit);
      const stream_state before(out);
      if (writer == 0) {
        CHECK_THROWS_AS(easycache::write_csv(out, awkward_trace()), std::ios::failure);
        CHECK(buffer.text == csv.substr(0, room));
      } else {
        CHECK_THROWS_AS(easycache::write_json(out, awkward_stats(), awkward_trace()), std::ios::failure);
        CHECK(buffer.text == json.substr(0, room));
      }
      CHECK(stream_state(out) == before);
    }
  }
}

TEST_CASE("summary(): one log line with the skipped steps and the saving in calls", "[trace]") {
  easycache::config cfg = test::small_config();
  cfg.branches = 2;
  easycache::controller<Eigen::VectorXd> cache(cfg);
  Eigen::VectorXd out;
  for (std::size_t t = 0; t < 8; ++t)
    for (std::size_t b = 0; b < 2; ++b) cache.step(test::constant(4, double(t)), out, {t, 0.0, b}, test::affine);
  REQUIRE(test::pattern(cache.trace()) == "CCSSSSCC");
  CHECK(cache.stats().skipped_steps == 4);
  CHECK(easycache::summary(cache.stats()) ==
        "easycache: skipped 4 of 8 steps (8 of 16 evaluations from the cache), 2.00x fewer denoiser calls");
  easycache::statistics three;
  three.steps = 3;
  three.evaluations = 3;
  three.calls = 2;
  three.skips = 1;
  three.skipped_steps = 1;
  CHECK(easycache::summary(three) ==
        "easycache: skipped 1 of 3 steps (1 of 3 evaluations from the cache), 1.50x fewer denoiser calls");
  three.calls = 3;
  three.evaluations = 7;
  CHECK_THAT(easycache::summary(three), Catch::EndsWith("), 2.33x fewer denoiser calls"));
}

TEMPLATE_TEST_CASE("trace: realized_error is the error a skip would have made at each computed step", "[trace][realized]",
                   Eigen::VectorXf, Eigen::VectorXd) {
  // x_t = t, v = 2x + 1: Δ_t = t + 1. At a compute t after the compute t − 1,
  // x_t + Δ_{t−1} misses v_t by 1, the last output v_{t−1} by 2, and the
  // linear predictor, once it has two computes to extrapolate from, by 0.
  using vector = TestType;
  struct expectation {
    easycache::skip_predictor predictor;
    double miss;              // |v − p| from the third compute on
    double miss_at_second;    // at the second (the linear predictor has one Δ then)
  };
  for (const expectation e : {expectation{easycache::skip_predictor::constant, 1, 1},
                              expectation{easycache::skip_predictor::last_output, 2, 2},
                              expectation{easycache::skip_predictor::linear_in_timestep, 0, 1}})
    for (std::size_t stride : {std::size_t{1}, std::size_t{3}}) {
      INFO("predictor " << static_cast<int>(e.predictor) << ", sampling stride " << stride);
      easycache::config cfg;
      cfg.steps = 10;
      cfg.threshold = 0;  // every step computed
      cfg.predictor = e.predictor;
      cfg.sampling.stride = stride;
      easycache::controller<vector> cache(cfg);
      for (std::size_t t = 0; t < cfg.steps; ++t) {
        vector out;
        const vector x = vector::Constant(101, static_cast<typename vector::Scalar>(t));
        cache.step(x, out, {t, 1.0 - double(t) / 10}, [](const vector& in) { return vector((2 * in.array() + 1).matrix()); });
      }
      const auto& trace = cache.trace();
      CHECK(std::isnan(trace[0].realized_error));
      CHECK(trace[1].realized_error == Approx(e.miss_at_second / 3.0));
      for (std::size_t t = 2; t < cfg.steps; ++t) {
        INFO("step " << t);
        CHECK(trace[t].realized_error == Approx(e.miss / (2.0 * double(t) + 1)).margin(1e-6));
      }
    }
}

namespace test {
/// A host tensor whose traits declare their own commit (counting the calls).
struct counted_commit_tensor {
  float* data;
  std::size_t size;
  static inline std::size_t commits = 0;
};
}  // namespace test

template <>
struct easycache::tensor_traits<test::counted_commit_tensor>
    : easycache::host_tensor_traits<test::counted_commit_tensor, float> {
  using base = easycache::host_tensor_traits<test::counted_commit_tensor, float>;
  static const float* data(const test::counted_commit_tensor& t) { return t.data; }
  static float* data(test::counted_commit_tensor& t) { return t.data; }
  static std::size_t size(const test::counted_commit_tensor& t) { return t.size; }
  static void commit(workspace_type& ws, const test::counted_commit_tensor& x, const test::counted_commit_tensor& v,
                     buffer_type& x_last, buffer_type& delta, bool measure_change,
                     const easycache::statistics_sampling& sampling) {
    ++test::counted_commit_tensor::commits;
    base::commit(ws, x, v, x_last, delta, measure_change, sampling);
  }
};

TEST_CASE("trace: realized_error stays unmeasured where a traits' own commit hides the measuring one", "[trace][realized]") {
  // realized_error comes from host_tensor_traits::commit_predicting; a
  // specialization that declares its own commit gets that commit called.
  easycache::config cfg;
  cfg.steps = 6;
  cfg.warmup_steps = 1;
  cfg.threshold = 0;
  easycache::controller<test::counted_commit_tensor> cache(cfg);
  std::vector<float> x(16), v(16);
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    for (float& e : x) e = static_cast<float>(t);
    test::counted_commit_tensor in{x.data(), x.size()}, out{v.data(), v.size()};
    cache.step(in, out, {t, 1.0 - double(t) / 6}, [](const test::counted_commit_tensor& a, test::counted_commit_tensor& b) {
      for (std::size_t i = 0; i < a.size; ++i) b.data[i] = 2 * a.data[i] + 1;
    });
  }
  CHECK(test::counted_commit_tensor::commits == cfg.steps);  // every compute went through it
  for (const auto& r : cache.trace()) CHECK(std::isnan(r.realized_error));
}
