// The named variants (off by default), hand-checked.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "helpers.hpp"

using Eigen::VectorXd;
using test::affine;
using easycache::reason;

TEST_CASE("defaults are the reference's rules", "[variants][config]") {
  const easycache::config c;
  CHECK(c.input_change == easycache::input_change_reference::previous_step);
  CHECK_FALSE(c.window.has_value());
  CHECK(c.sampling.stride == 1);
  const auto wan = easycache::config::wan21();
  CHECK(wan.threshold == 0.05);
  CHECK(wan.warmup_steps == 10);
  CHECK(wan.branches == 2);
  CHECK(wan.steps == 50);
  CHECK(easycache::config::wan21_i2v().steps == 40);
  const auto hunyuan = easycache::config::hunyuan_video();
  CHECK(hunyuan.threshold == 0.025);
  CHECK(hunyuan.warmup_steps == 5);
  CHECK(hunyuan.branches == 1);
  const auto comfy = easycache::config::comfyui(30, 2, 64, 64);
  CHECK(comfy.threshold == 0.2);
  CHECK(comfy.input_change == easycache::input_change_reference::last_compute);
  CHECK(comfy.window->start == 0.15);
  CHECK(comfy.window->end == 0.95);
  CHECK(comfy.sampling.stride == 8);
  CHECK_NOTHROW(comfy.validate());
  const auto quality = easycache::config::quality(50);
  CHECK(quality.predictor == easycache::skip_predictor::linear_in_timestep);
  CHECK(quality.estimate == easycache::error_estimate::predictor_residual);
  CHECK(quality.warmup_steps == 5);
  CHECK(quality.branches == 2);
  CHECK(easycache::config::quality(8, 1).warmup_steps == 1);
  CHECK_NOTHROW(quality.validate());
  CHECK(c.estimate == easycache::error_estimate::output_drift);
}

TEST_CASE("variant: dx measured from the last computed step", "[variants]") {
  easycache::config cfg;
  cfg.steps = 8;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.5;
  cfg.input_change = easycache::input_change_reference::last_compute;
  easycache::controller<VectorXd> cache(cfg);
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, affine);
  }
  // x_last = 1, ‖v_1‖ = 9: t=2 dx 1, E 1/9; t=3 dx 2, E 3/9; t=4 dx 3, E 6/9 -> compute.
  // x_last = 4, ‖v_4‖ = 12: t=5 dx 1, E 1/12; t=6 dx 2, E 3/12; t=7 last step.
  const auto& trace = cache.trace();
  CHECK(test::pattern(trace) == "CCSSCSSC");
  CHECK(trace[3].input_change == Approx(2));
  CHECK(trace[3].accumulated_error == Approx(3.0 / 9));
  CHECK(trace[4].accumulated_error == Approx(6.0 / 9));
  CHECK(trace[6].accumulated_error == Approx(3.0 / 12));
}

TEST_CASE("variant: start/end window instead of warm-up and last step", "[variants]") {
  easycache::config cfg;
  cfg.steps = 20;
  cfg.warmup_steps = 10;  // ignored with a window
  cfg.threshold = 100;
  cfg.window = easycache::schedule_window{0.15, 0.95};
  easycache::controller<VectorXd> cache(cfg);
  for (std::size_t t = 0; t < 20; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, affine);
  }
  // p = t / 20: t < 3 (p < 0.15) and t = 19 (p >= 0.95) are outside.
  CHECK(test::pattern(cache.trace()) == "CCCSSSSSSSSSSSSSSSSC");
  const auto r = test::reasons(cache.trace());
  CHECK(r[0] == reason::outside_window);
  CHECK(r[2] == reason::outside_window);
  CHECK(r[19] == reason::outside_window);
  CHECK(r[3] == reason::below_threshold);
}

TEST_CASE("variant: the window follows step_info::progress when given", "[variants]") {
  easycache::config cfg;
  cfg.steps = 10;
  cfg.threshold = 100;
  cfg.window = easycache::schedule_window{0.5, 1.0};
  easycache::controller<VectorXd> cache(cfg);
  for (std::size_t t = 0; t < 10; ++t) {
    VectorXd out;
    easycache::step_info info{t};
    info.progress = t < 6 ? 0.1 : 0.9;  // e.g. 1 − sigma of a shifted schedule
    cache.step(test::constant(4, double(t)), out, info, affine);
  }
  CHECK(test::pattern(cache.trace()) == "CCCCCCSSSS");
}

