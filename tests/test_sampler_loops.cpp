// The loops real engines run, each against the reference's decisions
// (spec_oracle.hpp, fed the same inputs) where the reference defines them,
// and every one checked for the invariant that matters most: no skip replays
// a cached vector older than the anchor's last computed step.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <easycache/backends/host_buffer.hpp>

#include "helpers.hpp"
#include "spec_oracle.hpp"

using easycache::action;
using easycache::reason;
using Eigen::VectorXd;

namespace {

constexpr std::size_t kSize = 48;

// A smooth, nonlinear velocity field whose transformation rate drifts along the schedule.
VectorXd velocity(const VectorXd& x, double sigma, std::size_t branch) {
  VectorXd v(x.size());
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const double phase = static_cast<double>(i % 7) * 0.3 + static_cast<double>(branch) * 0.7;
    v[i] = (1.0 - sigma) * 0.8 * x[i] + sigma * std::sin(x[i] + phase) + 0.1 * std::cos(3 * sigma + phase);
  }
  return v;
}

VectorXd start_noise(std::size_t size = kSize) {
  VectorXd x(static_cast<Eigen::Index>(size));
  for (Eigen::Index i = 0; i < x.size(); ++i) x[i] = std::sin(1.7 * static_cast<double>(i) + 0.3) * 1.3;
  return x;
}

std::vector<double> sigmas_of(std::size_t steps) {
  std::vector<double> s(steps + 1);
  for (std::size_t i = 0; i <= steps; ++i) s[i] = 1.0 - static_cast<double>(i) / static_cast<double>(steps);
  return s;
}

oracle::vec to_std(const VectorXd& v) { return {v.data(), v.data() + v.size()}; }

// For every branch: no skip may replay a vector older than the anchor's last
// computed step, nor skip without a vector of its own in this generation.
void check_no_stale_replay(const std::vector<easycache::step_record>& trace, std::size_t branches) {
  constexpr std::size_t none = static_cast<std::size_t>(-1);
  std::size_t anchor_compute = none;
  std::vector<std::size_t> branch_compute(branches, none);
  for (const auto& r : trace) {
    if (r.reason == reason::extra_evaluation) continue;
    INFO("step " << r.step << " branch " << r.branch);
    if (r.action == action::compute) {
      branch_compute[r.branch] = r.step;
      if (r.branch == 0) anchor_compute = r.step;
    } else {
      REQUIRE(branch_compute[r.branch] != none);
      REQUIRE(anchor_compute != none);
      REQUIRE(branch_compute[r.branch] >= anchor_compute);
    }
  }
}

// The anchor's decisions of one generation (extra evaluations left out).
std::string anchor_pattern(const std::vector<easycache::step_record>& trace) {
  std::string p;
  for (const auto& r : trace)
    if (r.branch == 0 && r.reason != reason::extra_evaluation) p += r.action == action::skip ? 'S' : 'C';
  return p;
}

// An Euler loop over steps [first, steps) of a schedule, one branch, with the
// reference's decisions taken on the same inputs (a generation of steps − first).
struct euler_result {
  std::string ours, reference;
  VectorXd x;
};
euler_result euler(easycache::controller<VectorXd>& cache, const easycache::config& cfg, std::size_t first,
                   std::size_t steps, bool pass_steps) {
  easycache::config reference_cfg = cfg;
  reference_cfg.steps = steps - first;
  oracle::model reference(reference_cfg);
  const auto sigmas = sigmas_of(steps);
  euler_result result;
  result.x = start_noise();
  VectorXd v;
  for (std::size_t i = first; i < steps; ++i) {
    easycache::step_info info{i, sigmas[i]};
    if (pass_steps) info.of(steps);
    auto model = [&](const VectorXd& in) { return velocity(in, sigmas[i], 0); };
    cache.step(result.x, v, info, model);
    const auto r = reference.step(to_std(result.x), i - first, 0,
                                  [&](const oracle::vec& in) { return to_std(model(Eigen::Map<const VectorXd>(
                                      in.data(), static_cast<Eigen::Index>(in.size())))); });
    result.reference += r.action == action::skip ? 'S' : 'C';
    result.x += (sigmas[i + 1] - sigmas[i]) * v;
  }
  result.ours = anchor_pattern(cache.trace());
  check_no_stale_replay(cache.trace(), 1);
  return result;
}

