// begin_step / finish_step, extra evaluations, the statistics reduction hook
// and the linear-in-timestep predictor.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include <easycache/backends/host_buffer.hpp>

#include "helpers.hpp"

using Catch::Matchers::Contains;
using Eigen::VectorXd;
using test::affine;
using test::small_config;
using easycache::action;

TEST_CASE("begin_step and finish_step give the same run as step()", "[two_phase]") {
  easycache::controller<VectorXd> manual(small_config()), wrapped(small_config());
  int calls = 0;
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    VectorXd a(4), b;
    auto p = manual.begin_step(x, {t});
    if (p.compute()) {
      ++calls;
      a = affine(x);  // the engine runs its model itself
    }
    manual.finish_step(p, x, a);
    wrapped.step(x, b, {t}, affine);
    CHECK(a == b);
    CHECK(p.action() == wrapped.trace().back().action);
  }
  CHECK(calls == 4);
  CHECK(test::pattern(manual.trace()) == "CCSSSSCC");
}

TEST_CASE("an abandoned pending step takes no effect and may be begun again", "[two_phase]") {
  easycache::controller<VectorXd> cache(small_config());
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    VectorXd out(4);
    auto first = cache.begin_step(x, {t});
    auto second = cache.begin_step(x, {t});  // e.g. after the model threw
    CHECK(first.action() == second.action());
    CHECK_THROWS_WITH(cache.finish_step(first, x, out), Contains("not the latest begin_step"));
    if (second.compute()) out = affine(x);
    cache.finish_step(second, x, out);
    CHECK_THROWS_WITH(cache.finish_step(second, x, out), Contains("not the latest begin_step"));
  }
  CHECK(test::pattern(cache.trace()) == "CCSSSSCC");
}

TEST_CASE("finish_step refuses pendings made stale by reset, the next step or another controller", "[two_phase][errors]") {
  easycache::config cfg = small_config();
  cfg.branches = 2;
  easycache::controller<VectorXd> cache(cfg), other(cfg);
  const VectorXd x0 = test::constant(4, 0.0), x1 = test::constant(4, 1.0), x2 = test::constant(4, 2.0);
  VectorXd out = affine(x0);
  // Both controllers' first pendings carry the same number: the other's is still refused.
  auto mine = cache.begin_step(x0, {0});
  auto theirs = other.begin_step(x0, {0});
  CHECK_THROWS_WITH(cache.finish_step(theirs, x0, out), Contains("not the latest begin_step"));
  cache.finish_step(mine, x0, out);
  // Branch 1 begun at step 0, then branch 0 finishes step 1: that step 0 is over.
  auto late = cache.begin_step(x0, {0, 0.0, 1});
  cache.step(x1, out, {1}, affine);
  VectorXd late_out = affine(x0);
  CHECK_THROWS_WITH(cache.finish_step(late, x0, late_out), Contains("not the latest begin_step"));
  CHECK(cache.stats().evaluations == 2);
  cache.step(x1, out, {1, 0.0, 1}, affine);  // branch 1 of step 1 is still possible
  // Begun before reset(): the generation it belongs to is gone, its statistics stay as they were.
  auto dropped = cache.begin_step(x2, {2});
  cache.reset();
  VectorXd dropped_out = affine(x2);
  CHECK_THROWS_WITH(cache.finish_step(dropped, x2, dropped_out), Contains("not the latest begin_step"));
  CHECK(cache.stats().evaluations == 3);
  // Begun before reset(config) with fewer branches: an easycache::error, not std::out_of_range.
  cache.step(x0, out, {0}, affine);
  auto branch1 = cache.begin_step(x0, {0, 0.0, 1});
  cache.reset(small_config());
  cache.step(x0, out, {0}, affine);
  CHECK_THROWS_WITH(cache.finish_step(branch1, x0, late_out), Contains("not the latest begin_step"));
  CHECK(cache.stats().evaluations == 1);
}

TEST_CASE("finish_step refuses another input size or a wrong output", "[two_phase][errors]") {
  easycache::controller<VectorXd> cache(small_config());
  const VectorXd x = test::constant(4, 0.0);
  auto p = cache.begin_step(x, {0});
  VectorXd wrong = test::constant(3, 1.0), out = affine(x);
  CHECK_THROWS_WITH(cache.finish_step(p, test::constant(5, 0.0), out), Contains("input of 5 elements"));
  CHECK_THROWS_WITH(cache.finish_step(p, x, wrong), Contains("denoiser output has 3 elements"));
  CHECK_NOTHROW(cache.finish_step(p, x, out));
  CHECK(cache.stats().steps == 1);
}

