// The peers' decision rules (comfyui_oracle.hpp, sdcpp_oracle.hpp) on small
// trajectories whose decisions follow by hand from docs/variants.md, then the
// controller against them on random trajectories. The controller does not
// reproduce the peers yet (issue 15): those comparisons are tagged [!mayfail]
// and report how many trajectories agree and where the first disagreement lies.
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
#include <easycache/eigen.hpp>

#include "comfyui_oracle.hpp"
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
// Random trajectories: the controller against the oracles.

namespace {

enum class peer { comfyui, sdcpp };
enum class progress_source { index, peer_sigma };

// A scripted run: the latent of each step and what the model returns for it
// under each condition, whatever the cache decides (open loop).
struct peer_trajectory {
  std::size_t steps = 0, conds = 1, channels = 1, height = 1, width = 1;
  bool batched = false;  // ComfyUI: every condition in one call
  float threshold = 0.2f;
  double start_percent = 0.15, end_percent = 0.95;
  double model_shift = 1.0;  // the model's percent-to-sigma map
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
std::vector<double> schedule(std::mt19937& rng, peer p, std::size_t steps, double model_shift) {
  const int kind = pick(rng, {0, 0, 0, 1, 2});
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
  // ComfyUI's planes of 8 to 17 rows and columns have 1 to 3 sampled rows and columns.
  const std::size_t smallest_side = p == peer::comfyui ? 8 : 3, largest_side = p == peer::comfyui ? 17 : 12;
  tr.height = uniform_size(rng, smallest_side, largest_side);
  tr.width = uniform_size(rng, smallest_side, largest_side);
  tr.threshold = pick(rng, {0.2f, 0.2f, 0.2f, 0.05f, 0.1f, 0.3f, 0.5f});
  if (chance(rng, 0.25)) {
    tr.start_percent = pick(rng, {0.0, 0.05, 0.3});
    tr.end_percent = pick(rng, {0.8, 1.0});
  }
  tr.model_shift = pick(rng, {1.0, 3.0, 5.0, uniform(rng, 1.0, 8.0)});
  tr.sigmas = schedule(rng, p, tr.steps, tr.model_shift);

  // Fixed random fields, mixed with a few random numbers per step: cheap, and
  // still a different change of every element at every step.
  std::normal_distribution<double> normal;
  const std::size_t n = tr.latent();
  auto field = [&] {
    std::vector<double> f(n);
    for (double& e : f) e = normal(rng);
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
      for (std::size_t e = 0; e < n; ++e)
        x[e] = static_cast<float>((1 - sigma) * clean[e] + sigma * noise[e] + wobble * input_wobble[e]);
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
      for (std::size_t e = 0; e < n; ++e)
        outs[c][e] = static_cast<float>(s.gain * (noise[e] - clean[e]) * (1 + s.tilt * sigma) +
                                        s.wave * (sin3 * s.cos_phase[e] + cos3 * s.sin_phase[e]) + a * s.wobble_a[e] +
                                        b * s.wobble_b[e]);
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
      out[t].push_back({d.skip, comfyui_oracle::to_string(d.reason)});
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
      out[t].push_back({d.skip, sdcpp_oracle::to_string(d.reason)});
    }
  return out;
}

// Today's configuration closest to each peer.
easycache::config closest_config(const peer_trajectory& tr, peer p) {
  easycache::config cfg;
  if (p == peer::comfyui) {
    cfg = easycache::config::comfyui(tr.steps, tr.branches(), tr.height, tr.width);
  } else {
    cfg.steps = tr.steps;
    cfg.branches = tr.conds;
    cfg.warmup_steps = 0;
    cfg.input_change = easycache::input_change_reference::last_compute;
  }
  cfg.threshold = static_cast<double>(tr.threshold);
  cfg.window = easycache::schedule_window{tr.start_percent, tr.end_percent};
  return cfg;
}

// The progress handed to the controller: index / steps, or the percent whose
// sigma, by the peer's map, is the step's sigma (so that the window is the peer's).
double progress_of(const peer_trajectory& tr, peer p, progress_source source, std::size_t t) {
  if (source == progress_source::index) return std::numeric_limits<double>::quiet_NaN();
  const double sigma = tr.sigmas[t];
  const double percent = p == peer::comfyui ? comfyui_oracle::flow_sigma_to_percent(tr.model_shift, sigma)
                                            : sdcpp_oracle::discrete_flow_sigma_to_percent(tr.model_shift, sigma);
  return std::min(1.0, std::max(0.0, percent));
}

decisions run_controller(const peer_trajectory& tr, peer p, progress_source source) {
  easycache::controller<Eigen::VectorXf> cache(closest_config(tr, p));
  decisions out(tr.steps);
  Eigen::VectorXf result;
  for (std::size_t t = 0; t < tr.steps; ++t) {
    const std::vector<float> x = branch_input(tr, t);
    const Eigen::VectorXf input = Eigen::Map<const Eigen::VectorXf>(x.data(), static_cast<Eigen::Index>(x.size()));
    for (std::size_t b = 0; b < tr.branches(); ++b) {
      const std::vector<float> scripted = branch_output(tr, t, b);
      cache.step(input, result, {t, tr.sigmas[t], b, progress_of(tr, p, source, t)}, [&](const Eigen::VectorXf&) {
        return Eigen::VectorXf(
            Eigen::Map<const Eigen::VectorXf>(scripted.data(), static_cast<Eigen::Index>(scripted.size())));
      });
      const auto& record = cache.trace().back();
      out[t].push_back({record.action == easycache::action::skip, easycache::to_string(record.reason)});
    }
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
  std::size_t trajectories = 0, matching = 0;
  std::map<std::string, std::size_t> first_difference;  // "peer ... / controller ..." → trajectories
};

comparison compare(peer p, progress_source source, unsigned first_seed, std::size_t count) {
  comparison result;
  for (std::size_t i = 0; i < count; ++i) {
    const peer_trajectory tr = random_trajectory(first_seed + static_cast<unsigned>(i), p);
    const decisions expected = p == peer::comfyui ? run_comfyui(tr) : run_sdcpp(tr);
    const decisions actual = run_controller(tr, p, source);
    ++result.trajectories;
    bool same = true;
    for (std::size_t t = 0; t < tr.steps && same; ++t)
      for (std::size_t b = 0; b < expected[t].size() && same; ++b) {
        if (expected[t][b].skip == actual[t][b].skip) continue;
        same = false;
        std::ostringstream label;
        label << rule_of(expected[t][b].reason, actual[t][b].reason) << ", " << (b == 0 ? "anchor" : "follower")
              << (tr.batched ? " (batched)" : "") << ": peer " << (expected[t][b].skip ? "skip" : "compute") << " ("
              << expected[t][b].reason << "), controller " << (actual[t][b].skip ? "skip" : "compute") << " ("
              << actual[t][b].reason << ")";
        ++result.first_difference[label.str()];
      }
    result.matching += same;
  }
  return result;
}

std::string describe(const comparison& c) {
  std::ostringstream out;
  out << c.matching << " of " << c.trajectories << " trajectories decide as the peer; first differences:";
  std::vector<std::pair<std::size_t, std::string>> sorted;
  for (const auto& [label, n] : c.first_difference) sorted.emplace_back(n, label);
  std::sort(sorted.rbegin(), sorted.rend());
  for (const auto& [n, label] : sorted) out << "\n  " << n << " x " << label;
  return out.str();
}

constexpr std::size_t random_trajectories = 1000;
constexpr unsigned comfyui_seeds = 10000, sdcpp_seeds = 20000;

}  // namespace

TEST_CASE("peer trajectories: the random trajectories cover both decisions, batching and window edges", "[peer]") {
  for (peer p : {peer::comfyui, peer::sdcpp}) {
    std::size_t with_skips = 0, with_threshold_computes = 0, batched = 0, separate = 0, on_start_edge = 0,
                shortest = 1000, longest = 0;
    for (std::size_t i = 0; i < random_trajectories; ++i) {
      const peer_trajectory tr =
          random_trajectory((p == peer::comfyui ? comfyui_seeds : sdcpp_seeds) + static_cast<unsigned>(i), p);
      const decisions d = p == peer::comfyui ? run_comfyui(tr) : run_sdcpp(tr);
      bool skipped = false, crossed = false;
      for (const auto& step : d) {
        skipped = skipped || step[0].skip;
        crossed = crossed || step[0].reason == "above_threshold";
      }
      with_skips += skipped;
      with_threshold_computes += crossed;
      (tr.batched ? batched : separate) += tr.conds > 1;
      // A step whose sigma is exactly the start bound, as each peer compares them.
      for (double sigma : tr.sigmas) {
        const bool edge = p == peer::comfyui
                              ? static_cast<float>(sigma) == static_cast<float>(comfyui_oracle::flow_percent_to_sigma(
                                                                 tr.model_shift, tr.start_percent))
                              : static_cast<float>(sigma) ==
                                    sdcpp_oracle::discrete_flow_percent_to_sigma(static_cast<float>(tr.model_shift),
                                                                                 static_cast<float>(tr.start_percent));
        on_start_edge += edge;
      }
      shortest = std::min(shortest, tr.steps);
      longest = std::max(longest, tr.steps);
    }
    INFO((p == peer::comfyui ? "ComfyUI" : "stable-diffusion.cpp"));
    CHECK(with_skips > random_trajectories / 2);
    CHECK(with_threshold_computes > random_trajectories / 3);
    CHECK(separate > random_trajectories / 8);
    if (p == peer::comfyui) CHECK(batched > random_trajectories / 8);
    CHECK(on_start_edge > random_trajectories / 20);
    CHECK(shortest == 4);
    CHECK(longest == 100);
  }
}

TEST_CASE("peer trajectories: config::comfyui decides as ComfyUI's node (progress = index / steps)",
          "[peer][!mayfail]") {
  const comparison c = compare(peer::comfyui, progress_source::index, comfyui_seeds, random_trajectories);
  WARN(describe(c));
  CHECK(c.matching == c.trajectories);
}

TEST_CASE("peer trajectories: config::comfyui decides as ComfyUI's node (progress from ComfyUI's sigma map)",
          "[peer][!mayfail]") {
  const comparison c = compare(peer::comfyui, progress_source::peer_sigma, comfyui_seeds, random_trajectories);
  WARN(describe(c));
  CHECK(c.matching == c.trajectories);
}

TEST_CASE("peer trajectories: the closest config decides as stable-diffusion.cpp (progress = index / steps)",
          "[peer][!mayfail]") {
  const comparison c = compare(peer::sdcpp, progress_source::index, sdcpp_seeds, random_trajectories);
  WARN(describe(c));
  CHECK(c.matching == c.trajectories);
}

TEST_CASE("peer trajectories: the closest config decides as stable-diffusion.cpp (progress from its sigma map)",
          "[peer][!mayfail]") {
  const comparison c = compare(peer::sdcpp, progress_source::peer_sigma, sdcpp_seeds, random_trajectories);
  WARN(describe(c));
  CHECK(c.matching == c.trajectories);
}
