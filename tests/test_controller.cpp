// Hand-checked traces of small cases against algorithm.md.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "helpers.hpp"

using easycache::action;
using easycache::reason;
using Eigen::VectorXd;
using test::affine;
using test::small_config;

TEST_CASE("reference rule: hand-checked trace of an 8-step run", "[controller][spec]") {
  easycache::controller<VectorXd> cache(small_config());
  std::vector<VectorXd> outputs;
  int calls = 0;
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd x = test::constant(4, static_cast<double>(t)), out;
    cache.step(x, out, {t, 1.0 - static_cast<double>(t) / 8}, [&](const VectorXd& in) {
      ++calls;
      return affine(in);
    });
    outputs.push_back(out);
  }
  const auto& trace = cache.trace();
  // t=0,1 warm-up. k = |9-8|/|1-0| = 1 after t=1. From t=2: dx = 1, ‖v_1‖ = 9,
  // ε = 1/9 per step; E = 1/9, 2/9, 3/9, 4/9 < 0.5 skip; 5/9 >= 0.5 computes at
  // t=6 (its ε is dropped: E = 0). t=7 is the last step.
  CHECK(test::pattern(trace) == "CCSSSSCC");
  CHECK(test::reasons(trace) == std::vector<reason>{reason::warmup, reason::warmup, reason::below_threshold,
                                                     reason::below_threshold, reason::below_threshold,
                                                     reason::below_threshold, reason::above_threshold,
                                                     reason::last_step});
  for (std::size_t t = 2; t <= 6; ++t) {
    CHECK(trace[t].input_change == Approx(1.0));
    CHECK(trace[t].transformation_rate == Approx(1.0));
    CHECK(trace[t].output_norm == Approx(9.0));
    CHECK(trace[t].predicted_error == Approx(1.0 / 9));
    CHECK(trace[t].accumulated_error == Approx(static_cast<double>(t - 1) / 9));
  }
  CHECK(std::isnan(trace[0].input_change));
  CHECK(std::isnan(trace[7].accumulated_error));
  CHECK(cache.policy().accumulated_error() == 0.0);
  CHECK(calls == 4);
  // A skipped step returns x_t + (v_1 − x_1) = t + 8: exact here, since v is affine with slope 1.
  for (std::size_t t = 0; t < 8; ++t) CHECK(outputs[t].isApprox(affine(test::constant(4, double(t)))));
  const auto& stats = cache.stats();
  CHECK(stats.steps == 8);
  CHECK(stats.evaluations == 8);
  CHECK(stats.calls == 4);
  CHECK(stats.skips == 4);
  CHECK(stats.speedup_in_calls() == 2.0);
  CHECK(stats.count(reason::below_threshold) == 4);
  CHECK(stats.count(reason::warmup) == 2);
}

TEST_CASE("dx is measured between consecutive steps whether skipped or not", "[controller][spec]") {
  // Inputs 0, 1, 2, 4, 7: consecutive changes 1, 1, 2, 3 (the distance since the
  // last compute would be 1, 3, 6 instead).
  easycache::config cfg = small_config();
  cfg.steps = 6;
  cfg.threshold = 10;
  easycache::controller<VectorXd> cache(cfg);
  const double inputs[] = {0, 1, 2, 4, 7, 8};
  for (std::size_t t = 0; t < 6; ++t) {
    VectorXd out;
    cache.step(test::constant(2, inputs[t]), out, {t}, affine);
  }
  const auto& trace = cache.trace();
  CHECK(test::pattern(trace) == "CCSSSC");
  CHECK(trace[2].input_change == Approx(1));
  CHECK(trace[3].input_change == Approx(2));
  CHECK(trace[4].input_change == Approx(3));
  CHECK(trace[4].accumulated_error == Approx((1 + 2 + 3) / 9.0));
}

TEST_CASE("k is refreshed on every computed step and the crossing step resets E", "[controller][spec]") {
  // v = x^2 (elementwise, x >= 0): k changes with every compute.
  easycache::config cfg;
  cfg.steps = 10;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.3;
  easycache::controller<VectorXd> cache(cfg);
  auto square = [](const VectorXd& x) { return VectorXd(x.array().square()); };
  double k = std::numeric_limits<double>::quiet_NaN(), norm_v = 0, accumulated = 0, x_last = 0, v_last = 0;
  double x_prev = 0;
  bool have_last = false;
  for (std::size_t t = 0; t < 10; ++t) {
    const double x = 1.0 + 0.25 * static_cast<double>(t);
    VectorXd out;
    cache.step(test::constant(3, x), out, {t}, square);
    const auto& r = cache.trace().back();
    // Recompute by hand, step by step, in the reference's order.
    action expected = action::compute;
    if (t >= 2 && t < 9) {
      const double dx = std::abs(x - x_prev);
      accumulated += k * dx / norm_v;
      CHECK(r.accumulated_error == Approx(accumulated));
      if (accumulated < 0.3) {
        expected = action::skip;
      } else {
        accumulated = 0;
      }
    } else {
      accumulated = 0;
    }
    x_prev = x;
    CHECK(r.action == expected);
    if (expected == action::compute) {
      const double v = x * x;
      if (have_last) k = std::abs(v - v_last) / std::abs(x - x_last);
      x_last = x;
      v_last = v;
      norm_v = v;
      have_last = true;
      CHECK(out(0) == v);
    } else {
      CHECK(out(0) == Approx(x + (v_last - x_last)));
    }
  }
  CHECK(test::pattern(cache.trace()).find('S') != std::string::npos);
  CHECK(test::pattern(cache.trace()).find("SC") != std::string::npos);
}

