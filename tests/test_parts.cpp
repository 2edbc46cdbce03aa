// The controller's parts on their own, on plain numbers (docs/design.md,
// "Parts"): the step sequencer, the anchor measurement, the budget's
// calibration, and policies told the measurement their verdict came from.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <limits>
#include <optional>
#include <vector>

#include <easycache/detail/anchor_measurement.hpp>
#include <easycache/detail/step_sequencer.hpp>

#include "helpers.hpp"

using Catch::Matchers::Contains;
using easycache::action;
using easycache::reason;
using easycache::step_info;
using easycache::verdict;
using easycache::detail::anchor_measurement;
using easycache::detail::input_reference;
using easycache::detail::step_kind;
using easycache::detail::step_sequencer;

namespace {
const verdict skip{action::skip, reason::below_threshold};
const verdict compute{action::compute, reason::above_threshold};

step_info branch(std::size_t index, std::size_t b) { return step_info{index, 0.0, b}; }
}  // namespace

TEST_CASE("step sequencer: the order of evaluations on plain numbers", "[parts][sequencer]") {
  step_sequencer seq;
  CHECK(seq.classify_anchor(0, 8) == step_kind::start);
  CHECK_THROWS_WITH(seq.follow_anchor(branch(0, 1)), Contains("before branch 0 of that step"));
  CHECK_THROWS_WITH(seq.check_extra_evaluation(step_info{0}), Contains("without a generation in progress"));
  CHECK_THROWS_WITH(seq.schedule_of(branch(0, 2), 8, 2), Contains("branch 2 out of range"));
  CHECK_THROWS_WITH(seq.schedule_of(step_info{8}, 8, 1), Contains("step 8 out of range"));

  seq.clear(2);
  seq.start(0, 8);
  const auto anchor0 = seq.opened(step_info{0}, compute);
  // Two-phase: branch 1 begins while branch 0 is open and follows its verdict.
  const auto follow_open = seq.follow_anchor(branch(0, 1));
  CHECK(follow_open.decision.action == action::compute);
  CHECK(follow_open.anchor_serial == anchor0);
  const auto branch1 = seq.opened(branch(0, 1), follow_open.decision);
  CHECK_THROWS_WITH(seq.check_finishable(branch(0, 1), branch1, anchor0, true), Contains("finish branch 0 first"));
  seq.check_finishable(step_info{0}, anchor0, 0, true);
  seq.close(step_info{0});
  seq.anchor_finished(0, anchor0, compute);
  CHECK_THROWS_WITH(seq.check_finishable(step_info{0}, anchor0, 0, true), Contains("not the latest begin_step"));
  seq.check_finishable(branch(0, 1), branch1, anchor0, true);  // of the same step: still current
  CHECK_THROWS(seq.check_finishable(branch(0, 1), branch1, anchor0, false));  // another controller's
  seq.close(branch(0, 1));
  seq.branch_finished(1, 0);
  CHECK_THROWS_WITH(seq.follow_anchor(branch(0, 1)), Contains("evaluated twice at step 0"));

  // The next step: branch 0 finishes with a skip that branch 1 follows.
  CHECK(seq.classify_anchor(1, 8) == step_kind::next);
  CHECK(seq.classify_anchor(3, 8) == step_kind::gap);
  CHECK_THROWS_WITH(seq.classify_anchor(0, 8), Contains("evaluated twice at step 0"));
  CHECK(seq.classify_anchor(1, 6) == step_kind::start);  // another schedule length begins a new generation
  const auto anchor1 = seq.opened(step_info{1}, skip);
  seq.close(step_info{1});
  seq.anchor_finished(1, anchor1, skip);
  const auto follow_finished = seq.follow_anchor(branch(1, 1));
  CHECK(follow_finished.decision.action == action::skip);
  CHECK(follow_finished.anchor_serial == anchor1);

  // A failed anchor evaluation: branch 1 of that step goes on, computed.
  const auto anchor2 = seq.opened(step_info{2}, skip);
  seq.anchor_failed(step_info{2}, anchor2);
  const auto follow_failed = seq.follow_anchor(branch(2, 1));
  CHECK(follow_failed.decision.reason == reason::out_of_sequence);
  CHECK(follow_failed.anchor_serial == 0);
  CHECK(seq.classify_anchor(0, 8) == step_kind::start);  // an earlier step begins a new generation
  CHECK(seq.classify_anchor(2, 8) == step_kind::next);   // the failed step may be taken again
  CHECK(seq.classify_anchor(3, 8) == step_kind::gap);    // or left out

  seq.stop();
  CHECK_FALSE(seq.active());
  CHECK(seq.classify_anchor(5, 8) == step_kind::start);
}