TEST_CASE("extra evaluations: without a generation, or of a branch out of range", "[two_phase][multi_evaluation][errors]") {
  easycache::controller<VectorXd> cache(small_config());
  easycache::step_info extra{0};
  extra.extra_evaluation = true;
  VectorXd out;
  CHECK_THROWS_WITH(cache.step(test::constant(4, 0), out, extra, affine),
                    Contains("extra evaluation at step 0 without a generation in progress"));
  cache.step(test::constant(4, 0), out, {0}, affine);
  extra.branch = 1;
  CHECK_THROWS_WITH(cache.step(test::constant(4, 0), out, extra, affine), Contains("branch 1 out of range"));
  // Any input size: it never meets the cached state.
  extra.branch = 0;
  CHECK_NOTHROW(cache.step(test::constant(7, 0), out, extra, affine));
  CHECK(cache.stats().extra_evaluations == 1);
}

TEST_CASE("finish_step checks its input and output as begin_step and step do", "[two_phase][errors][host]") {
  // A null host buffer of the begun size used to reach the commit pass (a null
  // pointer read); it is refused and the pending can still be finished.
  easycache::controller<easycache::host_buffer<float>> cache(small_config());
  std::vector<float> values(4, 1.0f), output(4, 9.0f);
  easycache::host_buffer<float> x{values.data(), 4}, null_x{nullptr, 4}, out{output.data(), 4};
  auto p = cache.begin_step(x, {0});
  CHECK_THROWS_WITH(cache.finish_step(p, null_x, out), Contains("host_buffer has a null data pointer and 4 elements"));
  // The output too: without memory, or the input itself.
  easycache::host_buffer<float> null_out{nullptr, 4};
  CHECK_THROWS_WITH(cache.finish_step(p, x, null_out), Contains("host_buffer has a null data pointer and 4 elements"));
  CHECK_THROWS_WITH(cache.finish_step(p, x, x), Contains("out must not share memory with x"));
  CHECK(cache.stats().evaluations == 0);
  CHECK_NOTHROW(cache.finish_step(p, x, out));
  CHECK(cache.stats().calls == 1);
}

TEST_CASE("extra evaluations (Heun) are computed and counted but never cached", "[two_phase][multi_evaluation]") {
  easycache::controller<VectorXd> heun(small_config()), plain(small_config());
  int extra_calls = 0;
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    VectorXd out, extra;
    heun.step(x, out, {t}, affine);
    plain.step(x, out, {t}, affine);
    if (t + 1 < 8) {
      easycache::step_info second{t, 0.0, 0};
      second.extra_evaluation = true;
      heun.step(test::constant(4, 1000.0 + double(t)), extra, second, [&](const VectorXd& in) {
        ++extra_calls;
        return affine(in);
      });
      CHECK(extra == affine(test::constant(4, 1000.0 + double(t))));
    }
  }
  // The extra evaluations change neither the decisions nor the cached state.
  std::vector<easycache::step_record> primary;
  for (const auto& r : heun.trace())
    if (r.reason != easycache::reason::extra_evaluation) primary.push_back(r);
  CHECK(test::pattern(primary) == test::pattern(plain.trace()));
  CHECK(extra_calls == 7);
  const auto& s = heun.stats();
  CHECK(s.steps == 8);
  CHECK(s.extra_evaluations == 7);
  CHECK(s.evaluations == 15);
  CHECK(s.calls == 4 + 7);
  CHECK(s.skips == 4);
  CHECK(s.speedup_in_calls() == Approx(15.0 / 11.0));
  CHECK(s.count(easycache::reason::extra_evaluation) == 0);  // reasons count anchor decisions only
  std::size_t extra_records = 0;
  for (const auto& r : heun.trace()) extra_records += r.reason == easycache::reason::extra_evaluation;
  CHECK(extra_records == 7);
}

TEST_CASE("a statistics reduction that makes a mean negative gives degenerate statistics", "[two_phase][reduction]") {
  // Sums of absolute values cannot be negative; a hook that makes one so used
  // to give a negative ε and a skip on every decision step (E only decreased).
  // A count of 0 gives infinite or NaN means: degenerate as well.
  for (std::size_t slot : {std::size_t{0}, std::size_t{1}, easycache::statistic_slot_count}) {
    easycache::controller<VectorXd> cache(small_config());
    cache.set_statistics_reduction([slot](double* values, std::size_t count) {
      values[slot] = slot + 1 == count ? 0.0 : -1.0 - values[slot];
    });
    for (std::size_t t = 0; t < 8; ++t) {
      VectorXd out;
      cache.step(test::constant(4, double(t)), out, {t}, affine);
    }
    CHECK(test::pattern(cache.trace()) == "CCCCCCCC");
    CHECK(cache.stats().count(easycache::reason::degenerate_statistics) == 5);
  }
}

