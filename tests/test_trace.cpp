// CSV and JSON export of the trace and stats.
#include <catch2/catch.hpp>

#include <sstream>
#include <string>

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
}  // namespace

TEST_CASE("CSV: a header and one row per evaluation", "[trace]") {
  auto cache = finished_run();
  std::ostringstream out;
  easycache::write_csv(out, cache.trace());
  const std::string csv = out.str();
  CHECK_THAT(csv, StartsWith("step,branch,timestep,input_change,transformation_rate,output_norm,predicted_error,"
                             "accumulated_error,action,reason\n"));
  CHECK(count(csv, "\n") == 9);
  CHECK_THAT(csv, Contains("0,0,1,,,,,,compute,warmup\n"));
  CHECK_THAT(csv, Contains("2,0,0.75,1,1,9,0.111111111,0.111111111,skip,below_threshold\n"));
  CHECK_THAT(csv, Contains("7,0,0.125,,,,,,compute,last_step\n"));
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