TEST_CASE("variant: statistics on a subsample equal those of the subsampled tensor", "[variants]") {
  // Height 6, width 8, two planes, stride 2: rows 0,2,4 and columns 0,2,4,6 take part.
  const std::size_t height = 6, width = 8, planes = 2;
  easycache::config cfg;
  cfg.steps = 16;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.3;
  easycache::config sub_cfg = cfg;
  cfg.sampling = easycache::statistics_sampling{2, height, width};
  easycache::controller<VectorXd> sampled(cfg), small(sub_cfg);
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> noise(-50, 50);
  auto model = [](const VectorXd& x) { return VectorXd((x.array() * 0.5 + x.array().cos()).matrix()); };
  for (std::size_t t = 0; t < 16; ++t) {
    VectorXd full(static_cast<Eigen::Index>(planes * height * width)), part(static_cast<Eigen::Index>(planes * 3 * 4));
    Eigen::Index k = 0;
    for (std::size_t p = 0; p < planes; ++p)
      for (std::size_t h = 0; h < height; ++h)
        for (std::size_t w = 0; w < width; ++w) {
          const auto i = static_cast<Eigen::Index>((p * height + h) * width + w);
          if (h % 2 == 0 && w % 2 == 0) {
            full(i) = std::sin(0.3 * double(t) + double(k)) * (1 + 0.1 * double(t));
            part(k++) = full(i);
          } else {
            full(i) = noise(rng);  // never looked at by the statistics
          }
        }
    VectorXd out_full, out_part;
    sampled.step(full, out_full, {t}, model);
    small.step(part, out_part, {t}, model);
    const auto& a = sampled.trace().back();
    const auto& b = small.trace().back();
    INFO("step " << t);
    CHECK(a.action == b.action);
    if (!std::isnan(b.input_change)) CHECK(a.input_change == Approx(b.input_change));
    if (!std::isnan(b.transformation_rate)) CHECK(a.transformation_rate == Approx(b.transformation_rate));
    if (!std::isnan(b.accumulated_error)) CHECK(a.accumulated_error == Approx(b.accumulated_error));
  }
  CHECK(sampled.stats().skips > 0);
  CHECK(sampled.stats().skips < 13);
}

TEST_CASE("measure_forced_steps fills dx and k on forced steps without changing decisions", "[variants][trace]") {
  easycache::config cfg;
  cfg.steps = 8;
  cfg.warmup_steps = 3;
  cfg.threshold = 0.5;
  easycache::config measured = cfg;
  measured.measure_forced_steps = true;
  easycache::controller<VectorXd> a(cfg), b(measured);
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    a.step(test::constant(4, double(t)), out, {t}, affine);
    b.step(test::constant(4, double(t)), out, {t}, affine);
  }
  CHECK(test::pattern(a.trace()) == test::pattern(b.trace()));
  CHECK(std::isnan(a.trace()[1].input_change));
  CHECK(b.trace()[1].input_change == Approx(1));
  CHECK(std::isnan(b.trace()[1].transformation_rate));  // one computed step so far
  CHECK(b.trace()[2].transformation_rate == Approx(1));
  CHECK(b.trace()[7].input_change == Approx(1));
}

TEST_CASE("error_estimate::predictor_residual weighs each step's drift by its steps since the last compute",
          "[variants][estimate]") {
  // x_t = t, v = x + 8 (affine): dx 1 and k 1 every step, ‖v_c‖ = c + 8.
  easycache::config cfg;
  cfg.steps = 12;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.55;
  cfg.predictor = easycache::skip_predictor::linear_in_timestep;
  cfg.estimate = easycache::error_estimate::predictor_residual;
  easycache::controller<VectorXd> cache(cfg);
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t, 1.0 - double(t) / 12.0}, affine);
  }
  // After the compute at c = 1 (‖v‖ 9): ε = n/9 at n steps after it: E 1/9, 3/9,
  // then 6/9 ≥ 0.55 at t = 4 → compute (‖v‖ 12): E 1/12, 3/12, 6/12, then 10/12 at
  // t = 8 → compute (‖v‖ 16): 1/16, 3/16; t = 11 is the last step.
  const auto& trace = cache.trace();
  CHECK(test::pattern(trace) == "CCSSCSSSCSSC");
  CHECK(trace[4].predicted_error == Approx(3.0 / 9));
  CHECK(trace[4].accumulated_error == Approx(6.0 / 9));
  CHECK(trace[7].accumulated_error == Approx(6.0 / 12));
  CHECK(trace[8].predicted_error == Approx(4.0 / 12));
  CHECK(trace[10].accumulated_error == Approx(3.0 / 16));

  // The reference's estimate on the same trajectory: no weighting, so longer runs.
  cfg.estimate = easycache::error_estimate::output_drift;
  easycache::controller<VectorXd> drift(cfg);
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    VectorXd out;
    drift.step(test::constant(4, double(t)), out, {t, 1.0 - double(t) / 12.0}, affine);
  }
  CHECK(drift.trace()[4].predicted_error == Approx(1.0 / 9));
  CHECK(test::pattern(drift.trace()) != test::pattern(trace));
}

TEST_CASE("error_estimate::predictor_residual changes nothing for the constant and last-output predictors",
          "[variants][estimate]") {
  for (easycache::skip_predictor predictor : {easycache::skip_predictor::constant, easycache::skip_predictor::last_output}) {
    std::string patterns[2];
    for (int residual = 0; residual < 2; ++residual) {
      easycache::config cfg;
      cfg.steps = 12;
      cfg.warmup_steps = 2;
      cfg.threshold = 0.55;
      cfg.predictor = predictor;
      if (residual) cfg.estimate = easycache::error_estimate::predictor_residual;
      easycache::controller<VectorXd> cache(cfg);
      for (std::size_t t = 0; t < cfg.steps; ++t) {
        VectorXd out;
        cache.step(test::constant(4, double(t)), out, {t, 1.0 - double(t) / 12.0}, affine);
      }
      patterns[residual] = test::pattern(cache.trace());
    }
    CHECK(patterns[0] == patterns[1]);
  }
}