easycache::config loop_config(std::size_t steps = 50) {
  easycache::config cfg = easycache::config::hunyuan_video(steps);
  cfg.threshold = 0.08;
  return cfg;
}

}  // namespace

TEST_CASE("sampler loops: Euler, 50 steps, the reference's decisions", "[loops]") {
  easycache::controller<VectorXd> cache(loop_config());
  const auto run = euler(cache, loop_config(), 0, 50, false);
  CHECK(run.ours == run.reference);
  CHECK(cache.stats().skips > 10);  // the rule was exercised
  CHECK(run.ours.back() == 'C');
}

TEST_CASE("sampler loops: img2img starting at step 20 of 50", "[loops][schedule]") {
  // The sampler passes its own indices; the warm-up counts from the generation's
  // first step, and the schedule's last step is computed.
  for (const bool pass_steps : {false, true}) {
    easycache::controller<VectorXd> cache(loop_config());
    const auto run = euler(cache, loop_config(), 20, 50, pass_steps);
    CHECK(run.ours == run.reference);
    REQUIRE(cache.trace().size() == 30);
    CHECK(cache.trace().front().step == 20);
    for (std::size_t i = 0; i < 5; ++i) CHECK(cache.trace()[i].reason == reason::warmup);
    CHECK(cache.trace().back().reason == reason::last_step);
    CHECK(cache.stats().skips > 0);
  }
}

TEST_CASE("sampler loops: a schedule shorter than config.steps computes its real last step", "[loops][schedule]") {
  // config says 50; the sampler runs 30 (a changed slider) and says so.
  easycache::config cfg = loop_config(50);
  cfg.threshold = 1e9;  // skips whatever the forced rules allow
  easycache::controller<VectorXd> cache(cfg);
  const auto run = euler(cache, cfg, 0, 30, true);
  CHECK(run.ours == run.reference);
  REQUIRE(cache.trace().size() == 30);
  CHECK(cache.trace().back().action == action::compute);
  CHECK(cache.trace().back().reason == reason::last_step);
  CHECK(cache.trace()[28].action == action::skip);
}

TEST_CASE("sampler loops: the step count changes between generations without reset()", "[loops][schedule]") {
  easycache::config cfg = loop_config(50);
  easycache::controller<VectorXd> cache(cfg);
  for (const std::size_t steps : {50u, 30u, 8u, 50u, 4u}) {
    INFO(steps << " steps");
    const auto run = euler(cache, cfg, 0, steps, true);
    CHECK(run.ours == run.reference);
    CHECK(cache.trace().size() == steps);
    CHECK(cache.trace().back().action == action::compute);
    // Each generation decides as a fresh controller would.
    easycache::controller<VectorXd> fresh(cfg);
    CHECK(euler(fresh, cfg, 0, steps, true).ours == run.ours);
  }
}

TEST_CASE("sampler loops: few-step schedules with the presets", "[loops][schedule][config]") {
  for (std::size_t steps = 1; steps <= 100; ++steps) {
    INFO(steps << " steps");
    for (const easycache::config& cfg :
         {easycache::config::wan21(steps), easycache::config::wan21_i2v(steps),
          easycache::config::hunyuan_video(steps), easycache::config::comfyui(steps)}) {
      REQUIRE_NOTHROW(cfg.validate());
      CHECK(cfg.warmup_steps <= steps);
      if (cfg.window) continue;
      CHECK(cfg.warmup_steps >= 1);
    }
  }
  CHECK(easycache::config::wan21(50).warmup_steps == 10);  // the reference's own settings
  CHECK(easycache::config::wan21(100).warmup_steps == 10);
  CHECK(easycache::config::wan21_i2v(40).warmup_steps == 10);
  CHECK(easycache::config::hunyuan_video(50).warmup_steps == 5);
  CHECK(easycache::config::wan21(8).warmup_steps == 2);
  CHECK(easycache::config::wan21(4).warmup_steps == 1);
  CHECK(easycache::config::hunyuan_video(4).warmup_steps == 1);

  // 8 and 4 steps (distilled models): usable, and the reference's decisions.
  for (const std::size_t steps : {8u, 4u}) {
    easycache::config cfg = easycache::config::hunyuan_video(steps);
    cfg.threshold = 1e9;
    easycache::controller<VectorXd> cache(cfg);
    const auto run = euler(cache, cfg, 0, steps, false);
    CHECK(run.ours == run.reference);
    CHECK(run.ours.front() == 'C');
    CHECK(run.ours.back() == 'C');
    CHECK(cache.stats().skips == steps - 3);  // warm-up 1, one more compute for k, the last step
  }
}

