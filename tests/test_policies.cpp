// Policies behind one controller: the reference rule on plain numbers, fixed
// interval, explicit masks, replay of recorded decisions, compute budgets, a
// user's own policy tested on a recorded trajectory, and any_policy.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ios>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <easycache/extras/replay.hpp>

#include "helpers.hpp"

using Catch::Matchers::Contains;
using Eigen::VectorXd;
using test::affine;
using test::small_config;
using easycache::action;
using easycache::reason;

namespace {

template <class Policy>
std::string run_affine(const easycache::config& cfg, Policy policy) {
  easycache::controller<VectorXd, Policy> cache(cfg, std::move(policy));
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, affine);
  }
  return test::pattern(cache.trace());
}

// A recording of an uncached sampler run with a nonlinear model: Euler steps of
// a flow whose velocity drifts along the schedule. With `burst`, the output
// also changes fast around sigma = 0.6 and slowly elsewhere, so the predicted
// error per step varies strongly.
easycache::recorded_trajectory record(std::size_t steps, std::size_t size = 64, bool burst = false) {
  easycache::recorded_trajectory recording(steps, 1, size);
  std::vector<float> x(size), v(size);
  for (std::size_t i = 0; i < size; ++i) x[i] = std::sin(0.37f * float(i));
  for (std::size_t t = 0; t < steps; ++t) {
    const double sigma = 1.0 - double(t) / double(steps);
    for (std::size_t i = 0; i < size; ++i) {
      if (burst) {
        v[i] = float(std::tanh(x[i]) + 2.0 / (1 + std::exp(-(sigma - 0.6) * 25)) * std::cos(0.3 * double(i)));
      } else {
        v[i] = float(std::tanh(x[i]) * (1 - sigma) + std::cos(3 * sigma + 0.1 * double(i)) * sigma);
      }
    }
    recording.record(t, 0, sigma, x.data(), v.data());
    for (std::size_t i = 0; i < size; ++i) x[i] -= v[i] / float(steps);
  }
  return recording;
}

}  // namespace

TEST_CASE("the reference policy alone, on plain numbers", "[policies]") {
  easycache::config cfg = small_config();
  easycache::easycache_policy policy(cfg);
  easycache::step_context ctx{0, 8, 0.0, false};
  CHECK(policy.plan(ctx)->reason == reason::warmup);
  ctx.step = 7;
  CHECK(policy.plan(ctx)->reason == reason::last_step);
  ctx.step = 3;
  CHECK(policy.plan(ctx)->reason == reason::no_history);
  ctx.has_history = true;
  CHECK_FALSE(policy.plan(ctx).has_value());
  // k = 2, dx = 0.1, ‖v‖ = 1: ε = 0.2 per step; E = 0.2, 0.4 < 0.5 skip; 0.6 computes.
  const easycache::step_measurement m{0.1, 2.0, 1.0};
  for (double expected : {0.2, 0.4}) {
    const auto v = policy.decide(ctx, m);
    CHECK(v.action == action::skip);
    CHECK(v.accumulated_error == Approx(expected));
    policy.commit(ctx, v);
  }
  const auto v = policy.decide(ctx, m);
  CHECK(v.action == action::compute);
  CHECK(v.reason == reason::above_threshold);
  policy.commit(ctx, v);
  CHECK(policy.accumulated_error() == 0.0);
}

TEST_CASE("fixed interval policy", "[policies]") {
  CHECK(run_affine(small_config(12), easycache::fixed_interval_policy(3)) == "CCCSSCSSCSSC");
  CHECK(run_affine(small_config(12), easycache::fixed_interval_policy(1)) == "CCCCCCCCCCCC");
  CHECK_THROWS_WITH(easycache::fixed_interval_policy(0), Contains("interval must be >= 1 (got 0)"));
}

