// The peers' decision rules (comfyui_oracle.hpp, sdcpp_oracle.hpp) on small
// trajectories whose decisions follow by hand from docs/variants.md, then the
// presets config::comfyui and config::stable_diffusion_cpp against them on
// random trajectories: every decision must be the peer's (issue 15).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>
#include <easycache/backends/host_buffer.hpp>

#include "comfyui_oracle.hpp"
#include "helpers.hpp"
#include "sdcpp_oracle.hpp"

namespace {

std::vector<float> filled(std::size_t n, float value) { return std::vector<float>(n, value); }

// sigma_i = 1 − i/steps: the flow schedule of shift 1, on which percents and sigmas coincide.
double linear_sigma(std::size_t i, std::size_t steps) {
  return 1.0 - static_cast<double>(i) / static_cast<double>(steps);
}

// The hand-checked trajectory: ten steps, x_i = i and v_i = 10 + i/2 in every
// element, so dx = |i − j|, ‖v_j‖ = 10 + j/2 and every k is 1/2.
float hand_input(std::size_t i) { return static_cast<float>(i); }
float hand_output(std::size_t i) { return 10.0f + 0.5f * static_cast<float>(i); }

std::string pattern(const std::vector<bool>& skips) {
  std::string p;
  for (bool s : skips) p += s ? 'S' : 'C';
  return p;
}

// One condition, separate calls, 2x2 planes: steps [0, steps) of the ten-step linear schedule.
template <class Input, class Output>
std::vector<comfyui_oracle::decision> run_comfyui_one(comfyui_oracle::model& m, std::size_t steps, Input input,
                                                      Output output) {
  std::vector<comfyui_oracle::decision> out;
  for (std::size_t i = 0; i < steps; ++i) {
    m.begin_evaluation();
    out.push_back(m.evaluate(linear_sigma(i, 10), {{0}, filled(4, input(i)), filled(4, output(i))}));
  }
  return out;
}

template <class Input, class Output>
std::vector<sdcpp_oracle::decision> run_sdcpp_one(sdcpp_oracle::model& m, std::size_t steps, Input input,
                                                  Output output) {
  std::vector<sdcpp_oracle::decision> out;
  for (std::size_t i = 0; i < steps; ++i)
    out.push_back(m.evaluate(static_cast<int>(i), static_cast<float>(linear_sigma(i, 10)), 0, filled(4, input(i)),
                             filled(4, output(i))));
  return out;
}

template <class Decision>
std::string pattern_of(const std::vector<Decision>& decisions) {
  std::string p;
  for (const auto& d : decisions) p += d.skip ? 'S' : 'C';
  return p;
}

comfyui_oracle::settings comfyui_linear(double start_percent, double end_percent) {
  comfyui_oracle::settings s = comfyui_oracle::flow_settings(1.0, start_percent, end_percent);
  s.height = 2;
  s.width = 2;
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------
// The oracles on hand-made trajectories.

TEST_CASE("peer oracles: percent-to-sigma maps of ComfyUI and stable-diffusion.cpp", "[peer][oracle]") {
  using comfyui_oracle::flow_percent_to_sigma;
  using sdcpp_oracle::discrete_flow_percent_to_sigma;
  CHECK(flow_percent_to_sigma(1.0, 0.15) == Approx(0.85));
  CHECK(flow_percent_to_sigma(3.0, 0.15) == Approx(3 * 0.85 / (1 + 2 * 0.85)));
  CHECK(flow_percent_to_sigma(3.0, 0.0) == 1.0);
  CHECK(flow_percent_to_sigma(3.0, 1.0) == 0.0);
  // stable-diffusion.cpp maps the percent to t = 999 (1 − p), then sigma to the shifted (t + 1) / 1000.
  CHECK(discrete_flow_percent_to_sigma(1.0f, 0.15f) == Approx(0.85015f));
  CHECK(discrete_flow_percent_to_sigma(3.0f, 0.15f) == Approx(3 * 0.85015 / (1 + 2 * 0.85015)).epsilon(1e-6));
  CHECK(discrete_flow_percent_to_sigma(3.0f, 0.0f) == std::numeric_limits<float>::max());
  CHECK(discrete_flow_percent_to_sigma(3.0f, 1.0f) == 0.0f);
  // The inverses used to hand the controller a progress of the peers' window.
  CHECK(comfyui_oracle::flow_sigma_to_percent(3.0, flow_percent_to_sigma(3.0, 0.4)) == Approx(0.4));
  CHECK(sdcpp_oracle::discrete_flow_sigma_to_percent(3.0, discrete_flow_percent_to_sigma(3.0f, 0.4f)) ==
        Approx(0.4).epsilon(1e-5));

  // A sigma between the two maps' start bounds is before ComfyUI's window and inside stable-diffusion.cpp's.
  comfyui_oracle::model comfy(comfyui_linear(0.15, 0.95));
  comfy.begin_evaluation();
  CHECK(comfy.evaluate(0.8501, {{0}, filled(4, 1), filled(4, 2)}).reason == comfyui_oracle::why::before_window);
  sdcpp_oracle::model sdcpp(sdcpp_oracle::flow_settings(1.0f));
  CHECK(sdcpp.evaluate(0, 0.8501f, 0, filled(4, 1), filled(4, 2)).reason == sdcpp_oracle::why::no_history);
}

TEST_CASE("comfyui oracle: two computes open the window, then E grows from the last compute", "[peer][oracle]") {
  comfyui_oracle::model m(comfyui_linear(0.15, 0.75));  // window: sigma <= 0.85 and sigma > 0.25
  const auto d = run_comfyui_one(m, 10, hand_input, hand_output);
  // 0, 1: before the window. 2: the anchor is chosen, nothing to compare with.
  // 3: dx = 1 but no rate yet; k = 0.5 after it. 4: ε = 0.5/11.5. 5: dx = 2
  // from step 3, E = 1.5/11.5. 6: E = 3/11.5 >= 0.2, computed, E = 0. 7: ε = 0.5/13.
  // 8, 9: sigma <= 0.25, past the end.
  CHECK(pattern_of(d) == "CCCCSSCSCC");
  using comfyui_oracle::why;
  const std::vector<why> expected{
      why::before_window,   why::before_window,   why::no_history,      why::no_history, why::below_threshold,
      why::below_threshold, why::above_threshold, why::below_threshold, why::past_end,   why::past_end};
  for (std::size_t i = 0; i < d.size(); ++i) CHECK(d[i].reason == expected[i]);
  CHECK(m.total_steps_skipped() == 3);
  CHECK(m.summary(10) == "EasyCache - skipped 3/10 steps (1.43x speedup).");

  // E after step 5 is the sum of two ε measured from step 3, the last compute.
  comfyui_oracle::model upto5(comfyui_linear(0.15, 0.75));
  run_comfyui_one(upto5, 6, hand_input, hand_output);
  CHECK(upto5.cumulative_change_rate() == Approx(1.5 / 11.5));
}

TEST_CASE("comfyui oracle: window bounds are inclusive at the start and exclusive at the end", "[peer][oracle]") {
  comfyui_oracle::settings s = comfyui_linear(0.15, 0.95);
  s.start_sigma = 0.8;  // exactly sigma_2
  s.end_sigma = 0.3;    // exactly sigma_7
  comfyui_oracle::model m(s);
  const auto d = run_comfyui_one(m, 10, hand_input, hand_output);
  CHECK(d[1].reason == comfyui_oracle::why::before_window);
  CHECK(d[2].reason == comfyui_oracle::why::no_history);
  CHECK(d[6].reason != comfyui_oracle::why::past_end);
  CHECK(d[7].reason == comfyui_oracle::why::past_end);
}

TEST_CASE("comfyui oracle: only the cached differences are kept before the window", "[peer][oracle]") {
  comfyui_oracle::model m(comfyui_linear(0.15, 0.95));
  m.begin_evaluation();
  m.evaluate(1.0, {{0}, filled(4, 0), filled(4, 10)});
  CHECK(m.has_difference(0));
  CHECK_FALSE(m.anchor().has_value());
  CHECK_FALSE(m.rate().has_value());
}

TEST_CASE("comfyui oracle: no guard: an unchanged input skips, a repeated output sets k to 0", "[peer][oracle]") {
  SECTION("dx = 0 gives ε = 0 and a skip") {
    comfyui_oracle::model m(comfyui_linear(0.15, 0.95));
    const auto d = run_comfyui_one(
        m, 10, [](std::size_t i) { return hand_input(std::min<std::size_t>(i, 3)); }, hand_output);
    CHECK(d[4].skip);
    CHECK(d[4].reason == comfyui_oracle::why::below_threshold);
    CHECK(m.cumulative_change_rate() == 0.0f);
  }
  SECTION("an output equal to the previous one makes k 0: every later step of the window skips") {
    comfyui_oracle::model m(comfyui_linear(0.15, 0.95));
    const auto d = run_comfyui_one(m, 10, hand_input, [](std::size_t i) { return i <= 3 ? 11.0f : hand_output(i); });
    CHECK(pattern_of(d) == "CCCCSSSSSS");
    REQUIRE(m.rate().has_value());
    CHECK(*m.rate() == 0.0f);
  }
}

TEST_CASE("comfyui oracle: statistics on every 8th row and column of the anchor, norm on the whole output",
          "[peer][oracle]") {
  comfyui_oracle::settings s = comfyui_oracle::flow_settings(1.0);
  s.height = 9;
  s.width = 9;
  comfyui_oracle::model m(s);
  // Rows and columns 0 and 8 are sampled: 4 of the 81 elements. The others
  // move 50 times as much and hold a constant output of 20.
  auto make = [](float sampled, float other) {
    std::vector<float> v(81, other);
    for (std::size_t e : {std::size_t{0}, std::size_t{8}, std::size_t{72}, std::size_t{80}}) v[e] = sampled;
    return v;
  };
  for (std::size_t i = 0; i < 5; ++i) {
    m.begin_evaluation();
    const float fi = static_cast<float>(i);
    m.evaluate(linear_sigma(i, 10), {{0}, make(fi, 50 * fi), make(hand_output(i), 20)});
  }
  // k = 0.5 from the sampled elements; ‖v_3‖ over all 81: (4·11.5 + 77·20)/81.
  const double norm = (4 * 11.5 + 77 * 20.0) / 81;
  CHECK(m.cumulative_change_rate() == Approx(0.5 * 1 / norm).epsilon(1e-5));
}

TEST_CASE("comfyui oracle: batched conditions share the output norm, separate calls do not", "[peer][oracle]") {
  // Condition 1's output is ten times larger; its input is the same latent.
  auto uncond = [](std::size_t i) { return 100.0f + 0.5f * static_cast<float>(i); };
  comfyui_oracle::model separate(comfyui_linear(0.15, 0.95));
  comfyui_oracle::model batched(comfyui_linear(0.15, 0.95));
  std::vector<bool> separate_anchor, separate_follower, batched_anchor;
  for (std::size_t i = 0; i < 10; ++i) {
    const double sigma = linear_sigma(i, 10);
    separate.begin_evaluation();
    const auto c = separate.evaluate(sigma, {{0}, filled(4, hand_input(i)), filled(4, hand_output(i))});
    const auto u = separate.evaluate(sigma, {{1}, filled(4, hand_input(i)), filled(4, uncond(i))});
    separate_anchor.push_back(c.skip);
    separate_follower.push_back(u.skip);
    if (u.skip) CHECK(u.reason == comfyui_oracle::why::follows_anchor);
    std::vector<float> out = filled(4, hand_output(i));
    const std::vector<float> second = filled(4, uncond(i));
    out.insert(out.end(), second.begin(), second.end());
    batched.begin_evaluation();
    batched_anchor.push_back(batched.evaluate(sigma, {{0, 1}, filled(8, hand_input(i)), out}).skip);
  }
  // Separate: as the hand trajectory, τ crossed at steps 6 and 9. Batched:
  // ‖v‖ = (11.5 + 101.5)/2 = 56.5, so E after m skips is m(m+1)/226 < 0.2 up to step 9.
  CHECK(pattern(separate_anchor) == "CCCCSSCSSC");
  CHECK(separate_follower == separate_anchor);
  CHECK(pattern(batched_anchor) == "CCCCSSSSSS");
  CHECK(batched.total_steps_skipped() == 6);
}

TEST_CASE("comfyui oracle: a shape change mid-run resets the state and leaves k at 0", "[peer][oracle]") {
  comfyui_oracle::model m(comfyui_linear(0.15, 0.95));
  // From step 5 on the latent has two channels (8 elements) instead of one.
  const auto d = run_comfyui_one(m, 5, hand_input, hand_output);
  CHECK(pattern_of(d) == "CCCCS");
  std::vector<bool> after;
  for (std::size_t i = 5; i < 10; ++i) {
    m.begin_evaluation();
    after.push_back(m.evaluate(linear_sigma(i, 10), {{0}, filled(8, hand_input(i)), filled(8, hand_output(i))}).skip);
    if (i == 5) {
      REQUIRE(m.rate().has_value());
      CHECK(*m.rate() == 0.0f);
    }
  }
  // One compute rebuilds the previous input and norm; with k = 0 every ε is 0 after it.
  CHECK(pattern(after) == "CSSSS");
  CHECK(m.total_steps_skipped() == 4);  // the reset forgot the skip of step 4
}

TEST_CASE("sdcpp oracle: the hand trajectory, and nothing kept outside the window", "[peer][oracle]") {
  sdcpp_oracle::model m(sdcpp_oracle::flow_settings(1.0f, 0.15f, 0.75f));  // sigma <= 0.85015, > 0.25075
  const auto d = run_sdcpp_one(m, 10, hand_input, hand_output);
  CHECK(pattern_of(d) == "CCCCSSCSCC");
  using sdcpp_oracle::why;
  const std::vector<why> expected{
      why::outside_window,  why::outside_window,  why::no_history,      why::no_history,     why::below_threshold,
      why::below_threshold, why::above_threshold, why::below_threshold, why::outside_window, why::outside_window};
  for (std::size_t i = 0; i < d.size(); ++i) CHECK(d[i].reason == expected[i]);
  CHECK(m.summary(10) == "EasyCache skipped 3/10 steps (1.43x estimated speedup)");
  CHECK(m.summary(3) == "EasyCache skipped 3/3 steps");
  CHECK(sdcpp_oracle::model(sdcpp_oracle::flow_settings(1.0f)).summary(10) ==
        "EasyCache completed without skipping steps");

  sdcpp_oracle::model before(sdcpp_oracle::flow_settings(1.0f));
  before.evaluate(0, 1.0f, 0, filled(4, 0), filled(4, 10));
  CHECK_FALSE(before.has_difference(0));
}

TEST_CASE("sdcpp oracle: dx = 0 computes without accumulating, and k comes only from positive changes",
          "[peer][oracle]") {
  SECTION("dx = 0") {
    sdcpp_oracle::model m(sdcpp_oracle::flow_settings(1.0f));
    const auto d = run_sdcpp_one(
        m, 10, [](std::size_t i) { return hand_input(std::min<std::size_t>(i, 3)); }, hand_output);
    CHECK_FALSE(d[4].skip);
    CHECK(d[4].reason == sdcpp_oracle::why::degenerate);
    CHECK(m.rate() == 0.5f);  // the rate of step 3 stays
  }
  SECTION("a repeated output leaves the rate unset, so the next step computes too") {
    sdcpp_oracle::model m(sdcpp_oracle::flow_settings(1.0f));
    const auto d = run_sdcpp_one(m, 10, hand_input, [](std::size_t i) { return i <= 3 ? 11.0f : hand_output(i); });
    // 4: no rate, computed; k = 1 after it. 5: ε = 1/12. 6: E = 3/12, computed,
    // k = 0.5. 7, 8: E = 1.5/13. 9: E = 3/13, computed.
    CHECK(pattern_of(d) == "CCCCCSCSSC");
    CHECK(d[4].reason == sdcpp_oracle::why::no_history);
  }
}

TEST_CASE("sdcpp oracle: a size change computes once and keeps the rate, and extra evaluations touch nothing",
          "[peer][oracle]") {
  sdcpp_oracle::model m(sdcpp_oracle::flow_settings(1.0f));
  std::vector<sdcpp_oracle::decision> d;
  for (std::size_t i = 0; i < 10; ++i) {
    const std::size_t n = i < 5 ? 4 : 8;
    const float sigma = static_cast<float>(linear_sigma(i, 10));
    d.push_back(m.evaluate(static_cast<int>(i), sigma, 0, filled(n, hand_input(i)), filled(n, hand_output(i))));
    // A second evaluation of the step, as Heun's: a negative step index.
    CHECK(m.evaluate(-1, sigma, 0, filled(n, 100), filled(n, -100)).reason == sdcpp_oracle::why::extra_evaluation);
  }
  // 5: another size, computed; k = 0.5 stays. 6: ε = 0.5/12.5. 7: E = 1.5/12.5.
  // 8: E = 3/12.5, computed. 9: ε = 0.5/14.
  CHECK(pattern_of(d) == "CCCCSCSSCS");
  CHECK(d[5].reason == sdcpp_oracle::why::size_changed);
}

TEST_CASE("peer oracles: a condition without a cached difference computes while the anchor skips", "[peer][oracle]") {
  comfyui_oracle::model comfy(comfyui_linear(0.15, 0.95));
  sdcpp_oracle::model sdcpp(sdcpp_oracle::flow_settings(1.0f));
  for (std::size_t i = 0; i < 6; ++i) {
    const double sigma = linear_sigma(i, 10);
    comfy.begin_evaluation();
    const auto c0 = comfy.evaluate(sigma, {{0}, filled(4, hand_input(i)), filled(4, hand_output(i))});
    const auto s0 = sdcpp.evaluate(static_cast<int>(i), static_cast<float>(sigma), 0, filled(4, hand_input(i)),
                                   filled(4, hand_output(i)));
    if (i < 4) continue;
    // Steps 4 and 5 skip for the anchor; condition 1 appears at step 4 only.
    REQUIRE(c0.skip);
    REQUIRE(s0.skip);
    const auto c1 = comfy.evaluate(sigma, {{1}, filled(4, hand_input(i)), filled(4, 3)});
    const auto s1 =
        sdcpp.evaluate(static_cast<int>(i), static_cast<float>(sigma), 1, filled(4, hand_input(i)), filled(4, 3));
    CHECK(c1.skip == (i == 5));
    CHECK(s1.skip == (i == 5));
  }
}

// ---------------------------------------------------------------------------
// The peer options of the controller, one at a time, on hand-made trajectories.

namespace {

using Eigen::VectorXf;
using easycache::reason;

VectorXf constant_vector(std::size_t n, float value) { return VectorXf::Constant(static_cast<Eigen::Index>(n), value); }

// A config with none of the reference's forced steps: no warm-up, dx since the last compute.
easycache::config plain_config(std::size_t steps, double threshold) {
  easycache::config cfg;
  cfg.steps = steps;
  cfg.warmup_steps = 0;
  cfg.threshold = threshold;
  cfg.input_change = easycache::input_change_reference::last_compute;
  return cfg;
}

// Runs `steps` steps of one branch: input x(t), output v(t), sigma(t).
template <class Input, class Output, class Sigma>
std::vector<easycache::step_record> run_one(const easycache::config& cfg, Input x, Output v, Sigma sigma) {
  easycache::controller<VectorXf> cache(cfg);
  VectorXf out;
  for (std::size_t t = 0; t < cfg.steps; ++t)
    cache.step(x(t), out, {t, sigma(t)}, [&](const VectorXf&) { return v(t); });
  return cache.trace();
}

}  // namespace

TEST_CASE("peer options: the flow maps are the peers' percent-to-sigma maps, bit for bit", "[peer][variants]") {
  for (double shift : {1.0, 3.0, 5.0, 7.25})
    for (int i = -2; i <= 102; ++i) {
      const double percent = i / 100.0;
      INFO("shift " << shift << ", percent " << percent);
      CHECK(easycache::comfyui_flow_sigma(shift, percent) == comfyui_oracle::flow_percent_to_sigma(shift, percent));
      CHECK(easycache::stable_diffusion_cpp_flow_sigma(shift, percent) ==
            static_cast<double>(sdcpp_oracle::discrete_flow_percent_to_sigma(static_cast<float>(shift),
                                                                             static_cast<float>(percent))));
    }
  easycache::sigma_window given{easycache::sigma_map::given, 1.0, 0.7, 0.2};
  CHECK(given.sigma_of(0.15, true) == 0.7);
  CHECK(given.sigma_of(0.95, false) == 0.2);
}

TEST_CASE("peer options: the window in sigma includes its start, excludes its end, and compares in float32",
          "[peer][variants]") {
  easycache::config cfg = plain_config(10, 1e9);
  cfg.window = easycache::schedule_window{0.15, 0.95};
  cfg.window_sigma = easycache::sigma_window{easycache::sigma_map::given, 1.0, 0.8, 0.3};
  // Step 1's sigma is above 0.8 in double, equal to it in float: inside, as the peers compare.
  const double just_above = 0.8 + 1e-9;
  REQUIRE(static_cast<float>(just_above) == 0.8f);
  auto sigma = [&](std::size_t t) { return t == 1 ? just_above : 1.0 - 0.1 * static_cast<double>(t); };
  const auto trace = run_one(
      cfg, [](std::size_t t) { return constant_vector(4, static_cast<float>(t)); },
      [](std::size_t t) { return constant_vector(4, 10.0f + 0.5f * static_cast<float>(t)); }, sigma);
  // 0: sigma 1 > 0.8, before (kept: the default history). 1..6 inside (sigma
  // 0.3 + 0.1 at step 6), 1 computed for a second computed step. 7: sigma 0.3, past the end.
  CHECK(test::pattern(trace) == "CCSSSSSCCC");
  CHECK(trace[0].reason == reason::outside_window);
  CHECK(trace[1].reason == reason::no_history);
  CHECK(trace[6].reason == reason::below_threshold);
  CHECK(trace[7].reason == reason::outside_window);
}

TEST_CASE("peer options: a call without a sigma is placed by the window's percents", "[peer][variants]") {
  easycache::config cfg = plain_config(20, 1e9);
  cfg.window = easycache::schedule_window{0.15, 0.95};
  auto x = [](std::size_t t) { return constant_vector(4, static_cast<float>(t)); };
  auto v = [](std::size_t t) { return constant_vector(4, 10.0f + 0.5f * static_cast<float>(t)); };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto by_progress = run_one(cfg, x, v, [&](std::size_t) { return nan; });
  cfg.window_sigma = easycache::sigma_window{easycache::sigma_map::given, 1.0, 100.0, 50.0};  // would hold nothing
  const auto by_sigma_fallback = run_one(cfg, x, v, [&](std::size_t) { return nan; });
  CHECK(test::pattern(by_progress) == "CCCSSSSSSSSSSSSSSSSC");
  CHECK(test::pattern(by_sigma_fallback) == test::pattern(by_progress));
  CHECK(test::pattern(run_one(cfg, x, v, [](std::size_t) { return 1.0; })) == std::string(20, 'C'));
}

TEST_CASE("peer options: history outside the window: everything, the cached vectors only, or nothing",
          "[peer][variants]") {
  // A mask that skips from step 3 on; the window opens at step 3 (progress 0.3).
  std::vector<bool> mask(10, false);
  mask[0] = mask[1] = mask[2] = true;
  easycache::config cfg = plain_config(10, 0.2);
  cfg.window = easycache::schedule_window{0.3, 1.0};
  auto run = [&](easycache::outside_window_history history) {
    cfg.history_outside_window = history;
    easycache::controller<VectorXf, easycache::step_mask_policy> cache(cfg, easycache::step_mask_policy(mask));
    VectorXf out;
    for (std::size_t t = 0; t < 10; ++t)
      cache.step(constant_vector(4, static_cast<float>(t)), out, {t},
                 [&](const VectorXf& in) { return VectorXf((in.array() + 8.0f).matrix()); });
    return cache.trace();
  };
  // The mask's skips need a cached vector: kept from before the window, or none.
  CHECK(test::pattern(run(easycache::outside_window_history::keep)) == "CCCSSSSSSS");
  CHECK(test::pattern(run(easycache::outside_window_history::cached_vectors_only)) == "CCCSSSSSSS");
  const auto none = run(easycache::outside_window_history::none);
  CHECK(test::pattern(none) == "CCCCSSSSSS");
  CHECK(none[3].reason == reason::no_history);
  // The last-output predictor's anchor output is x_last + Δ, and x_last is kept
  // inside the window only: the window opens with no cached output.
  cfg.predictor = easycache::skip_predictor::last_output;
  CHECK(test::pattern(run(easycache::outside_window_history::cached_vectors_only)) == "CCCCSSSSSS");
  cfg.predictor = easycache::skip_predictor::constant;

  // With the reference rule, the window opens with no previous input, norm or k
  // unless history is kept: its first two steps are computed.
  easycache::config reference = plain_config(10, 1e9);
  reference.window = easycache::schedule_window{0.3, 1.0};
  auto x = [](std::size_t t) { return constant_vector(4, static_cast<float>(t)); };
  auto v = [](std::size_t t) { return constant_vector(4, 10.0f + 0.5f * static_cast<float>(t)); };
  auto no_sigma = [](std::size_t) { return std::numeric_limits<double>::quiet_NaN(); };
  CHECK(test::pattern(run_one(reference, x, v, no_sigma)) == "CCCSSSSSSS");
  for (auto history : {easycache::outside_window_history::cached_vectors_only, easycache::outside_window_history::none}) {
    reference.history_outside_window = history;
    const auto trace = run_one(reference, x, v, no_sigma);
    CHECK(test::pattern(trace) == "CCCCCSSSSS");
    CHECK(trace[4].reason == reason::no_history);
  }
}

TEST_CASE("peer options: batched conditions: dx and k on the first slice, the norm on the whole output",
          "[peer][variants]") {
  // Two slices of 4: the first moves by 1 a step, the second by 10; outputs likewise.
  auto x = [](std::size_t t) {
    VectorXf v(8);
    v << constant_vector(4, static_cast<float>(t)), constant_vector(4, 10.0f * static_cast<float>(t));
    return v;
  };
  auto v = [](std::size_t t) {
    VectorXf out(8);
    out << constant_vector(4, 10.0f + 0.5f * static_cast<float>(t)), constant_vector(4, 100.0f + 2.0f * static_cast<float>(t));
    return out;
  };
  auto no_sigma = [](std::size_t) { return std::numeric_limits<double>::quiet_NaN(); };
  easycache::config cfg = plain_config(4, 1e9);
  cfg.batched_conditions = 2;
  auto trace = run_one(cfg, x, v, no_sigma);
  // Step 2: dx = 1 (first slice), k = 0.5 / 1, ‖v_1‖ = mean over the first slice = 10.5.
  CHECK(trace[2].input_change == 1.0);
  CHECK(trace[2].transformation_rate == 0.5);
  CHECK(trace[2].output_norm == 10.5);
  cfg.output_norm = easycache::output_norm_scope::every_element;
  trace = run_one(cfg, x, v, no_sigma);
  CHECK(trace[2].input_change == 1.0);
  CHECK(trace[2].output_norm == (10.5 + 102.0) / 2);
  cfg.batched_conditions = 1;
  cfg.output_norm = easycache::output_norm_scope::sampled;
  trace = run_one(cfg, x, v, no_sigma);
  CHECK(trace[2].input_change == 5.5);
}

TEST_CASE("peer options: the output norm over every element while dx and k are sampled", "[peer][variants]") {
  // Every other element is sampled; the others hold 30 in the output and do not move.
  auto x = [](std::size_t t) {
    VectorXf v = constant_vector(6, 0.0f);
    for (Eigen::Index i = 0; i < 6; i += 2) v[i] = static_cast<float>(t);
    return v;
  };
  auto v = [](std::size_t t) {
    VectorXf out = constant_vector(6, 30.0f);
    for (Eigen::Index i = 0; i < 6; i += 2) out[i] = 10.0f + 0.5f * static_cast<float>(t);
    return out;
  };
  auto no_sigma = [](std::size_t) { return std::numeric_limits<double>::quiet_NaN(); };
  easycache::config cfg = plain_config(4, 1e9);
  cfg.sampling = easycache::statistics_sampling{2, 0, 0};
  CHECK(run_one(cfg, x, v, no_sigma)[2].output_norm == 10.5);
  cfg.output_norm = easycache::output_norm_scope::every_element;
  const auto trace = run_one(cfg, x, v, no_sigma);
  CHECK(trace[2].output_norm == (10.5 + 30.0) / 2);
  CHECK(trace[2].input_change == 1.0);
  CHECK(trace[2].transformation_rate == 0.5);
}

TEST_CASE("peer options: stable-diffusion.cpp's guard computes on dx = 0, and its k survives a repeated output",
          "[peer][variants]") {
  auto no_sigma = [](std::size_t) { return std::numeric_limits<double>::quiet_NaN(); };
  auto v = [](std::size_t t) { return constant_vector(4, 10.0f + 0.5f * static_cast<float>(t)); };
  SECTION("an input that stops moving") {
    auto x = [](std::size_t t) { return constant_vector(4, static_cast<float>(std::min<std::size_t>(t, 1))); };
    easycache::config cfg = plain_config(5, 0.2);
    CHECK(test::pattern(run_one(cfg, x, v, no_sigma)) == "CCSSC");  // ε = 0: skips, as ComfyUI
    cfg.guard = easycache::statistics_guard::positive_input_change;
    const auto trace = run_one(cfg, x, v, no_sigma);
    CHECK(test::pattern(trace) == "CCCCC");
    CHECK(trace[2].reason == reason::degenerate_statistics);
  }
  SECTION("an output equal to the previous one") {
    auto x = [](std::size_t t) { return constant_vector(4, static_cast<float>(t)); };
    auto repeated = [&](std::size_t t) { return t == 2 ? v(1) : v(t); };
    easycache::config cfg = plain_config(6, 0.2);
    cfg.threshold = 0.04;  // ε = 0.5/10.5: step 2 computes, k is measured there
    auto trace = run_one(cfg, x, repeated, no_sigma);
    CHECK(trace[3].transformation_rate == 0.0);  // the reference's k = 0 / 1
    cfg.rate_update = easycache::transformation_rate_update::positive_finite_only;
    trace = run_one(cfg, x, repeated, no_sigma);
    CHECK(trace[3].transformation_rate == 0.5);  // k of step 1 stays
  }
}

TEST_CASE("peer options: float32 arithmetic decides where double would not", "[peer][variants]") {
  // Steps 0 and 1 compute; step 2 decides on ε = k·dx/‖v_1‖ with k = (v_1 − v_0)/0.1f.
  const float v1 = 1.0f + 2.0f / 97.0f;
  auto x = [](std::size_t t) { return constant_vector(4, 0.1f * static_cast<float>(t)); };
  auto v = [&](std::size_t t) { return constant_vector(4, t == 0 ? 1.0f : v1); };
  auto no_sigma = [](std::size_t) { return std::numeric_limits<double>::quiet_NaN(); };
  const float dx = 0.2f - 0.1f, moved = 0.1f, change = v1 - 1.0f;
  const double k_double = static_cast<double>(change) / static_cast<double>(moved);
  const double epsilon_double = k_double * (static_cast<double>(dx) / static_cast<double>(v1));
  const float epsilon_float = (static_cast<float>(k_double) * dx) / v1;
  REQUIRE(epsilon_double < static_cast<double>(epsilon_float));
  // τ = the float ε: in float E = τ is not below τ; in double E is.
  easycache::config cfg = plain_config(4, static_cast<double>(epsilon_float));
  auto trace = run_one(cfg, x, v, no_sigma);
  CHECK(trace[2].accumulated_error == epsilon_double);
  CHECK(trace[2].reason == reason::below_threshold);
  cfg.arithmetic = easycache::decision_arithmetic::float32;
  trace = run_one(cfg, x, v, no_sigma);
  CHECK(trace[2].transformation_rate == static_cast<double>(static_cast<float>(k_double)));
  CHECK(trace[2].accumulated_error == static_cast<double>(epsilon_float));
  CHECK(trace[2].reason == reason::above_threshold);
}

TEST_CASE("peer options: float32_sequential sums in one float in element order", "[peer][variants]") {
  // Step 2's input moves by 1 in one element and by 2^-24 in four: a float
  // accumulator in order loses the small ones (1 + 2^-24 rounds to 1).
  const float tiny = std::ldexp(1.0f, -24);
  auto x = [&](std::size_t t) {
    if (t < 2) return constant_vector(5, static_cast<float>(t) - 1.0f);
    VectorXf moved = constant_vector(5, tiny);
    moved[0] = 1.0f;
    return moved;
  };
  auto v = [](std::size_t t) { return constant_vector(5, 10.0f + 0.5f * static_cast<float>(t)); };
  auto no_sigma = [](std::size_t) { return std::numeric_limits<double>::quiet_NaN(); };
  easycache::config cfg = plain_config(4, 1e9);
  const double in_double = (1.0 + 4 * static_cast<double>(tiny)) / 5;
  CHECK(run_one(cfg, x, v, no_sigma)[2].input_change == in_double);
  cfg.arithmetic = easycache::decision_arithmetic::float32;
  CHECK(run_one(cfg, x, v, no_sigma)[2].input_change == static_cast<double>(static_cast<float>(in_double)));
  cfg.arithmetic = easycache::decision_arithmetic::float32_sequential;
  REQUIRE(1.0f / 5.0f != static_cast<float>(in_double));
  CHECK(run_one(cfg, x, v, no_sigma)[2].input_change == static_cast<double>(1.0f / 5.0f));
}

TEST_CASE("peer presets: a new generation starts without k, where ComfyUI's reset leaves k = 0", "[peer][variants]") {
  // ComfyUI resets its state mid-run when the latent's shape changes, and the
  // reset sets k to 0: every later ε is 0, and the rest of the window skips.
  // Here another size starts a new generation, with no k: its window opens
  // with two computes and decides on the k it measures.
  easycache::config cfg = easycache::config::comfyui(10, 1, 2, 2);
  easycache::controller<VectorXf> cache(cfg);
  comfyui_oracle::model fresh(comfyui_linear(0.15, 0.95));
  VectorXf out;
  for (std::size_t generation = 0; generation < 2; ++generation) {
    const std::size_t n = generation == 0 ? 4 : 8;
    std::string ours, oracle;
    for (std::size_t t = 0; t < 10; ++t) {
      const float fi = static_cast<float>(t);
      cache.step(constant_vector(n, fi), out, {t, linear_sigma(t, 10)},
                 [&](const VectorXf&) { return constant_vector(n, hand_output(t)); });
      ours += cache.trace().back().action == easycache::action::skip ? 'S' : 'C';
      if (generation == 1) {
        fresh.begin_evaluation();
        oracle += fresh.evaluate(linear_sigma(t, 10), {{0}, filled(n, fi), filled(n, hand_output(t))}).skip ? 'S' : 'C';
      }
    }
    CHECK(ours == "CCCCSSCSSC");
    if (generation == 1) CHECK(ours == oracle);
  }
  CHECK(easycache::comfyui_summary(cache.stats().count(reason::below_threshold), 10) == fresh.summary(10));
}

TEST_CASE("peer presets: the peers' summary lines", "[peer][variants]") {
  for (std::size_t total : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{10}, std::size_t{50}})
    for (std::size_t skipped = 0; skipped <= total; ++skipped) {
      INFO(skipped << " of " << total);
      CHECK(easycache::comfyui_summary(skipped, total) == comfyui_oracle::model::summary_line(skipped, total));
      CHECK(easycache::stable_diffusion_cpp_summary(skipped, total) ==
            sdcpp_oracle::model::summary_line(static_cast<int>(skipped), total));
    }
  CHECK(easycache::comfyui_summary(3, 10) == "EasyCache - skipped 3/10 steps (1.43x speedup).");
  CHECK(easycache::stable_diffusion_cpp_summary(3, 10) == "EasyCache skipped 3/10 steps (1.43x estimated speedup)");
}

TEST_CASE("peer presets: the budget policy places the window by progress, and its budget holds", "[peer][variants]") {
  // Sigmas that fall slowly: by sigma the window would open late, by progress at step 3.
  const std::size_t steps = 20;
  easycache::config cfg = easycache::config::comfyui(steps);
  easycache::controller<VectorXf, easycache::budget_policy> cache(cfg, easycache::budget_policy(easycache::budget::calls(8)));
  VectorXf out;
  for (std::size_t t = 0; t < steps; ++t) {
    const double p = static_cast<double>(t) / static_cast<double>(steps);
    cache.step(constant_vector(16, static_cast<float>(t)), out, {t, 1.0 - p * p * p},
               [&](const VectorXf& in) { return VectorXf((in.array() * 0.9f + 1.0f).matrix()); });
  }
  CHECK(cache.stats().calls == 8);
  const auto r = test::reasons(cache.trace());
  CHECK(r[2] == reason::outside_window);
  CHECK(r[3] != reason::outside_window);
}

namespace {
// A host tensor type whose traits lack the scoped statistics (as the CUDA and LibTorch backends do).
struct plain_tensor {
  std::vector<float> values;
};
}  // namespace

template <>
struct easycache::tensor_traits<plain_tensor> {
  using base = easycache::host_tensor_traits<std::vector<float>, float>;
  using buffer_type = base::buffer_type;
  using workspace_type = base::workspace_type;
  static std::size_t size(const plain_tensor& t) { return t.values.size(); }
  static void allocate(buffer_type& b, const plain_tensor& like) { b.resize(like.values.size()); }
  static void prepare(workspace_type& w, const plain_tensor&) { w = workspace_type{}; }
  static void reduce_abs_diff(workspace_type& w, statistic_slot slot, const plain_tensor& x, const buffer_type& ref,
                              const statistics_sampling& s) {
    w.sums[static_cast<std::size_t>(slot)] = detail::host::sum_abs_diff(x.values.data(), ref.data(), x.values.size(), s);
  }
  static void apply_delta(const plain_tensor& x, const buffer_type& d, plain_tensor& out, buffer_type* copy) {
    detail::host::add(x.values.data(), d.data(), out.values.data(), copy ? copy->data() : nullptr, x.values.size());
  }
  static void commit(workspace_type& w, const plain_tensor& x, const plain_tensor& v, buffer_type& x_last,
                     buffer_type& delta, bool measure, const statistics_sampling& s) {
    const auto sums = detail::host::commit(x.values.data(), v.values.data(), x_last.data(), delta.data(),
                                           x.values.size(), measure, s);
    w.sums[1] = sums.output_change;
    w.sums[2] = sums.input_change;
    w.sums[3] = sums.output_norm;
  }
  static void store_delta(const plain_tensor& x, const plain_tensor& v, buffer_type& delta) {
    detail::host::subtract(v.values.data(), x.values.data(), delta.data(), x.values.size());
  }
  static void read(workspace_type& w, double (&sums)[statistic_slot_count]) {
    for (std::size_t i = 0; i < statistic_slot_count; ++i) sums[i] = w.sums[i];
  }
};

TEST_CASE("peer options: bad values are refused with the value named", "[peer][variants][errors]") {
  using Catch::Matchers::Contains;
  easycache::config cfg = easycache::config::comfyui(10);
  cfg.window.reset();
  CHECK_THROWS_WITH(cfg.validate(), Contains("window_sigma needs window"));
  for (double shift : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    easycache::config shifted = easycache::config::stable_diffusion_cpp(10, 2, shift);
    CHECK_THROWS_WITH(shifted.validate(), Contains("window_sigma.shift must be finite and > 0 (got"));
  }
  cfg = easycache::config::comfyui(10);
  cfg.window_sigma = easycache::sigma_window{easycache::sigma_map::given, 1.0, 0.2, 0.5};
  CHECK_THROWS_WITH(cfg.validate(),
                    Contains("window_sigma must satisfy start_sigma >= end_sigma, neither NaN (got start_sigma 0.2, "
                             "end_sigma 0.5)"));
  cfg.window_sigma->start_sigma = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(cfg.validate(), Contains("(got start_sigma nan"));
  cfg.window_sigma->start_sigma = std::numeric_limits<double>::infinity();
  CHECK_NOTHROW(cfg.validate());
  cfg.batched_conditions = 0;
  CHECK_THROWS_WITH(cfg.validate(), Contains("batched_conditions must be >= 1 (got 0)"));
  CHECK_THROWS_WITH((easycache::controller<VectorXf>(cfg)), Contains("batched_conditions must be >= 1 (got 0)"));

  // Inputs that are not equal slices, or slices that are not whole planes: refused at the step that begins a
  // generation, which a good input then begins.
  cfg = easycache::config::comfyui(10, 1, 2, 2);
  cfg.batched_conditions = 2;
  easycache::controller<VectorXf> cache(cfg);
  VectorXf out;
  auto model = [](const VectorXf& in) { return VectorXf((in.array() + 1.0f).matrix()); };
  CHECK_THROWS_WITH(cache.step(constant_vector(9, 1.0f), out, {0, 1.0}, model),
                    Contains("input of 9 elements is not a whole number of 2x2 planes"));
  CHECK_THROWS_WITH(cache.step(constant_vector(12, 1.0f), out, {0, 1.0}, model),
                    Contains("each of the 2 batched conditions of 6 elements is not a whole number of 2x2 planes"));
  cfg.sampling = {};
  cache.reset(cfg);
  CHECK_THROWS_WITH(cache.step(constant_vector(9, 1.0f), out, {0, 1.0}, model),
                    Contains("input of 9 elements is not 2 equal slices (config.batched_conditions)"));
  CHECK(cache.stats().steps == 0);
  CHECK_NOTHROW(cache.step(constant_vector(8, 1.0f), out, {0, 1.0}, model));
  CHECK(cache.stats().steps == 1);

  // A backend without the scoped statistics refuses the options that need them.
  using plain_controller = easycache::controller<plain_tensor>;
  CHECK_THROWS_WITH(plain_controller(easycache::config::comfyui(10)),
                    Contains("config.output_norm = every_element needs tensor_traits::reduce_abs_diff_scoped and "
                             "commit_scoped, which this tensor type's traits do not provide"));
  cfg = plain_config(10, 0.2);
  cfg.batched_conditions = 2;
  CHECK_THROWS_WITH(plain_controller(cfg), Contains("config.batched_conditions = 2 needs"));
  cfg.batched_conditions = 1;
  cfg.arithmetic = easycache::decision_arithmetic::float32;
  CHECK_THROWS_WITH(plain_controller(cfg), Contains("config.arithmetic = float32 needs"));
  cfg.arithmetic = easycache::decision_arithmetic::float32_sequential;
  plain_controller usable;
  CHECK_THROWS_WITH(usable.reset(cfg), Contains("config.arithmetic = float32_sequential needs"));
  cfg.arithmetic = easycache::decision_arithmetic::float64;
  cfg.window = easycache::schedule_window{};
  cfg.window_sigma = easycache::sigma_window{easycache::sigma_map::stable_diffusion_cpp_flow, 3.0};
  cfg.history_outside_window = easycache::outside_window_history::none;
  CHECK_NOTHROW(usable.reset(cfg));  // the rules that need no backend support
}

// ---------------------------------------------------------------------------
// Random trajectories: the controller against the oracles.

namespace {

enum class peer { comfyui, sdcpp };
// How the controller is driven: step(), or the two-phase API with every
// branch begun before the model runs (one batched model call), then finished.
enum class drive { step, two_phase };

// A scripted run: the latent of each step and what the model returns for it
// under each condition, whatever the cache decides (open loop).
struct peer_trajectory {
  std::size_t steps = 0, conds = 1, channels = 1, height = 1, width = 1;
  bool batched = false;  // ComfyUI: every condition in one call
  float threshold = 0.2f;
  double start_percent = 0.15, end_percent = 0.95;
  double model_shift = 1.0;  // the model's percent-to-sigma map
  bool uniform_in_model_time = false;  // sigma_i is the model's own sigma of i / steps
  std::vector<double> sigmas;
  std::vector<std::vector<float>> inputs;                // [step]
  std::vector<std::vector<std::vector<float>>> outputs;  // [step][condition]