TEST_CASE("sampler loops: Heun with extra evaluations", "[loops][heun]") {
  const std::size_t steps = 30;
  easycache::config cfg = loop_config(steps);
  easycache::controller<VectorXd> cache(cfg);
  oracle::model reference(cfg);
  const auto sigmas = sigmas_of(steps);
  VectorXd x = start_noise(), v, v2;
  std::string expected;
  for (std::size_t i = 0; i < steps; ++i) {
    auto model = [&](const VectorXd& in, const easycache::step_info& s) { return velocity(in, s.timestep, 0); };
    const VectorXd x_in = x;
    cache.step(x, v, {i, sigmas[i]}, model);
    expected += reference.step(to_std(x_in), i, 0, [&](const oracle::vec& in) {
      return to_std(velocity(Eigen::Map<const VectorXd>(in.data(), static_cast<Eigen::Index>(in.size())), sigmas[i], 0));
    }).action == action::skip ? 'S' : 'C';
    const double h = sigmas[i + 1] - sigmas[i];
    if (i + 1 < steps) {
      const VectorXd predicted = x + h * v;
      easycache::step_info second{i, sigmas[i + 1]};
      second.extra_evaluation = true;
      cache.step(predicted, v2, second, model);
      x += 0.5 * h * (v + v2);
    } else {
      x += h * v;
    }
  }
  CHECK(anchor_pattern(cache.trace()) == expected);
  CHECK(cache.stats().extra_evaluations == steps - 1);
  CHECK(cache.stats().skips > 0);
  check_no_stale_replay(cache.trace(), 1);
}

TEST_CASE("sampler loops: a multistep solver feeding earlier outputs back, every predictor", "[loops][multistep]") {
  // DPM-Solver++(2M) on a flow-matching path x = (1 − σ)·x0 + σ·noise, whose
  // model output is the velocity; the solver keeps the previous x0 estimate,
  // which on a skipped step is the cached prediction's.
  const std::size_t steps = 40;
  for (const auto predictor : {easycache::skip_predictor::constant, easycache::skip_predictor::linear_in_timestep,
                               easycache::skip_predictor::last_output}) {
    easycache::config cfg = loop_config(steps);
    cfg.predictor = predictor;
    easycache::controller<VectorXd> cache(cfg);
    easycache::config exact = cfg;
    exact.threshold = 0;
    easycache::controller<VectorXd> every_step(exact);
    oracle::model reference(cfg);
    const auto sigmas = sigmas_of(steps);
    auto solve = [&](easycache::controller<VectorXd>& c, std::string* expected) {
      VectorXd x = start_noise(), v, x0_prev;
      for (std::size_t i = 0; i < steps; ++i) {
        const double s = sigmas[i], s_next = sigmas[i + 1];
        auto model = [&](const VectorXd& in) { return velocity(in, s, 0); };
        const VectorXd x_in = x;
        c.step(x, v, {i, s}, model);
        if (expected)
          *expected += reference.step(to_std(x_in), i, 0, [&](const oracle::vec& in) {
            return to_std(model(Eigen::Map<const VectorXd>(in.data(), static_cast<Eigen::Index>(in.size()))));
          }).action == action::skip ? 'S' : 'C';
        const VectorXd x0 = x - s * v;  // data estimate from the velocity
        VectorXd d = x0;
        if (x0_prev.size() && i + 1 < steps) d = 1.5 * x0 - 0.5 * x0_prev;  // second order, uniform steps
        x0_prev = x0;
        // x_next = (1 − σ')·d + σ'·(x − (1 − σ)·d)/σ, the flow-matching update for a data estimate d.
        x = s_next * ((x - (1 - s) * d) / s) + (1 - s_next) * d;
      }
      return x;
    };
    std::string expected;
    const VectorXd cached = solve(cache, predictor == easycache::skip_predictor::constant ? &expected : nullptr);
    const VectorXd exact_x = solve(every_step, nullptr);
    INFO("predictor " << static_cast<int>(predictor));
    if (predictor == easycache::skip_predictor::constant) CHECK(anchor_pattern(cache.trace()) == expected);
    CHECK(cache.stats().skips > 0);
    CHECK(every_step.stats().skips == 0);
    CHECK(cached.allFinite());
    // A skipped step's prediction in the solver's history stays close to the exact run.
    CHECK((cached - exact_x).cwiseAbs().mean() < 0.05 * exact_x.cwiseAbs().mean());
    CHECK(cache.trace().back().action == action::compute);
    check_no_stale_replay(cache.trace(), 1);
  }
}