TEST_CASE("step mask policy and evenly spaced static caches", "[policies]") {
  const std::vector<bool> mask{true, true, false, true, false, false, false, true};
  CHECK(run_affine(small_config(), easycache::step_mask_policy(mask)) == "CCSCSSSC");
  // The controller still refuses to skip before anything was computed.
  CHECK(run_affine(small_config(), easycache::step_mask_policy(std::vector<bool>(8, false))) == "CSSSSSSS");
  CHECK_THROWS_WITH((easycache::controller<VectorXd, easycache::step_mask_policy>(small_config(), easycache::step_mask_policy(mask)).reset(small_config(9))),
                    Contains("step_mask_policy has 8 entries for 9 steps"));
  for (std::size_t calls = 3; calls <= 20; ++calls) {
    const auto spaced = easycache::step_mask_policy::evenly_spaced(20, 2, calls);
    std::size_t n = 0;
    for (bool c : spaced.mask()) n += c;
    CHECK(n == calls);
    CHECK(spaced.mask()[0]);
    CHECK(spaced.mask()[1]);
    CHECK(spaced.mask()[19]);
  }
  CHECK_THROWS_WITH(easycache::step_mask_policy::evenly_spaced(20, 5, 4), Contains("4 calls cannot cover 20 steps"));
  // A warm-up of SIZE_MAX steps covers every step (warmup_steps + 1 used to wrap
  // to 0, and the spreading loop then ran for 2^64 iterations).
  const std::size_t all = std::numeric_limits<std::size_t>::max();
  CHECK_THROWS_WITH(easycache::step_mask_policy::evenly_spaced(20, all, 3), Contains("3 calls cannot cover 20 steps"));
  CHECK(easycache::step_mask_policy::evenly_spaced(20, all, 20).mask() == std::vector<bool>(20, true));
}

TEST_CASE("recorded decisions replay to the same outputs bit for bit", "[policies][replay]") {
  easycache::config cfg = easycache::config::wan21(30);
  cfg.threshold = 0.1;
  auto run = [&](auto& cache) {
    Eigen::VectorXf x = Eigen::VectorXf::LinSpaced(128, -1.0f, 1.0f), cond(128), uncond(128);
    for (std::size_t t = 0; t < 30; ++t) {
      const double sigma = 1.0 - double(t) / 30;
      auto model = [&](const Eigen::VectorXf& in, Eigen::VectorXf& out, const easycache::step_info& info) {
        out = (in.array().sin() * float(sigma) + in.array() * float(1 - sigma) + 0.1f * float(info.branch)).matrix();
      };
      cache.step(x, cond, {t, sigma, 0}, model);
      cache.step(x, uncond, {t, sigma, 1}, model);
      x -= (uncond + 4.0f * (cond - uncond)) / 30.0f;
    }
    return x;
  };
  easycache::controller<Eigen::VectorXf> original(cfg);
  const Eigen::VectorXf first = run(original);
  REQUIRE(original.stats().skips > 0);
  easycache::controller<Eigen::VectorXf, easycache::step_mask_policy> replayed(
      cfg, easycache::step_mask_policy::from_trace(original.trace()));
  const Eigen::VectorXf second = run(replayed);
  CHECK((first.array() == second.array()).all());
  CHECK(test::pattern(original.trace(), 1) == test::pattern(replayed.trace(), 1));
}

TEST_CASE("compute budget: the calls land on the target", "[policies][budget]") {
  const auto recording = record(50);
  easycache::config cfg;
  cfg.steps = 50;
  cfg.warmup_steps = 5;
  for (std::size_t target : {7u, 10u, 15u, 20u, 25u, 35u, 50u}) {
    const auto result = easycache::replay(recording, cfg, easycache::budget_policy(easycache::budget::calls(target)));
    INFO("target " << target << " pattern " << test::pattern(result.trace));
    CHECK(result.stats.calls == target);
  }
  const auto half = easycache::replay(recording, cfg, easycache::budget_policy(easycache::budget::speedup(2.0)));
  CHECK(half.stats.calls == 25);
  CHECK_THROWS_WITH(easycache::budget_policy(easycache::budget::calls(10), 0.0), Contains("smoothing must be in (0, 1] (got 0)"));
  CHECK_THROWS_WITH(easycache::budget::speedup(std::numeric_limits<double>::quiet_NaN()), Contains("got nan"));
  CHECK_THROWS_WITH(easycache::budget::speedup(std::numeric_limits<double>::infinity()), Contains("got inf"));
  // The count is exact with progress left out or given as index / steps (the
  // budget reserves calls for the forced steps at those positions).
  easycache::controller<VectorXd, easycache::budget_policy> given(
      cfg, easycache::budget_policy(easycache::budget::calls(20)));
  for (std::size_t t = 0; t < 50; ++t) {
    VectorXd out;
    easycache::step_info info{t, 1.0 - double(t) / 50};
    info.progress = double(t) / 50;
    given.step(test::constant(4, double(t) + std::sin(0.3 * double(t))), out, info, affine);
  }
  CHECK(given.stats().calls == 20);
  CHECK_THROWS_WITH(easycache::replay(recording, cfg, easycache::budget_policy(easycache::budget::calls(5))),
                    Contains("budget of 5 computed steps is outside [6, 50]"));
  CHECK_THROWS_WITH(easycache::budget::speedup(0.5), Contains("got 0.5"));
}