TEST_CASE("the first step after warm-up can already be skipped", "[controller][spec]") {
  easycache::config cfg = small_config();
  cfg.warmup_steps = 2;
  easycache::controller<VectorXd> cache(cfg);
  for (std::size_t t = 0; t < 3; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, affine);
  }
  CHECK(test::pattern(cache.trace()) == "CCS");
}

TEST_CASE("without warm-up k exists from the second computed step", "[controller][spec]") {
  easycache::config cfg = small_config();
  cfg.warmup_steps = 0;
  easycache::controller<VectorXd> cache(cfg);
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, affine);
  }
  const auto r = test::reasons(cache.trace());
  CHECK(r[0] == reason::no_history);
  CHECK(r[1] == reason::no_history);
  CHECK(r[2] == reason::below_threshold);
}

TEST_CASE("tau = 0 reproduces the uncached loop bit for bit", "[controller][properties]") {
  easycache::config cfg;
  cfg.steps = 30;
  cfg.warmup_steps = 3;
  cfg.threshold = 0.0;
  auto model = [](const Eigen::VectorXf& x, const easycache::step_info& info) {
    const float s = static_cast<float>(info.timestep);
    return Eigen::VectorXf((x.array() * (1.0f - s) + x.array().sin() * s).matrix());
  };
  auto run = [&](bool cached) {
    easycache::controller<Eigen::VectorXf> cache(cfg);
    Eigen::VectorXf x = Eigen::VectorXf::LinSpaced(257, -2.0f, 3.0f), out;
    for (std::size_t t = 0; t < 30; ++t) {
      const double sigma = 1.0 - static_cast<double>(t) / 30.0;
      easycache::step_info info{t, sigma};
      if (cached) {
        cache.step(x, out, info, model);
      } else {
        out = model(x, info);
      }
      x += (out - x) * (1.0f / 30.0f);
    }
    return std::make_pair(x, cache.stats().skips);
  };
  const auto [plain, no_skips] = run(false);
  const auto [cached, skips] = run(true);
  CHECK(skips == 0);
  CHECK((plain.array() == cached.array()).all());
}

TEST_CASE("tau = infinity calls the denoiser on warm-up steps and the last step only", "[controller][properties]") {
  for (std::size_t warmup : {0u, 1u, 4u, 10u}) {
    easycache::config cfg;
    cfg.steps = 20;
    cfg.warmup_steps = warmup;
    cfg.threshold = std::numeric_limits<double>::infinity();
    easycache::controller<Eigen::VectorXf> cache(cfg);
    Eigen::VectorXf x = Eigen::VectorXf::LinSpaced(64, 0.5f, 1.5f), out;
    std::vector<std::size_t> called;
    for (std::size_t t = 0; t < 20; ++t) {
      cache.step(x, out, {t}, [&](const Eigen::VectorXf& in, Eigen::VectorXf& v, const easycache::step_info& i) {
        called.push_back(i.index);
        v = in * 0.5f + Eigen::VectorXf::Ones(in.size());
      });
      x = out * 0.1f + x * 0.9f;
    }
    std::vector<std::size_t> expected;
    // Without warm-up, steps 0 and 1 still compute: k needs two computed steps.
    for (std::size_t t = 0; t < std::max<std::size_t>(warmup, 2); ++t) expected.push_back(t);
    expected.push_back(19);
    INFO("warmup " << warmup);
    CHECK(called == expected);
  }
}

TEST_CASE("the Tensor-returning overload gives the same result", "[controller]") {
  easycache::controller<VectorXd> a(small_config()), b(small_config());
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd x = test::constant(4, double(t)), out;
    a.step(x, out, {t}, affine);
    VectorXd returned = b.step(x, {t}, affine);
    CHECK(returned == out);
  }
  CHECK(test::pattern(a.trace()) == test::pattern(b.trace()));
}

TEST_CASE("every denoiser form is accepted", "[controller]") {
  struct functor {
    int* calls;
    void operator()(const VectorXd& x, VectorXd& out) const {
      ++*calls;
      out = affine(x);
    }
  };
  int calls = 0;
  std::function<VectorXd(const VectorXd&, const easycache::step_info&)> wrapped =
      [&](const VectorXd& x, const easycache::step_info&) {
        ++calls;
        return affine(x);
      };
  easycache::controller<VectorXd> cache(small_config());
  VectorXd out;
  cache.step(test::constant(4, 0), out, {0}, functor{&calls});
  cache.step(test::constant(4, 1), out, {1}, wrapped);
  cache.step(test::constant(4, 2), out, {2}, [&](const VectorXd& x, VectorXd& o, const easycache::step_info&) {
    ++calls;
    o = affine(x);
  });
  CHECK(calls == 2);  // step 2 is skipped
  CHECK(out == affine(test::constant(4, 2)));
}

TEST_CASE("the decision callback sees every evaluation", "[controller][trace]") {
  easycache::controller<VectorXd> cache(small_config());
  std::vector<easycache::step_record> seen;
  cache.on_decision([&](const easycache::step_record& r) { seen.push_back(r); });
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t, 0.5}, affine);
  }
  REQUIRE(seen.size() == cache.trace().size());
  for (std::size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].step == cache.trace()[i].step);
    CHECK(seen[i].action == cache.trace()[i].action);
    CHECK(seen[i].timestep == 0.5);
  }
}