TEST_CASE("sampler loops: guidance on part of the schedule never replays a stale branch vector",
          "[loops][guidance]") {
  // Branch 1 (unconditional) only where guidance is on: [5, 35), or [0, 10) and [20, 50).
  const std::size_t steps = 50;
  struct window_set {
    const char* name;
    std::function<bool(std::size_t)> guided;
  };
  for (const window_set& w : {window_set{"[5, 35)", [](std::size_t i) { return i >= 5 && i < 35; }},
                              window_set{"[0, 10) + [20, 50)", [](std::size_t i) { return i < 10 || i >= 20; }}}) {
    INFO(w.name);
    easycache::config cfg = loop_config(steps);
    cfg.branches = 2;
    easycache::controller<VectorXd> cache(cfg);
    oracle::model reference(loop_config(steps));  // the anchor's decisions do not depend on branch 1
    const auto sigmas = sigmas_of(steps);
    VectorXd x = start_noise(), cond, uncond;
    std::string expected;
    for (std::size_t i = 0; i < steps; ++i) {
      const VectorXd x_in = x;
      cache.step(x, cond, {i, sigmas[i], 0}, [&](const VectorXd& in) { return velocity(in, sigmas[i], 0); });
      expected += reference.step(to_std(x_in), i, 0, [&](const oracle::vec& in) {
        return to_std(velocity(Eigen::Map<const VectorXd>(in.data(), static_cast<Eigen::Index>(in.size())), sigmas[i], 0));
      }).action == action::skip ? 'S' : 'C';
      VectorXd guided = cond;
      if (w.guided(i)) {
        cache.step(x, uncond, {i, sigmas[i], 1}, [&](const VectorXd& in) { return velocity(in, sigmas[i], 1); });
        guided = uncond + 2.0 * (cond - uncond);
      }
      x += (sigmas[i + 1] - sigmas[i]) * guided;
    }
    CHECK(anchor_pattern(cache.trace()) == expected);
    check_no_stale_replay(cache.trace(), 2);
    // The branch's first evaluation after it was left out while the anchor computed is computed.
    std::size_t stale = 0, branch_skips = 0;
    for (const auto& r : cache.trace()) {
      if (r.branch != 1) continue;
      stale += r.reason == reason::stale_branch;
      branch_skips += r.action == action::skip;
    }
    CHECK(branch_skips > 0);
    if (std::string(w.name) != "[5, 35)") CHECK(stale == 1);
  }
}

TEST_CASE("sampler loops: batched CFG in one tensor", "[loops][guidance]") {
  // HunyuanVideo with real CFG: both halves in one tensor, one branch.
  const std::size_t steps = 50;
  easycache::controller<VectorXd> cache(loop_config(steps));
  oracle::model reference(loop_config(steps));
  const auto sigmas = sigmas_of(steps);
  VectorXd x = start_noise(), v;
  auto batched = [&](const VectorXd& in, double sigma) {
    VectorXd out(2 * kSize);
    out.head(kSize) = velocity(in.head(kSize), sigma, 0);
    out.tail(kSize) = velocity(in.tail(kSize), sigma, 1);
    return out;
  };
  std::string expected;
  for (std::size_t i = 0; i < steps; ++i) {
    VectorXd both(2 * kSize);
    both << x, x;
    cache.step(both, v, {i, sigmas[i]}, [&](const VectorXd& in) { return batched(in, sigmas[i]); });
    expected += reference.step(to_std(both), i, 0, [&](const oracle::vec& in) {
      return to_std(batched(Eigen::Map<const VectorXd>(in.data(), static_cast<Eigen::Index>(in.size())), sigmas[i]));
    }).action == action::skip ? 'S' : 'C';
    const VectorXd guided = v.tail(kSize) + 3.0 * (v.head(kSize) - v.tail(kSize));
    x += (sigmas[i + 1] - sigmas[i]) * guided;
  }
  CHECK(anchor_pattern(cache.trace()) == expected);
  CHECK(cache.stats().skips > 0);
  check_no_stale_replay(cache.trace(), 1);
}