TEST_CASE("compute budget: step 0 counts when it is not forced", "[policies][budget]") {
  // A window ending at 0.16 of 13 steps forces steps 3..12 (10 steps); step 0
  // is inside it but computed anyway (nothing is cached yet). A budget of 10
  // used to be accepted and then spent 11 calls.
  const auto recording = record(13);
  easycache::config cfg;
  cfg.steps = 13;
  cfg.warmup_steps = 0;
  cfg.window = easycache::schedule_window{0.0, 0.16};
  CHECK_THROWS_WITH(easycache::replay(recording, cfg, easycache::budget_policy(easycache::budget::calls(10))),
                    Contains("budget of 10 computed steps is outside [11, 13]"));
  for (std::size_t target : {11u, 12u, 13u}) {
    const auto result = easycache::replay(recording, cfg, easycache::budget_policy(easycache::budget::calls(target)));
    INFO("target " << target << " pattern " << test::pattern(result.trace));
    CHECK(result.stats.calls == target);
  }
}

TEST_CASE("compute budget: a spent budget skips even where the statistics are degenerate", "[policies][budget]") {
  // A denoiser that outputs zeros makes every output norm 0: statistics the
  // controller cannot judge, where it computes. With the budget spent on the
  // forced steps, the budget wins: it skips without measuring (found by the fuzzer).
  easycache::config cfg;
  cfg.steps = 10;
  cfg.warmup_steps = 2;
  easycache::controller<VectorXd, easycache::budget_policy> cache(cfg,
                                                                  easycache::budget_policy(easycache::budget::calls(3)));
  VectorXd x = VectorXd::Constant(8, 1.0), out;
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    cache.step(x, out, {t}, [](const VectorXd& in, VectorXd& o) { o = VectorXd::Zero(in.size()); });
    x *= 0.9;
  }
  INFO("pattern " << test::pattern(cache.trace()));
  CHECK(cache.stats().calls == 3);
  for (std::size_t t = 2; t + 1 < cfg.steps; ++t) CHECK(cache.trace()[t].reason == reason::policy);
}

TEST_CASE("compute budget: exact for every window whose bounds fall on steps", "[policies][budget][variants]") {
  // A window bound equal to a step's position t / N: the policy's look-ahead
  // used to compute that position as t0 / N + (t − t0) / N, which rounds to the
  // other side of the bound (N = 6, end 5/6: step 5 forced, not reserved), and
  // spent one call more than the budget.
  std::size_t checked = 0;
  for (std::size_t n = 2; n <= 12; ++n) {
    const auto recording = record(n, 16);
    for (std::size_t a = 0; a <= n; ++a)
      for (std::size_t b = a; b <= n; ++b) {
        easycache::config cfg;
        cfg.steps = n;
        cfg.warmup_steps = 0;
        cfg.window = easycache::schedule_window{double(a) / double(n), double(b) / double(n)};
        for (std::size_t calls = 0; calls <= n; ++calls) {
          easycache::budget_policy policy(easycache::budget::calls(calls));
          try {
            policy.configure(cfg);
          } catch (const easycache::error&) {
            continue;  // infeasible for this window
          }
          const auto result = easycache::replay(recording, cfg, policy);
          INFO(n << " steps, window " << a << "/" << n << ".." << b << "/" << n << ", budget " << calls);
          CHECK(result.stats.calls == calls);
          ++checked;
        }
      }
  }
  CHECK(checked > 1000);
}

TEST_CASE("compute budget: a refused reset(config) leaves the policy as it was", "[policies][budget][errors]") {
  // reset(config) is strong. The refused configuration (16 forced steps for a
  // budget of 8) used to leave its warm-up and step count in the policy, which
  // then reserved calls for 15 warm-up steps and spent 16.
  easycache::config cfg = small_config(20);
  easycache::controller<VectorXd, easycache::budget_policy> cache(cfg,
                                                                  easycache::budget_policy(easycache::budget::calls(8)));
  easycache::config refused = cfg;
  refused.warmup_steps = 15;
  CHECK_THROWS_WITH(cache.reset(refused), Contains("budget of 8 computed steps is outside [16, 20]"));
  CHECK(cache.configuration().warmup_steps == 2);
  for (std::size_t t = 0; t < 20; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, affine);
  }
  CHECK(cache.stats().calls == 8);
  CHECK(cache.policy().target_calls() == 8);
}