TEST_CASE("anchor measurement: the reference input and sums -> dx, k, |v|", "[parts][measurement]") {
  easycache::config cfg;  // the reference: dx from the previous step's input
  anchor_measurement m;
  m.start();
  CHECK_FALSE(m.can_measure(cfg));
  CHECK_FALSE(m.has_history());
  CHECK_FALSE(m.commit_measures_change());

  // Step 0 computed: its commit's sums wait; dx at step 1 is against x_last.
  m.computed();
  CHECK(m.can_measure(cfg));
  CHECK(m.commit_measures_change());
  CHECK(m.reference(cfg) == input_reference::last_compute);
  // 4 sampled elements: Σ|dx| 0.4, Σ|v| 8 (the first commit measures no change).
  double values[easycache::detail::reduced_value_count] = {0.4, 0, 0, 8, 4, 4};
  CHECK(m.take(cfg, values) == Approx(0.1));
  CHECK(m.output_norm() == Approx(2.0));
  CHECK(std::isnan(m.transformation_rate()));
  CHECK_FALSE(m.usable(cfg, 0.1).has_value());  // no k yet

  // Step 1 computed: k = mean output change / mean input change = 0.6 / 0.2.
  m.computed();
  CHECK(m.has_history());
  double second[easycache::detail::reduced_value_count] = {0.2, 2.4, 0.8, 12, 4, 4};
  CHECK(m.take(cfg, second) == Approx(0.05));
  CHECK(m.transformation_rate() == Approx(3.0));
  CHECK(m.output_norm() == Approx(3.0));
  // Read once: the same sums again do not change k (a retried begin_step).
  double retried[easycache::detail::reduced_value_count] = {0.2, 99, 1, 99, 4, 4};
  m.take(cfg, retried);
  CHECK(m.transformation_rate() == Approx(3.0));
  const auto usable = m.usable(cfg, 0.05);
  REQUIRE(usable.has_value());
  CHECK(usable->transformation_rate == Approx(3.0));

  // A skip that keeps its input makes the next dx against it, not x_last.
  m.skipped_keeping_input();
  CHECK(m.reference(cfg) == input_reference::previous_input);
  cfg.input_change = easycache::input_change_reference::last_compute;
  CHECK(m.reference(cfg) == input_reference::last_compute);
  CHECK_FALSE(anchor_measurement::skip_keeps_input(cfg));

  // Degenerate: non-finite or negative dx, zero dx under the positive guard.
  CHECK_FALSE(m.usable(cfg, std::numeric_limits<double>::quiet_NaN()).has_value());
  CHECK_FALSE(m.usable(cfg, -1.0).has_value());
  CHECK(m.usable(cfg, 0.0).has_value());
  cfg.guard = easycache::statistics_guard::positive_input_change;
  CHECK_FALSE(m.usable(cfg, 0.0).has_value());

  CHECK_NOTHROW(anchor_measurement::check_shape(cfg, 7));  // no sampling planes, one condition
  cfg.batched_conditions = 2;
  CHECK_THROWS_WITH(anchor_measurement::check_shape(cfg, 7), Contains("not 2 equal slices"));
}