TEST_CASE("sampler loops: a denoiser that throws once mid-run, the loop logs it and goes on", "[loops][errors]") {
  const std::size_t steps = 30;
  for (const std::size_t branches : {1u, 2u}) {
    INFO(branches << " branches");
    easycache::config cfg = loop_config(steps);
    cfg.branches = branches;
    easycache::controller<VectorXd> cache(cfg);
    const auto sigmas = sigmas_of(steps);
    VectorXd x = start_noise();
    std::vector<VectorXd> v(branches);
    std::size_t failures = 0;
    const std::size_t failing_step = 14;
    std::vector<bool> failed(steps, false);
    for (std::size_t i = 0; i < steps; ++i) {
      for (std::size_t b = 0; b < branches; ++b) {
        try {
          cache.step(x, v[b], {i, sigmas[i], b}, [&](const VectorXd& in) {
            if (i == failing_step && b == 0) throw std::runtime_error("out of memory");
            return velocity(in, sigmas[i], b);
          });
        } catch (const std::runtime_error&) {
          ++failures;  // logged; the step's update is left out
          failed[i] = true;
        }
      }
      if (!failed[i]) x += (sigmas[i + 1] - sigmas[i]) * (branches > 1 ? v[1] + 2.0 * (v[0] - v[1]) : v[0]);
    }
    CHECK(failures == 1);
    // Every other call was accepted: steps × branches − 1 evaluations.
    CHECK(cache.stats().evaluations == steps * branches - 1);
    const auto& trace = cache.trace();
    for (const auto& r : trace) {
      if (r.step == failing_step) {
        CHECK(r.branch == 1);  // the other branch of the failed step: computed
        CHECK(r.action == action::compute);
        CHECK(r.reason == reason::out_of_sequence);
      }
      if (r.step == failing_step + 1 && r.branch == 0) {
        CHECK(r.action == action::compute);
        CHECK(r.reason == reason::out_of_sequence);
      }
    }
    CHECK(trace.back().step == steps - 1);
    CHECK(trace.back().action == action::compute);
    CHECK(cache.stats().skips > 0);
    check_no_stale_replay(trace, branches);
  }
}

TEST_CASE("two-phase API with batched guidance: both begun, then both finished", "[loops][two_phase]") {
  const std::size_t steps = 30;
  easycache::config cfg = loop_config(steps);
  cfg.branches = 2;
  easycache::controller<VectorXd> batched(cfg), sequential(cfg);
  const auto sigmas = sigmas_of(steps);
  VectorXd x = start_noise(), cond, uncond, cond_seq, uncond_seq;
  for (std::size_t i = 0; i < steps; ++i) {
    const auto p0 = batched.begin_step(x, {i, sigmas[i], 0});
    const auto p1 = batched.begin_step(x, {i, sigmas[i], 1});
    CHECK(p0.action() == p1.action());
    if (p0.compute() || p1.compute()) {  // one model call of batch 2
      cond = velocity(x, sigmas[i], 0);
      uncond = velocity(x, sigmas[i], 1);
    }
    if (i == 3) {
      CHECK_THROWS_WITH(batched.finish_step(p1, x, uncond), Catch::Contains("before branch 0 of that step has finished"));
    }
    batched.finish_step(p0, x, cond);
    batched.finish_step(p1, x, uncond);
    sequential.step(x, cond_seq, {i, sigmas[i], 0}, [&](const VectorXd& in) { return velocity(in, sigmas[i], 0); });
    sequential.step(x, uncond_seq, {i, sigmas[i], 1}, [&](const VectorXd& in) { return velocity(in, sigmas[i], 1); });
    REQUIRE(cond == cond_seq);
    REQUIRE(uncond == uncond_seq);
    x += (sigmas[i + 1] - sigmas[i]) * (uncond + 2.0 * (cond - uncond));
  }
  CHECK(test::pattern(batched.trace(), 0) == test::pattern(sequential.trace(), 0));
  CHECK(test::pattern(batched.trace(), 1) == test::pattern(sequential.trace(), 1));
  CHECK(batched.stats().skips > 0);

  // Branch 0 begun again after branch 1 began: branch 1's pending follows the old one.
  easycache::controller<VectorXd> again(cfg);
  VectorXd out = velocity(x, 1.0, 0), out1 = velocity(x, 1.0, 1);
  again.finish_step(again.begin_step(x, {0, 1.0, 0}), x, out);
  again.finish_step(again.begin_step(x, {0, 1.0, 1}), x, out1);
  const auto first = again.begin_step(x, {1, 0.9, 0});
  const auto branch = again.begin_step(x, {1, 0.9, 1});
  const auto second = again.begin_step(x, {1, 0.9, 0});
  (void)first;
  again.finish_step(second, x, out);
  CHECK_THROWS_WITH(again.finish_step(branch, x, out1), Catch::Contains("was begun again since"));
  CHECK_NOTHROW(again.finish_step(again.begin_step(x, {1, 0.9, 1}), x, out1));
}