TEST_CASE("compute budget spends its skips where the predicted error is small", "[policies][budget]") {
  // Against a static cache with the same calls on a recording whose predicted
  // error varies along the schedule, the budget policy's total skip error must be
  // lower: it computes where E grows fast. (With a constant ε there is nothing
  // to exploit and both are about equal.)
  const auto recording = record(50, 64, true);
  easycache::config cfg;
  cfg.steps = 50;
  cfg.warmup_steps = 5;
  for (std::size_t target : {11u, 18u, 26u}) {
    const auto steered = easycache::replay(recording, cfg, easycache::budget_policy(easycache::budget::calls(target)));
    const auto fixed = easycache::replay(recording, cfg, easycache::step_mask_policy::evenly_spaced(50, 5, target));
    REQUIRE(steered.stats.calls == fixed.stats.calls);
    double steered_error = 0, fixed_error = 0;
    for (double e : steered.output_error) steered_error += e;
    for (double e : fixed.output_error) fixed_error += e;
    INFO("target " << target);
    CHECK(steered_error < fixed_error);
  }
}

namespace {
// A flow-matching-like recording: Euler steps on Wan2.1's shifted schedule (the
// steps grow towards the end), a smooth velocity: k stays about constant while the
// input change grows, as the paper observes on real models.
easycache::recorded_trajectory record_flow(std::size_t steps, std::size_t size = 64) {
  easycache::recorded_trajectory recording(steps, 1, size);
  std::vector<float> x(size), v(size);
  for (std::size_t i = 0; i < size; ++i) x[i] = std::sin(0.37f * float(i));
  auto sigma_at = [&](std::size_t t) {
    const double s = 1.0 - double(t) / double(steps);
    return 5 * s / (1 + 4 * s);
  };
  for (std::size_t t = 0; t < steps; ++t) {
    const double sigma = sigma_at(t);
    for (std::size_t i = 0; i < size; ++i)
      v[i] = float(std::tanh(2 * x[i]) * (1 - sigma) + std::cos(0.3 * double(i) + 2 * sigma));
    recording.record(t, 0, sigma, x.data(), v.data());
    for (std::size_t i = 0; i < size; ++i) x[i] += float(sigma_at(t + 1) - sigma) * v[i];
  }
  return recording;
}

double total(const std::vector<double>& errors) {
  double sum = 0;
  for (double e : errors) sum += e;
  return sum;
}
}  // namespace

TEST_CASE("compute budget: calibrated on a previous generation it places computes as EasyCache's tau would",
          "[policies][budget]") {
  // Generations over the same recording through one controller: the first uses
  // the online rule, the next ones the threshold calibrated on the previous one.
  const auto recording = record_flow(50);
  easycache::config cfg;
  cfg.steps = 50;
  cfg.warmup_steps = 5;
  for (double tau : {0.1, 0.2, 0.4}) {
    easycache::config with_tau = cfg;
    with_tau.threshold = tau;
    const auto reference = easycache::replay(recording, with_tau);
    const std::size_t target = reference.stats.calls;
    const auto fixed = easycache::replay(recording, cfg, easycache::step_mask_policy::evenly_spaced(50, 5, target));
    easycache::controller<easycache::host_buffer<float>, easycache::budget_policy> cache(
        cfg, easycache::budget_policy(easycache::budget::calls(target)));
    std::vector<float> input(recording.size()), output(recording.size());
    easycache::host_buffer<float> x{input.data(), input.size()}, out{output.data(), output.size()};
    auto generation = [&] {
      double error = 0;
      for (std::size_t t = 0; t < 50; ++t) {
        input.assign(recording.input(t, 0), recording.input(t, 0) + recording.size());
        const float* v = recording.output(t, 0);
        cache.step(x, out, {t, recording.timestep(t)},
                   [&](const easycache::host_buffer<float>&, easycache::host_buffer<float>& o) {
                     std::copy(v, v + o.size, o.data);
                   });
        for (std::size_t i = 0; i < recording.size(); ++i) error += std::abs(double(output[i]) - double(v[i]));
      }
      return error / double(recording.size());
    };
    INFO("tau " << tau << ", " << target << " calls");
    CHECK(std::isnan(cache.policy().calibrated_threshold()));
    const double first = generation();
    CHECK(cache.stats().calls == target);
    const double second = generation();
    CHECK(cache.stats().calls == target);
    CHECK(std::isfinite(cache.policy().calibrated_threshold()));
    INFO("errors: EasyCache " << total(reference.output_error) << ", static " << total(fixed.output_error)
                              << ", budget first " << first << ", calibrated " << second);
    CHECK(second < first);
    CHECK(second < total(fixed.output_error));
    CHECK(second <= 1.05 * total(reference.output_error));
    // A copy of the policy carries the calibration to another controller and budget.
    easycache::budget_policy learned = cache.policy();
    learned.retarget(easycache::budget::calls(target + 3));
    CHECK(easycache::replay(recording, cfg, learned).stats.calls == target + 3);
  }
}