  std::size_t latent() const { return channels * height * width; }
  std::size_t branches() const { return batched ? 1 : conds; }
};

template <class T>
T pick(std::mt19937& rng, std::initializer_list<T> values) {
  std::uniform_int_distribution<std::size_t> index(0, values.size() - 1);
  return *(values.begin() + static_cast<std::ptrdiff_t>(index(rng)));
}

double uniform(std::mt19937& rng, double low, double high) {
  return std::uniform_real_distribution<double>(low, high)(rng);
}
std::size_t uniform_size(std::mt19937& rng, std::size_t low, std::size_t high) {
  return std::uniform_int_distribution<std::size_t>(low, high)(rng);
}
bool chance(std::mt19937& rng, double p) { return std::bernoulli_distribution(p)(rng); }

// The sigma of step i: the model's own map at i/steps (so that steps at 15 %
// and 95 % fall exactly on the window's bounds), another shift, or a Karras
// schedule (rho 7) between the model's extremes.
std::vector<double> schedule(std::mt19937& rng, peer p, std::size_t steps, double model_shift, bool& uniform_in_time) {
  const int kind = pick(rng, {0, 0, 0, 1, 2});
  uniform_in_time = kind == 0 && p == peer::comfyui;
  const double schedule_shift = kind == 1 ? uniform(rng, 1.0, 8.0) : model_shift;
  std::vector<double> sigmas(steps);
  for (std::size_t i = 0; i < steps; ++i) {
    if (kind == 2) {
      const double sigma_max = 1.0, sigma_min = comfyui_oracle::time_snr_shift(model_shift, 0.001), rho = 7;
      const double f = steps > 1 ? static_cast<double>(i) / static_cast<double>(steps - 1) : 0.0;
      const double root =
          std::pow(sigma_max, 1 / rho) + f * (std::pow(sigma_min, 1 / rho) - std::pow(sigma_max, 1 / rho));
      sigmas[i] = std::pow(root, rho);
    } else if (p == peer::comfyui) {
      sigmas[i] = i == 0 ? 1.0
                         : comfyui_oracle::flow_percent_to_sigma(schedule_shift,
                                                                 static_cast<double>(i) / static_cast<double>(steps));
    } else {
      const float percent = static_cast<float>(i) / static_cast<float>(steps);
      sigmas[i] = sdcpp_oracle::discrete_flow_t_to_sigma(static_cast<float>(schedule_shift),
                                                         (1.0f - percent) * static_cast<float>(1000 - 1));
    }
  }
  return sigmas;
}

peer_trajectory random_trajectory(unsigned seed, peer p) {
  std::mt19937 rng(seed);
  peer_trajectory tr;
  tr.steps = chance(rng, 0.25) ? 20 * uniform_size(rng, 1, 5) : uniform_size(rng, 4, 100);
  tr.conds = p == peer::comfyui ? uniform_size(rng, 1, 2) : uniform_size(rng, 1, 3);
  tr.batched = p == peer::comfyui && tr.conds > 1 && chance(rng, 0.5);
  tr.channels = uniform_size(rng, 1, 2);
  // ComfyUI's planes of 8 to 13 rows and columns have 1 or 2 sampled rows and columns.
  const std::size_t smallest_side = p == peer::comfyui ? 8 : 3, largest_side = p == peer::comfyui ? 13 : 12;
  tr.height = uniform_size(rng, smallest_side, largest_side);
  tr.width = uniform_size(rng, smallest_side, largest_side);
  tr.threshold = pick(rng, {0.2f, 0.2f, 0.2f, 0.05f, 0.1f, 0.3f, 0.5f});
  if (chance(rng, 0.25)) {
    tr.start_percent = pick(rng, {0.0, 0.05, 0.3});
    tr.end_percent = pick(rng, {0.8, 1.0});
  }
  tr.model_shift = pick(rng, {1.0, 3.0, 5.0, uniform(rng, 1.0, 8.0)});
  tr.sigmas = schedule(rng, p, tr.steps, tr.model_shift, tr.uniform_in_model_time);

  // Fixed random fields, mixed with a few random numbers per step: cheap, and
  // still a different change of every element at every step.
  std::normal_distribution<double> normal;
  const std::size_t n = tr.latent();
  // Uniform in [-1, 1) from one draw of the engine: the fields need no normal
  // distribution, and the sanitizer builds (unoptimized) spent most of the
  // test's time drawing one.
  auto field = [&] {
    std::vector<double> f(n);
    for (double& e : f) e = static_cast<double>(rng()) * (2.0 / 4294967296.0) - 1.0;
    return f;
  };
  const std::vector<double> clean = field(), noise = field(), input_wobble = field();
  struct condition_shape {
    double gain, tilt, wave, jitter;
    std::vector<double> sin_phase, cos_phase, wobble_a, wobble_b;
  };
  std::vector<condition_shape> shapes(tr.conds);
  for (auto& s : shapes) {
    s.gain = uniform(rng, 0.5, 2.0);
    s.tilt = uniform(rng, -0.5, 0.5);
    s.wave = uniform(rng, 0.0, 0.5);
    s.jitter = uniform(rng, 0.0, 0.05);
    s.sin_phase.resize(n);
    s.cos_phase.resize(n);
    for (std::size_t e = 0; e < n; ++e) {
      const double phase = uniform(rng, 0.0, 6.3);
      s.sin_phase[e] = std::sin(phase);
      s.cos_phase[e] = std::cos(phase);
    }
    s.wobble_a = field();
    s.wobble_b = field();
  }
  const double input_jitter = uniform(rng, 0.0, 0.02);
  for (std::size_t t = 0; t < tr.steps; ++t) {
    const double sigma = tr.sigmas[t];
    std::vector<float> x(n);
    if (t > 0 && chance(rng, 0.03)) {
      x = tr.inputs.back();  // an unchanged input: dx = 0 when the previous step computed
    } else {
      const double wobble = input_jitter * normal(rng);
      // Raw pointers: the sanitizer builds run unoptimized, where each vector index is a call.
      const double *c = clean.data(), *z = noise.data(), *w = input_wobble.data();
      float* xs = x.data();
      for (std::size_t e = 0; e < n; ++e)
        xs[e] = static_cast<float>((1 - sigma) * c[e] + sigma * z[e] + wobble * w[e]);
    }
    std::vector<std::vector<float>> outs(tr.conds);
    for (std::size_t c = 0; c < tr.conds; ++c) {
      const condition_shape& s = shapes[c];
      if (t > 0 && chance(rng, 0.03)) {
        outs[c] = tr.outputs.back()[c];  // an unchanged output: no change of v for k
        continue;
      }
      // sin(3σ + phase) from the phase's sine and cosine.
      const double sin3 = std::sin(3 * sigma), cos3 = std::cos(3 * sigma);
      const double a = s.jitter * normal(rng), b = s.jitter * normal(rng);
      outs[c].resize(n);
      const double *clean_e = clean.data(), *noise_e = noise.data(), *cos_phase = s.cos_phase.data(),
                   *sin_phase = s.sin_phase.data(), *wobble_a = s.wobble_a.data(), *wobble_b = s.wobble_b.data();
      float* out = outs[c].data();
      for (std::size_t e = 0; e < n; ++e)
        out[e] = static_cast<float>(s.gain * (noise_e[e] - clean_e[e]) * (1 + s.tilt * sigma) +
                                    s.wave * (sin3 * cos_phase[e] + cos3 * sin_phase[e]) + a * wobble_a[e] +
                                    b * wobble_b[e]);
    }
    tr.inputs.push_back(std::move(x));
    tr.outputs.push_back(std::move(outs));
  }
  return tr;
}

// What one branch's call of step t gets and returns.
std::vector<float> branch_input(const peer_trajectory& tr, std::size_t t) {
  std::vector<float> x;
  for (std::size_t c = 0; c < (tr.batched ? tr.conds : 1); ++c)
    x.insert(x.end(), tr.inputs[t].begin(), tr.inputs[t].end());
  return x;
}
std::vector<float> branch_output(const peer_trajectory& tr, std::size_t t, std::size_t branch) {
  if (!tr.batched) return tr.outputs[t][branch];
  std::vector<float> out;
  for (const auto& o : tr.outputs[t]) out.insert(out.end(), o.begin(), o.end());
  return out;
}

struct peer_decision {
  bool skip = false;
  std::string reason;
  float accumulated_error = std::numeric_limits<float>::quiet_NaN();  // the peer's E after the call
};
using decisions = std::vector<std::vector<peer_decision>>;  // [step][branch]

decisions run_comfyui(const peer_trajectory& tr) {
  comfyui_oracle::settings s =
      comfyui_oracle::flow_settings(tr.model_shift, tr.start_percent, tr.end_percent, tr.threshold);
  s.height = tr.height;
  s.width = tr.width;
  comfyui_oracle::model m(s);
  decisions out(tr.steps);
  for (std::size_t t = 0; t < tr.steps; ++t) {
    m.begin_evaluation();
    for (std::size_t b = 0; b < tr.branches(); ++b) {
      comfyui_oracle::call c;
      if (tr.batched) {
        for (std::size_t k = 0; k < tr.conds; ++k) c.conds.push_back(static_cast<int>(k));
      } else {
        c.conds = {static_cast<int>(b)};
      }
      c.x = branch_input(tr, t);
      c.out = branch_output(tr, t, b);
      const auto d = m.evaluate(tr.sigmas[t], c);
      out[t].push_back({d.skip, comfyui_oracle::to_string(d.reason), m.cumulative_change_rate()});
    }
  }
  return out;
}

decisions run_sdcpp(const peer_trajectory& tr) {
  sdcpp_oracle::model m(sdcpp_oracle::flow_settings(static_cast<float>(tr.model_shift),
                                                    static_cast<float>(tr.start_percent),
                                                    static_cast<float>(tr.end_percent), tr.threshold));
  decisions out(tr.steps);
  for (std::size_t t = 0; t < tr.steps; ++t)
    for (std::size_t b = 0; b < tr.conds; ++b) {
      const auto d = m.evaluate(static_cast<int>(t), static_cast<float>(tr.sigmas[t]), static_cast<int>(b),
                                tr.inputs[t], tr.outputs[t][b]);
      out[t].push_back({d.skip, sdcpp_oracle::to_string(d.reason), m.cumulative_change_rate()});
    }
  return out;
}

// The preset of each peer, with the trajectory's threshold and window percents.
easycache::config preset_config(const peer_trajectory& tr, peer p) {
  easycache::config cfg = p == peer::comfyui
                              ? easycache::config::comfyui(tr.steps, tr.branches(), tr.height, tr.width, tr.model_shift)
                              : easycache::config::stable_diffusion_cpp(tr.steps, tr.conds, tr.model_shift);
  if (tr.batched) cfg.batched_conditions = tr.conds;
  cfg.threshold = static_cast<double>(tr.threshold);
  cfg.window = easycache::schedule_window{tr.start_percent, tr.end_percent};
  return cfg;
}

// `with_sigma`: each call's sigma in step_info::timestep (else NaN: the window
// is placed by index / steps). Host buffers over the trajectory's own vectors.
decisions run_controller(const peer_trajectory& tr, peer p, drive how, bool with_sigma = true) {
  using view = easycache::host_buffer<float>;
  easycache::controller<view> cache(preset_config(tr, p));
  decisions out(tr.steps);
  const std::size_t branches = tr.branches();
  std::vector<float> input, batched_output;
  std::vector<std::vector<float>> results(branches, std::vector<float>(tr.batched ? tr.conds * tr.latent() : tr.latent()));
  std::vector<easycache::controller<view>::pending> begun(branches);
  for (std::size_t t = 0; t < tr.steps; ++t) {
    const std::vector<float>* output = nullptr;
    if (tr.batched) {
      input = branch_input(tr, t);
      batched_output = branch_output(tr, t, 0);
      output = &batched_output;
    } else {
      input.assign(tr.inputs[t].begin(), tr.inputs[t].end());
    }
    const view x{input.data(), input.size()};
    auto model_output = [&](std::size_t b) -> const std::vector<float>& { return output ? *output : tr.outputs[t][b]; };
    const double sigma = with_sigma ? tr.sigmas[t] : std::numeric_limits<double>::quiet_NaN();
    for (std::size_t b = 0; b < branches; ++b) {
      if (how == drive::step) {
        view result{results[b].data(), results[b].size()};
        cache.step(x, result, {t, sigma, b}, [&](const view&, view& v) {
          const std::vector<float>& o = model_output(b);
          std::copy(o.begin(), o.end(), v.data);
        });
      } else {
        begun[b] = cache.begin_step(x, {t, sigma, b});
      }
    }
    if (how == drive::two_phase)
      for (std::size_t b = 0; b < branches; ++b) {
        view result{results[b].data(), results[b].size()};
        if (begun[b].compute()) std::copy(model_output(b).begin(), model_output(b).end(), results[b].begin());
        cache.finish_step(begun[b], x, result);
      }
    const auto& trace = cache.trace();
    for (std::size_t r = trace.size() - branches; r < trace.size(); ++r)
      out[t].push_back({trace[r].action == easycache::action::skip, easycache::to_string(trace[r].reason)});
  }
  return out;
}

// The rule of docs/variants.md that a first difference points at.
std::string rule_of(const std::string& peer_reason, const std::string& controller_reason) {
  const bool peer_outside =
      peer_reason == "before_window" || peer_reason == "past_end" || peer_reason == "outside_window";
  const bool controller_outside = controller_reason == "outside_window";
  if (peer_outside != controller_outside) return "rule 2 (window in sigma, not progress)";
  if (peer_reason == "no_history") return "rules 4, 6 (no history kept outside the window)";
  if (peer_reason == "degenerate" || controller_reason == "degenerate_statistics") return "rules 11, 12 (guards)";
  if (peer_reason == "follows_anchor" || peer_reason == "not_anchor") return "rule 13 (conditions)";
  return "rules 8, 9, 12, 16 (statistics: subsampling, norm, k, arithmetic)";
}

struct comparison {
  std::size_t trajectories = 0, matching = 0, decisions = 0, skips = 0;
  std::map<std::string, std::size_t> first_difference;  // "rule ..., peer ... / controller ..." → trajectories
  // What the trajectories cover, by the peer's decisions.
  std::size_t with_skips = 0, with_threshold_computes = 0, batched = 0, separate = 0, on_start_edge = 0;
  std::size_t shortest = std::numeric_limits<std::size_t>::max(), longest = 0;
};

// A step whose sigma is exactly the window's start bound, as each peer compares them.
bool on_start_edge(const peer_trajectory& tr, peer p, double sigma) {
  if (p == peer::comfyui)
    return static_cast<float>(sigma) ==
           static_cast<float>(comfyui_oracle::flow_percent_to_sigma(tr.model_shift, tr.start_percent));
  return static_cast<float>(sigma) == sdcpp_oracle::discrete_flow_percent_to_sigma(
                                          static_cast<float>(tr.model_shift), static_cast<float>(tr.start_percent));
}

void cover(comparison& c, const peer_trajectory& tr, peer p, const decisions& expected) {
  bool skipped = false, crossed = false;
  for (const auto& step : expected) {
    skipped = skipped || step[0].skip;
    crossed = crossed || step[0].reason == "above_threshold";
  }
  c.with_skips += skipped;
  c.with_threshold_computes += crossed;
  (tr.batched ? c.batched : c.separate) += tr.conds > 1;
  for (double sigma : tr.sigmas) c.on_start_edge += on_start_edge(tr, p, sigma);
  c.shortest = std::min(c.shortest, tr.steps);
  c.longest = std::max(c.longest, tr.steps);
}

// Trajectories first_seed, first_seed + 1, ... that `keep` accepts, until
// `count` are compared; odd seeds drive the two-phase API.
template <class Keep>
comparison compare(peer p, unsigned first_seed, std::size_t count, bool with_sigma, Keep&& keep) {
  comparison result;
  for (unsigned seed = first_seed; result.trajectories < count; ++seed) {
    peer_trajectory tr = random_trajectory(seed, p);
    if (!keep(tr)) continue;
    const decisions expected = p == peer::comfyui ? run_comfyui(tr) : run_sdcpp(tr);
    const decisions actual = run_controller(tr, p, seed % 2 ? drive::two_phase : drive::step, with_sigma);
    ++result.trajectories;
    cover(result, tr, p, expected);
    bool same = true;
    for (std::size_t t = 0; t < tr.steps && same; ++t)
      for (std::size_t b = 0; b < expected[t].size() && same; ++b) {
        ++result.decisions;
        result.skips += expected[t][b].skip;
        if (expected[t][b].skip == actual[t][b].skip) continue;
        same = false;
        std::ostringstream label;
        label << rule_of(expected[t][b].reason, actual[t][b].reason) << ", " << (b == 0 ? "anchor" : "follower")
              << (tr.batched ? " (batched)" : "") << ": peer " << (expected[t][b].skip ? "skip" : "compute") << " ("
              << expected[t][b].reason << "), controller " << (actual[t][b].skip ? "skip" : "compute") << " ("
              << actual[t][b].reason << "), seed " << seed;
        ++result.first_difference[label.str()];
      }
    result.matching += same;
  }
  return result;
}

comparison compare(peer p, unsigned first_seed, std::size_t count) {
  return compare(p, first_seed, count, true, [](peer_trajectory&) { return true; });
}

// The trajectory with τ set to the peer's E at its first skip: the run is the
// same up to that step, where E = τ is not below τ, so the step is computed; an
// E one rounding away (double arithmetic, other sums) would decide otherwise
// about half the time. False when the trajectory has no skip.
bool threshold_on_first_skip(peer_trajectory& tr, peer p) {
  const decisions d = p == peer::comfyui ? run_comfyui(tr) : run_sdcpp(tr);
  for (const auto& step : d)
    if (step[0].reason == "below_threshold") {
      tr.threshold = step[0].accumulated_error;
      return true;
    }
  return false;
}

std::string describe(const comparison& c) {
  std::ostringstream out;
  out << c.matching << " of " << c.trajectories << " trajectories decide as the peer (" << c.decisions
      << " decisions compared, " << c.skips << " of them skips); first differences:";
  std::vector<std::pair<std::size_t, std::string>> sorted;
  for (const auto& [label, n] : c.first_difference) sorted.emplace_back(n, label);
  std::sort(sorted.rbegin(), sorted.rend());
  for (const auto& [n, label] : sorted) out << "\n  " << n << " x " << label;
  return out.str();
}

constexpr std::size_t random_trajectories = 1000;
constexpr unsigned comfyui_seeds = 10000, sdcpp_seeds = 20000;

// The trajectories of a comparison take both decisions, cross τ, batch and
// separate conditions, put steps on the window's start, and run 4 to 100 steps.
void check_coverage(const comparison& c, peer p) {
  CHECK(c.with_skips > c.trajectories / 2);
  CHECK(c.with_threshold_computes > c.trajectories / 3);
  CHECK(c.separate > c.trajectories / 8);
  if (p == peer::comfyui) CHECK(c.batched > c.trajectories / 8);
  CHECK(c.on_start_edge > c.trajectories / 20);
  CHECK(c.shortest == 4);
  CHECK(c.longest == 100);
}

}  // namespace

TEST_CASE("peer trajectories: config::comfyui decides as ComfyUI's node", "[peer]") {
  const comparison c = compare(peer::comfyui, comfyui_seeds, random_trajectories);
  INFO(describe(c));
  CHECK(c.trajectories == random_trajectories);
  CHECK(c.matching == c.trajectories);
  check_coverage(c, peer::comfyui);
}

TEST_CASE("peer trajectories: config::stable_diffusion_cpp decides as stable-diffusion.cpp", "[peer]") {
  const comparison c = compare(peer::sdcpp, sdcpp_seeds, random_trajectories);
  INFO(describe(c));
  CHECK(c.trajectories == random_trajectories);
  CHECK(c.matching == c.trajectories);
  check_coverage(c, peer::sdcpp);
}

TEST_CASE("peer trajectories: thresholds on the peers' own E, where one rounding decides", "[peer]") {
  for (peer p : {peer::comfyui, peer::sdcpp}) {
    INFO((p == peer::comfyui ? "ComfyUI" : "stable-diffusion.cpp"));
    std::size_t ties = 0;
    const comparison c = compare(p, p == peer::comfyui ? 30000u : 40000u, 300, true, [&](peer_trajectory& tr) {
      const bool tied = threshold_on_first_skip(tr, p);
      ties += tied;
      return tied;
    });
    INFO(describe(c));
    CHECK(ties == 300);
    CHECK(c.matching == c.trajectories);
  }
}

TEST_CASE("peer trajectories: without a sigma, config::comfyui places its window by progress, as ComfyUI on a "
          "schedule uniform in the model's time",
          "[peer]") {
  const comparison c = compare(peer::comfyui, comfyui_seeds, 100, false,
                               [](peer_trajectory& tr) { return tr.uniform_in_model_time; });
  INFO(describe(c));
  CHECK(c.matching == c.trajectories);
}