TEST_CASE("branch 0 twice at a step is refused with a hint at extra_evaluation", "[loops][errors]") {
  easycache::controller<VectorXd> cache(test::small_config());
  VectorXd out;
  cache.step(test::constant(4, 0), out, {0}, test::affine);
  CHECK_THROWS_WITH(cache.step(test::constant(4, 0), out, {0}, test::affine),
                    Catch::Contains("branch 0 evaluated twice at step 0") && Catch::Contains("extra_evaluation"));
  CHECK(cache.stats().steps == 1);  // not restarted
  for (std::size_t i = 1; i < 5; ++i) cache.step(test::constant(4, double(i)), out, {i}, test::affine);
  CHECK_THROWS_WITH(cache.step(test::constant(4, 4), out, {4}, test::affine),
                    Catch::Contains("twice at step 4") && Catch::Contains("extra_evaluation"));
  CHECK(cache.stats().steps == 5);
}

TEST_CASE("a moved-from controller refuses to step; assigning one makes it usable", "[loops][errors]") {
  easycache::config cfg = test::small_config();
  cfg.branches = 2;
  easycache::controller<VectorXd> cache(cfg);
  VectorXd out;
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t b = 0; b < 2; ++b) cache.step(test::constant(4, double(i)), out, {i, 0.0, b}, test::affine);
  easycache::controller<VectorXd> moved(std::move(cache));
  for (std::size_t b = 0; b < 2; ++b) {
    // NOLINTNEXTLINE(bugprone-use-after-move): what this test is about
    CHECK_THROWS_WITH(cache.step(test::constant(4, 3), out, {3, 0.0, b}, test::affine),
                      Catch::Contains("moved from"));
  }
  CHECK_THROWS_WITH(cache.begin_step(test::constant(4, 0), {0}), Catch::Contains("moved from"));
  CHECK_THROWS_WITH(cache.reset(cfg), Catch::Contains("moved from"));
  cache.reset();  // no-throw, and harmless
  // The moved-to controller goes on where the generation was.
  moved.step(test::constant(4, 3), out, {3, 0.0, 0}, test::affine);
  CHECK(moved.stats().steps == 4);
  cache = easycache::controller<VectorXd>(cfg);
  cache.step(test::constant(4, 0), out, {0}, test::affine);
  CHECK(cache.stats().steps == 1);
  easycache::controller<VectorXd> assigned(cfg);
  assigned = std::move(moved);
  assigned.step(test::constant(4, 3), out, {3, 0.0, 1}, test::affine);
  CHECK(assigned.stats().evaluations == 8);
}

TEST_CASE("step_info from int loop counters, and negative ones refused", "[loops][errors]") {
  const int i = 3, b = 1, n = 20;
  easycache::step_info info{i, 0.5, b};
  info.of(n);
  CHECK(info.index == 3);
  CHECK(info.branch == 1);
  CHECK(info.steps == 20);
  const int negative = -1;
  CHECK_THROWS_WITH((easycache::step_info{negative, 0.5}), Catch::Contains("index must be >= 0 (got -1)"));
  CHECK_THROWS_WITH((easycache::step_info{0, 0.5, negative}), Catch::Contains("branch must be >= 0 (got -1)"));
}