TEST_CASE("budget calibration is a pure function of the recorded profile", "[parts][budget]") {
  easycache::config cfg;
  cfg.steps = 10;
  cfg.warmup_steps = 2;
  const easycache::forced_steps forced(cfg);
  std::vector<double> profile = {0.1, 0.1, 0.3, 0.1, 0.1, 0.4, 0.1, 0.1, 0.2, 0.1};
  std::vector<std::size_t> plan(profile.size() + 1);
  const double tau = easycache::calibrated_threshold(profile, forced, 5, plan);
  REQUIRE(std::isfinite(tau));
  // The reference rule with that τ, simulated here: at most 5 computes, and
  // any smaller τ computes more.
  auto computes = [&](double threshold) {
    std::size_t n = 0;
    double e = 0;
    for (std::size_t t = 0; t < profile.size(); ++t) {
      if (t < 2 || t + 1 == profile.size()) {
        ++n;
        e = 0;
        continue;
      }
      e += profile[t];
      if (e >= threshold) {
        ++n;
        e = 0;
      }
    }
    return n;
  };
  CHECK(computes(tau) <= 5);
  CHECK(computes(tau * 0.999) > 5);
  // The plan: free computes from each step on, 5 − 3 forced = 2 from step 0.
  CHECK(plan[0] == 2);
  CHECK(plan[profile.size()] == 0);
  for (std::size_t t = 0; t < profile.size(); ++t) CHECK(plan[t] >= plan[t + 1]);
  // Same arguments, same answer: nothing is kept between calls.
  std::vector<std::size_t> again(profile.size() + 1);
  CHECK(easycache::calibrated_threshold(profile, forced, 5, again) == tau);
  CHECK(again == plan);
  // Fewer calls than the forced steps: no τ reaches it.
  CHECK(std::isnan(easycache::calibrated_threshold(profile, forced, 2, plan)));
}

namespace {
// A policy told what its verdicts came from: records the measurements.
class recording_policy {
 public:
  explicit recording_policy(const easycache::config& cfg) : inner_(cfg) {}
  std::optional<verdict> plan(const easycache::step_context& ctx) const { return inner_.plan(ctx); }
  verdict decide(const easycache::step_context& ctx, const easycache::step_measurement& m) const {
    return inner_.decide(ctx, m);
  }
  void commit(const easycache::step_context& ctx, const verdict& v,
              const std::optional<easycache::step_measurement>& measured) noexcept {
    inner_.commit(ctx, v);
    measured_.push_back(measured ? measured->input_change : -1.0);
  }
  void reset() noexcept {
    inner_.reset();
    measured_.clear();
  }
  const std::vector<double>& measured() const noexcept { return measured_; }

 private:
  easycache::easycache_policy inner_;
  std::vector<double> measured_;
};
}  // namespace

TEST_CASE("a policy's commit receives the measurement its verdict was decided on", "[parts][policies]") {
  const easycache::config cfg = test::small_config(8);
  easycache::controller<Eigen::VectorXd, recording_policy> cache(cfg);
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    Eigen::VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, test::affine);
  }
  const auto& trace = cache.trace();
  const auto& measured = cache.policy().measured();
  REQUIRE(measured.size() == trace.size());
  for (std::size_t t = 0; t < trace.size(); ++t) {
    const bool decided = trace[t].reason == reason::below_threshold || trace[t].reason == reason::above_threshold;
    INFO("step " << t << " " << easycache::to_string(trace[t].reason));
    if (decided) {
      CHECK(measured[t] == Approx(trace[t].input_change));
    } else {
      CHECK(measured[t] == -1.0);  // planned (warm-up, no history, last step): nothing measured
    }
  }
  CHECK(test::pattern(trace).find('S') != std::string::npos);  // some steps were decided, and skipped
}

TEST_CASE("the docs' table of the traits contract lists every required member", "[parts][contract]") {
  std::ifstream page(EASYCACHE_DOCS_DIR "/custom-tensor.md");
  REQUIRE(page);
  std::stringstream text;
  text << page.rdbuf();
  const std::string doc = text.str();
  std::size_t listed = 0;
  for (const auto& member : easycache::detail::required_members) {
    INFO(member.name << ": " << member.signature);
    CHECK(doc.find(std::string("| `") + member.name + "(") != std::string::npos);
    ++listed;
  }
  CHECK(listed == 8);  // size, allocate, prepare, reduce_abs_diff, apply_delta, commit, store_delta, read
}