TEST_CASE("several extra evaluations a step (Runge-Kutta) are all recorded", "[two_phase][multi_evaluation][trace]") {
  // The trace reserves one extra evaluation per branch and step; beyond that its
  // records used to be dropped silently (trace size != evaluations).
  easycache::controller<VectorXd> cache(small_config());
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, affine);
    for (int k = 0; k < 3; ++k) {
      easycache::step_info extra{t};
      extra.extra_evaluation = true;
      cache.step(test::constant(4, double(t) + 0.5), out, extra, affine);
    }
  }
  CHECK(cache.stats().evaluations == 32);
  CHECK(cache.stats().extra_evaluations == 24);
  REQUIRE(cache.trace().size() == 32);
  CHECK(cache.trace().back().reason == easycache::reason::extra_evaluation);
  CHECK(test::pattern(cache.trace()) == "CCCCCCCCSCCCSCCCSCCCSCCCCCCCCCCC");  // CCSSSSCC, each followed by 3 extras
}

TEST_CASE("a statistics reduction sees sums and count and its result decides", "[two_phase][reduction]") {
  // A hook that adds a second, identical shard: sums and count double, means stay,
  // so the decisions must not change; one that adds a shard with a huge change
  // must turn skips into computes.
  easycache::controller<VectorXd> reference(small_config()), doubled(small_config()), disturbed(small_config());
  std::size_t calls_to_hook = 0;
  doubled.set_statistics_reduction([&](double* values, std::size_t count) {
    REQUIRE(count == easycache::statistic_slot_count + 1);
    CHECK(values[count - 1] == 4.0);
    for (std::size_t i = 0; i < count; ++i) values[i] *= 2;
    ++calls_to_hook;
  });
  disturbed.set_statistics_reduction([&](double* values, std::size_t count) {
    values[static_cast<std::size_t>(easycache::statistic_slot::input_change)] += 1000.0;
    values[count - 1] += 4.0;
  });
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    reference.step(test::constant(4, double(t)), out, {t}, affine);
    doubled.step(test::constant(4, double(t)), out, {t}, affine);
    disturbed.step(test::constant(4, double(t)), out, {t}, affine);
  }
  CHECK(test::pattern(doubled.trace()) == test::pattern(reference.trace()));
  CHECK(calls_to_hook == 5);  // decision steps 2..6; forced steps need no statistics
  CHECK(test::pattern(disturbed.trace()) == "CCCCCCCC");
}

TEST_CASE("linear-in-timestep predictor extrapolates the cached vector", "[two_phase][predictor]") {
  // Δ(σ) = 3σ + 1 exactly (v = x + 3σ + 1): the linear predictor is exact, the
  // constant one is off by 3·(σ − σ_last).
  easycache::config cfg = small_config();
  cfg.threshold = 10;
  easycache::config linear = cfg;
  linear.predictor = easycache::skip_predictor::linear_in_timestep;
  easycache::controller<VectorXd> constant_cache(cfg), linear_cache(linear);
  for (std::size_t t = 0; t < 8; ++t) {
    const double sigma = 1.0 - double(t) / 8;
    const VectorXd x = test::constant(3, double(t) * 0.1);
    auto model = [&](const VectorXd& in) { return VectorXd((in.array() + 3 * sigma + 1).matrix()); };
    VectorXd a, b;
    constant_cache.step(x, a, {t, sigma}, model);
    linear_cache.step(x, b, {t, sigma}, model);
    const VectorXd exact = model(x);
    if (linear_cache.trace().back().action == action::skip) {
      CHECK(b.isApprox(exact, 1e-12));
      CHECK(std::abs(a(0) - exact(0)) == Approx(3 * (7.0 / 8 - sigma)));  // Δ of step 1 (σ = 7/8)
    }
  }
  CHECK(test::pattern(linear_cache.trace()) == test::pattern(constant_cache.trace()));
  CHECK(linear_cache.stats().skips == 5);
}

TEST_CASE("last-output predictor returns each branch's last computed output", "[two_phase][predictor]") {
  // v = x + 3σ + 1 on branch 0 and v = 2y − σ on branch 1 (with its own input y):
  // a skip returns v of the branch's last computed step, not x_t + Δ.
  easycache::config cfg = small_config();
  cfg.threshold = 10;
  cfg.branches = 2;
  cfg.predictor = easycache::skip_predictor::last_output;
  easycache::controller<VectorXd> cache(cfg);
  VectorXd last_cond, last_uncond;
  std::size_t skips = 0;
  for (std::size_t t = 0; t < 8; ++t) {
    const double sigma = 1.0 - double(t) / 8;
    const VectorXd x = test::constant(3, double(t) * 0.1), y = test::constant(5, 2.0 + double(t));
    VectorXd a, b;
    cache.step(x, a, {t, sigma, 0}, [&](const VectorXd& in) { return VectorXd((in.array() + 3 * sigma + 1).matrix()); });
    cache.step(y, b, {t, sigma, 1}, [&](const VectorXd& in) { return VectorXd((2 * in.array() - sigma).matrix()); });
    if (cache.trace().back().action == action::skip) {
      ++skips;
      CHECK(a.isApprox(last_cond, 1e-12));
      CHECK(b.isApprox(last_uncond, 1e-12));
    } else {
      last_cond = a;
      last_uncond = b;
    }
  }
  CHECK(skips == 5);
}