TEST_CASE("a returning denoiser that returns its input is refused and leaves out as it was", "[loops][errors]") {
  using buffer = easycache::host_buffer<float>;
  easycache::controller<buffer> cache(test::small_config());
  std::vector<float> x_values(4, 1.0f), out_values(4, 0.0f);
  const buffer x{x_values.data(), 4};
  buffer out{out_values.data(), 4};
  auto returns_input = [](const buffer& in) { return in; };
  CHECK_THROWS_WITH(cache.step(x, out, {0}, returns_input), Catch::Contains("the denoiser returned its input"));
  CHECK(out.data == out_values.data());  // not rebound to x
  // Usable at once: the same step with a proper denoiser, then the next one.
  std::vector<float> produced(4, 9.0f);
  auto model = [&](const buffer&) { return buffer{produced.data(), 4}; };
  CHECK_NOTHROW(cache.step(x, out, {0}, model));
  CHECK_NOTHROW(cache.step(x, out, {1}, model));
  CHECK(cache.stats().steps == 2);
}

TEST_CASE("an (x, out) denoiser returning bool: false is a failure, handled as a throw", "[loops][errors]") {
  easycache::controller<VectorXd> cache(test::small_config());
  VectorXd out;
  bool ok = true;
  auto engine = [&](const VectorXd& x, VectorXd& v) {
    v = test::affine(x);
    return ok;
  };
  cache.step(test::constant(4, 0), out, {0}, engine);
  ok = false;
  CHECK_THROWS_AS(cache.step(test::constant(4, 1), out, {1}, engine), easycache::denoiser_failed);
  CHECK_THROWS_WITH(cache.step(test::constant(4, 1), out, {1}, engine),
                    Catch::Contains("returned false (failed) at step 1, branch 0"));
  CHECK(cache.stats().steps == 1);  // nothing taken from the failed call
  ok = true;
  cache.step(test::constant(4, 1), out, {1}, engine);  // retried
  CHECK(cache.stats().steps == 2);
  CHECK(out == test::affine(test::constant(4, 1)));
}

TEST_CASE("step(): any failure of branch 0 after its decision makes the step a failed one", "[loops][errors]") {
  // A host output of the wrong size is found after begin_step; the caller's
  // loop goes on with the other branch of that step, then the next step.
  using buffer = easycache::host_buffer<float>;
  easycache::config cfg = test::small_config();
  cfg.branches = 2;
  easycache::controller<buffer> cache(cfg);
  std::vector<float> x_values(4, 0.0f), out_values(4), short_values(3);
  const buffer x{x_values.data(), 4};
  buffer out{out_values.data(), 4}, wrong{short_values.data(), 3};
  auto model = [](const buffer& in, buffer& v) {
    for (std::size_t i = 0; i < in.size; ++i) v.data[i] = in.data[i] + 8.0f;
  };
  for (std::size_t b = 0; b < 2; ++b) cache.step(x, out, {0, 0.0, b}, model);
  CHECK_THROWS_WITH(cache.step(x, wrong, {1, 0.0, 0}, model), Catch::Contains("output has 3 elements"));
  cache.step(x, out, {1, 0.0, 1}, model);  // accepted and computed, not refused after its call
  CHECK(cache.trace().back().reason == reason::out_of_sequence);
  cache.step(x, out, {2, 0.0, 0}, model);  // a gap after the failed step: computed
  CHECK(cache.trace().back().action == action::compute);
  CHECK(cache.stats().steps == 2);
}

TEST_CASE("other branches are of branch 0's schedule unless they give their own", "[loops][schedule]") {
  easycache::config cfg = test::small_config(4);  // config says 4; the sampler runs 8
  cfg.branches = 2;
  easycache::controller<VectorXd> cache(cfg);
  VectorXd out;
  for (std::size_t i = 0; i < 8; ++i) {
    easycache::step_info anchor{i, 0.0, 0};
    anchor.of(8);
    cache.step(test::constant(4, double(i)), out, anchor, test::affine);
    CHECK_NOTHROW(cache.step(test::constant(4, double(i)), out, {i, 0.0, 1}, test::affine));
  }
  CHECK(cache.stats().evaluations == 16);
  CHECK(cache.trace().back().action == action::compute);  // step 7, the schedule's last
}