namespace {
// A user's own policy: skip at most `limit` steps in a row (MagCache-like),
// else the reference rule.
class capped_policy {
 public:
  capped_policy(const easycache::config& cfg, std::size_t limit) : inner_(cfg), limit_(limit) {}
  std::optional<easycache::verdict> plan(const easycache::step_context& ctx) const {
    if (auto v = inner_.plan(ctx)) return v;
    if (skipped_in_a_row_ >= limit_) return easycache::verdict{action::compute, reason::policy};
    return std::nullopt;
  }
  easycache::verdict decide(const easycache::step_context& ctx, const easycache::step_measurement& m) const {
    return inner_.decide(ctx, m);
  }
  void commit(const easycache::step_context& ctx, const easycache::verdict& v) noexcept {
    inner_.commit(ctx, v);
    skipped_in_a_row_ = v.action == action::skip ? skipped_in_a_row_ + 1 : 0;
  }
  void reset() noexcept {
    inner_.reset();
    skipped_in_a_row_ = 0;
  }

 private:
  easycache::easycache_policy inner_;
  std::size_t limit_;
  std::size_t skipped_in_a_row_ = 0;
};
}  // namespace

TEST_CASE("a user's policy unit-tested against a recorded trajectory", "[policies][replay]") {
  const auto recording = record(40);
  std::stringstream file;
  recording.save(file);
  const auto loaded = easycache::recorded_trajectory::load(file);
  easycache::config cfg;
  cfg.steps = 40;
  cfg.warmup_steps = 4;
  cfg.threshold = 1e9;  // the reference would skip everything it may
  const auto reference = easycache::replay(loaded, cfg);
  CHECK(test::pattern(reference.trace) == "CCCC" + std::string(35, 'S') + "C");
  const auto capped = easycache::replay(loaded, cfg, capped_policy(cfg, 3));
  const std::string pattern = test::pattern(capped.trace);
  CHECK(pattern.find("SSSS") == std::string::npos);
  CHECK(pattern.find("SSS") != std::string::npos);
  // Deterministic: the same recording gives the same decisions.
  CHECK(test::pattern(easycache::replay(recording, cfg, capped_policy(cfg, 3)).trace) == pattern);
  // The error of a skipped step is measured against the recorded output.
  for (std::size_t t = 0; t < 40; ++t)
    if (capped.trace[t].action == action::compute) CHECK(capped.output_error[t] == 0.0);
}

TEST_CASE("recordings: bad files and bad use", "[policies][replay][errors]") {
  std::stringstream junk("not a trajectory at all");
  CHECK_THROWS_WITH(easycache::recorded_trajectory::load(junk), Contains("not a recorded trajectory"));
  easycache::recorded_trajectory partial(4, 1, 2);
  float v[2] = {1, 2};
  CHECK_THROWS_WITH(partial.record(4, 0, 0.0, v, v), Contains("step 4, branch 0 outside 4 steps"));
  partial.record(0, 0, 1.0, v, v);
  easycache::config cfg = small_config(4);
  CHECK_THROWS_WITH(easycache::replay(partial, cfg), Contains("misses evaluations"));
  CHECK_THROWS_WITH(easycache::replay(partial, small_config(5)), Contains("config has 5 steps"));
  std::stringstream truncated;
  record(10).save(truncated);
  std::stringstream cut(truncated.str().substr(0, 100));
  CHECK_THROWS_WITH(easycache::recorded_trajectory::load(cut), Contains("ends early"));
  // The linear predictor needs every recorded timestep finite.
  easycache::recorded_trajectory no_timesteps(4, 1, 2);
  for (std::size_t t = 0; t < 4; ++t) no_timesteps.record(t, 0, std::numeric_limits<double>::quiet_NaN(), v, v);
  easycache::config linear = small_config(4);
  linear.predictor = easycache::skip_predictor::linear_in_timestep;
  CHECK_THROWS_WITH(easycache::replay(no_timesteps, linear), Contains("needs a finite step_info::timestep"));
  CHECK_NOTHROW(easycache::replay(no_timesteps, small_config(4)));
}