TEST_CASE("linear predictor: timesteps whose differences overflow fall back to the constant vector", "[two_phase][predictor]") {
  // Computed at t = 1e308 and -1e308, skipped at 1e308 again: the weight is
  // inf / -inf = NaN, and x + Δa + NaN·(Δa − Δb) was NaN everywhere although
  // Δa = Δb. A non-finite weight now gives x + Δa.
  easycache::config cfg = small_config();
  cfg.threshold = std::numeric_limits<double>::infinity();
  cfg.predictor = easycache::skip_predictor::linear_in_timestep;
  easycache::controller<VectorXd> cache(cfg);
  const double timesteps[] = {1e308, -1e308, 1e308};
  for (std::size_t t = 0; t < 3; ++t) {
    VectorXd out;
    const VectorXd x = test::constant(4, double(t));
    cache.step(x, out, {t, timesteps[t]}, affine);
    CHECK(out == affine(x));
  }
  CHECK(test::pattern(cache.trace()) == "CCS");
}

TEST_CASE("the linear predictor needs timesteps", "[two_phase][predictor][errors]") {
  easycache::config cfg = small_config();
  cfg.predictor = easycache::skip_predictor::linear_in_timestep;
  easycache::controller<VectorXd> cache(cfg);
  VectorXd out;
  CHECK_THROWS_WITH(cache.step(test::constant(4, 0), out, {0}, affine),
                    Contains("needs a finite step_info::timestep (got nan at step 0, branch 0)"));
  CHECK_THROWS_WITH(cache.step(test::constant(4, 0), out, {0, std::numeric_limits<double>::infinity()}, affine),
                    Contains("(got inf at step 0"));
  // Extra evaluations take no part in caching: no timestep needed.
  cache.step(test::constant(4, 0), out, {0, 1.0}, affine);
  easycache::step_info extra{0};
  extra.extra_evaluation = true;
  CHECK_NOTHROW(cache.step(test::constant(4, 0), out, extra, affine));
}

TEST_CASE("linear predictor: two computes at one timestep, or timesteps 1e-300 apart", "[two_phase][predictor]") {
  easycache::config cfg = small_config();
  cfg.threshold = std::numeric_limits<double>::infinity();
  cfg.predictor = easycache::skip_predictor::linear_in_timestep;
  // The same timestep twice: no slope to extrapolate with, x + Δa.
  {
    easycache::controller<VectorXd> cache(cfg);
    const double timesteps[] = {0.5, 0.5, 0.25};
    for (std::size_t t = 0; t < 3; ++t) {
      VectorXd out;
      const VectorXd x = test::constant(4, double(t));
      cache.step(x, out, {t, timesteps[t]}, [&](const VectorXd& in) { return VectorXd((in.array() + double(t)).matrix()); });
      CHECK(out == (x.array() + (t < 2 ? double(t) : 1.0)).matrix());
    }
    CHECK(test::pattern(cache.trace()) == "CCS");
  }
  // Computed 1e-300 apart, skipped 1 away: w = 1e300 is finite in double but
  // beyond float's range, so a float tensor's prediction is ±∞ or NaN, as the
  // extrapolation's own arithmetic in float gives (not checked element by element).
  {
    easycache::controller<easycache::host_buffer<float>> cache(cfg);
    const double timesteps[] = {1e-300, 2e-300, 1.0};
    std::vector<float> values(4), output(4);
    easycache::host_buffer<float> x{values.data(), 4}, out{output.data(), 4};
    for (std::size_t t = 0; t < 3; ++t) {
      values.assign(4, float(t));
      cache.step(x, out, {t, timesteps[t]}, [&](const easycache::host_buffer<float>& in, easycache::host_buffer<float>& v) {
        for (std::size_t i = 0; i < 4; ++i) v.data[i] = in.data[i] + float(t * i);
      });
    }
    REQUIRE(test::pattern(cache.trace()) == "CCS");
    CHECK(std::isnan(output[0]));  // Δa = Δb there: ∞ · 0
    CHECK(std::isinf(output[1]));
  }
}