TEST_CASE("recordings: a header that claims more than the file holds, dimensions that overflow", "[policies][replay][errors]") {
  // A 32-byte header claiming 2^20 steps x 64 branches x 2^32 elements (2^60
  // bytes) and 100 bytes of data: refused as a short file, having allocated
  // about what was read (not an out-of-memory for what the header claims).
  std::string header = "ECTRAJ2f";
  const std::uint64_t dimensions[3] = {std::uint64_t{1} << 20, 64, std::uint64_t{1} << 32};
  header.append(reinterpret_cast<const char*>(dimensions), sizeof dimensions);
  std::stringstream file(header + std::string(100, '\0'));
  CHECK_THROWS_WITH(easycache::recorded_trajectory::load(file), Contains("file ends early"));
  // 2 x 2^32 x 2^32 elements wraps around to 0: refused, not a recording with no room.
  CHECK_THROWS_WITH(easycache::recorded_trajectory(2, std::size_t{1} << 32, std::size_t{1} << 32),
                    Contains("2 steps x 4294967296 branches x 4294967296 elements is too many"));
}

TEST_CASE("recordings: a stream that ends with the recording loads, also when it throws at its end",
          "[policies][replay]") {
  const auto recording = record(3, 2);
  std::stringstream file;
  recording.save(file);
  const std::string bytes = file.str();
  CHECK(bytes.size() == 8 + 3 * 8 + 3 * 8 + 2 * 3 * 2 * sizeof(float));
  // A stream that ends exactly after the recording: no end-of-file is hit
  // while looking for more, so a stream asked to throw on it loads too.
  std::stringstream strict(bytes);
  strict.exceptions(std::ios::eofbit | std::ios::failbit | std::ios::badbit);
  const auto loaded = easycache::recorded_trajectory::load(strict);
  CHECK(strict.good());
  std::stringstream again;
  loaded.save(again);
  CHECK(again.str() == bytes);
}

TEST_CASE("recordings: bytes after the payload the header describes are refused", "[policies][replay][errors]") {
  std::stringstream file;
  record(10).save(file);  // 10 steps x 1 branch x 64 elements
  const std::string bytes = file.str();
  std::stringstream tail(bytes + std::string(16, '\0'));
  CHECK_THROWS_WITH(easycache::recorded_trajectory::load(tail),
                    Contains("recorded_trajectory::load: 16 bytes after the payload the header describes "
                             "(10 steps, 1 branches, 64 elements)"));
  // A long tail is counted only up to a bound, not read to its end.
  std::stringstream long_tail(bytes + std::string(100000, 'x'));
  CHECK_THROWS_WITH(easycache::recorded_trajectory::load(long_tail),
                    Contains("4096 or more bytes after the payload"));
  CHECK(long_tail.tellg() < std::streamoff(bytes.size() + 5000));
  // A header that claims fewer steps or fewer elements than the file holds.
  auto with_field = [&](std::size_t field, std::uint64_t value) {
    std::string edited = bytes;
    std::memcpy(&edited[8 + 8 * field], &value, sizeof value);
    return edited;
  };
  std::stringstream fewer_steps(with_field(0, 9));  // 8 timestep bytes and 2 x 64 floats left over
  CHECK_THROWS_WITH(easycache::recorded_trajectory::load(fewer_steps),
                    Contains("520 bytes after the payload the header describes (9 steps, 1 branches, 64 elements)"));
  std::stringstream fewer_elements(with_field(2, 63));  // 2 x 10 floats left over
  CHECK_THROWS_WITH(easycache::recorded_trajectory::load(fewer_elements),
                    Contains("80 bytes after the payload the header describes (10 steps, 1 branches, 63 elements)"));
}

TEST_CASE("recordings: another element type or format version is refused", "[policies][replay][errors]") {
  std::stringstream file;
  record(4, 8).save(file);
  const std::string bytes = file.str();
  CHECK(bytes.substr(0, 8) == "ECTRAJ2f");  // the format, its version and its element type
  auto load_with = [&](std::size_t at, const std::string& replacement) {
    std::stringstream edited(bytes.substr(0, at) + replacement + bytes.substr(at + replacement.size()));
    return easycache::recorded_trajectory::load(edited);
  };
  CHECK_THROWS_WITH(load_with(7, "d"),
                    Contains("recorded_trajectory::load: the file holds double elements, this recording is float"));
  CHECK_THROWS_WITH(load_with(7, "h"), Contains("element type 'h' is not one this library knows"));
  CHECK_THROWS_WITH(load_with(7, std::string(1, '\0')), Contains("element type byte 0 is not one"));
  // Version 1 ("ECTRAJ01") had no element type: refused by name.
  CHECK_THROWS_WITH(load_with(6, "01"), Contains("format version 01 (ECTRAJ01, without its element type) is no "
                                                 "longer read"));
  CHECK_THROWS_WITH(load_with(6, "3f"), Contains("format version '3' is not one this library reads (version 2)"));
  CHECK_THROWS_WITH(load_with(0, "XX"), Contains("not a recorded trajectory"));
  std::stringstream header_cut(bytes.substr(0, 20));
  CHECK_THROWS_WITH(easycache::recorded_trajectory::load(header_cut), Contains("file ends early, in the header"));
  CHECK_NOTHROW(load_with(0, "ECTRAJ2f"));  // the edits above are what was refused
}

TEST_CASE("recordings of 0-element tensors replay", "[policies][replay]") {
  // No element to take the address of (UndefinedBehaviorSanitizer reported
  // &inputs_[0] on the empty vector): every step is computed (0/0 statistics).
  easycache::recorded_trajectory empty(3, 2, 0);
  for (std::size_t t = 0; t < 3; ++t)
    for (std::size_t b = 0; b < 2; ++b) empty.record(t, b, 1.0 - double(t) / 3, nullptr, nullptr);
  easycache::config cfg = small_config(3);
  cfg.branches = 2;
  cfg.warmup_steps = 0;
  const auto result = easycache::replay(empty, cfg);
  CHECK(result.stats.calls == 6);
  CHECK(result.output_error == std::vector<double>(6, 0.0));
  CHECK(empty.input(2, 1) == empty.input(0, 0));
}

TEST_CASE("replay: computed evaluations have no error, even where the recording is not finite", "[policies][replay]") {
  // The documented 0 on computed evaluations; |NaN - NaN| and |inf - inf| would give NaN.
  easycache::recorded_trajectory recording(4, 1, 2);
  const float x[2] = {0.5f, 1.0f};
  const float v[2] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()};
  for (std::size_t t = 0; t < 4; ++t) recording.record(t, 0, 1.0 - double(t) / 4, x, v);
  const auto result = easycache::replay(recording, small_config(4));
  CHECK(result.stats.calls == 4);
  CHECK(result.output_error == std::vector<double>(4, 0.0));
}

TEST_CASE("any_policy: chosen at run time, same decisions as the policy itself", "[policies]") {
  using any = easycache::any_policy;
  CHECK(run_affine(small_config(), any()) == run_affine(small_config(), easycache::easycache_policy(small_config())));
  CHECK(run_affine(small_config(12), any(easycache::fixed_interval_policy(3))) == "CCCSSCSSCSSC");
  const std::vector<bool> mask{true, true, false, true, false, false, false, true};
  CHECK(run_affine(small_config(), any(easycache::step_mask_policy(mask))) == "CCSCSSSC");
  // The ComfyUI-style variant is the reference policy with the comfyui preset.
  easycache::config comfy = easycache::config::comfyui(20);
  comfy.sampling = {};
  CHECK(run_affine(comfy, any()) == run_affine(comfy, easycache::easycache_policy(comfy)));
  any copy = any(easycache::fixed_interval_policy(2));
  any assigned;
  assigned = copy;
  CHECK(run_affine(small_config(6), assigned) == "CCCSCC");
}
