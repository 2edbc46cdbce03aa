// Per-sample decisions in a batch.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <easycache/extras/batch.hpp>
#include <easycache/backends/host_buffer.hpp>

#include "helpers.hpp"

using Catch::Matchers::Contains;
using view = easycache::host_buffer<float>;

namespace {

constexpr std::size_t kSamples = 3, kSize = 32, kSteps = 30;

// Sample 0 barely changes its output along the schedule, sample 1 changes it a
// lot, sample 2 in between: a "mixed batch" of independent samples.
float velocity(std::size_t sample, float x, double sigma, std::size_t i) {
  const double rate[kSamples] = {0.02, 3.0, 0.6};
  return float(0.5 * x + std::sin(rate[sample] * 10 * sigma + 0.2 * double(i)));
}

struct batch_tensor {
  std::vector<float> memory = std::vector<float>(kSamples * kSize);
  std::vector<view> views() {
    std::vector<view> v;
    for (std::size_t s = 0; s < kSamples; ++s) v.push_back({memory.data() + s * kSize, kSize});
    return v;
  }
};

easycache::config cfg() {
  easycache::config c;
  c.steps = kSteps;
  c.warmup_steps = 3;
  c.threshold = 0.15;
  return c;
}

}  // namespace

TEST_CASE("per-sample decisions equal independent controllers and save calls on a mixed batch", "[batch]") {
  easycache::batch_controller<view> batched(cfg(), kSamples);
  std::vector<easycache::controller<view>> alone;
  for (std::size_t s = 0; s < kSamples; ++s) alone.emplace_back(cfg());
  // The reference way: one controller on the whole batch tensor (batch-wide statistics).
  easycache::controller<view> whole(cfg());

  batch_tensor x, out, x_whole, out_whole, single_out;
  for (std::size_t i = 0; i < x.memory.size(); ++i) x.memory[i] = x_whole.memory[i] = std::cos(0.1f * float(i));
  std::vector<std::vector<float>> x_alone(kSamples);
  for (std::size_t s = 0; s < kSamples; ++s) x_alone[s].assign(x.memory.begin() + long(s * kSize), x.memory.begin() + long((s + 1) * kSize));
  std::size_t model_sample_calls = 0;

  for (std::size_t t = 0; t < kSteps; ++t) {
    const double sigma = 1.0 - double(t) / kSteps;
    auto xs = x.views();
    auto outs = out.views();
    batched.step(xs, outs, {t, sigma}, [&](const std::vector<bool>& mask) {
      for (std::size_t s = 0; s < kSamples; ++s) {
        if (!mask[s]) continue;
        ++model_sample_calls;
        for (std::size_t i = 0; i < kSize; ++i) outs[s].data[i] = velocity(s, xs[s].data[i], sigma, i);
      }
    });
    for (std::size_t s = 0; s < kSamples; ++s) {
      std::vector<float> o(kSize);
      view xv{x_alone[s].data(), kSize}, ov{o.data(), kSize};
      alone[s].step(xv, ov, {t, sigma}, [&](const view& in, view& v) {
        for (std::size_t i = 0; i < kSize; ++i) v.data[i] = velocity(s, in.data[i], sigma, i);
      });
      INFO("step " << t << " sample " << s);
      CHECK(alone[s].trace().back().action == batched.sample(s).trace().back().action);
      for (std::size_t i = 0; i < kSize; ++i) CHECK(o[i] == outs[s].data[i]);
      for (std::size_t i = 0; i < kSize; ++i) x_alone[s][i] -= o[i] / float(kSteps);
    }
    view xw{x_whole.memory.data(), x_whole.memory.size()}, ow{out_whole.memory.data(), out_whole.memory.size()};
    whole.step(xw, ow, {t, sigma}, [&](const view& in, view& v) {
      for (std::size_t s = 0; s < kSamples; ++s)
        for (std::size_t i = 0; i < kSize; ++i) v.data[s * kSize + i] = velocity(s, in.data[s * kSize + i], sigma, i);
    });
    for (std::size_t i = 0; i < x.memory.size(); ++i) {
      x.memory[i] -= out.memory[i] / float(kSteps);
      x_whole.memory[i] -= out_whole.memory[i] / float(kSteps);
    }
  }
  const auto total = batched.stats();
  CHECK(total.calls == model_sample_calls);
  CHECK(total.evaluations == kSamples * kSteps);
  // The slow sample skips more than the fast one...
  CHECK(batched.sample(0).stats().skips > batched.sample(1).stats().skips);
  // ...and per-sample decisions need fewer sample evaluations than batch-wide ones.
  const std::size_t whole_sample_calls = whole.stats().calls * kSamples;
  INFO("per-sample " << total.calls << " vs batch-wide " << whole_sample_calls);
  CHECK(total.calls < whole_sample_calls);
}

TEST_CASE("batch controller: bad counts and finishing without beginning", "[batch][errors]") {
  easycache::batch_controller<view> batched(cfg(), kSamples);
  batch_tensor x, out;
  auto xs = x.views();
  auto outs = out.views();
  std::vector<view> two(xs.begin(), xs.begin() + 2);
  CHECK_THROWS_WITH(batched.begin_step(two, {0}), Contains("2 inputs for a batch of 3"));
  CHECK_THROWS_WITH(batched.finish_step(xs, outs), Contains("without begin_step"));
  CHECK_THROWS_WITH(easycache::batch_controller<view>(cfg(), 0), Contains("batch must be >= 1 (got 0)"));
  const auto& mask = batched.begin_step(xs, {0});
  CHECK(mask == std::vector<bool>(kSamples, true));
}

TEST_CASE("batch controller: after a sample refuses its output, finish_step resumes at that sample", "[batch][errors]") {
  easycache::batch_controller<view> batched(cfg(), kSamples);
  std::vector<easycache::controller<view>> alone;
  for (std::size_t s = 0; s < kSamples; ++s) alone.emplace_back(cfg());
  batch_tensor x, out, out_alone;
  for (std::size_t i = 0; i < x.memory.size(); ++i) x.memory[i] = std::cos(0.1f * float(i));
  auto xs = x.views();
  for (std::size_t t = 0; t < 6; ++t) {
    const double sigma = 1.0 - double(t) / kSteps;
    auto outs = out.views();
    auto outs_alone = out_alone.views();
    const std::vector<bool> mask = batched.begin_step(xs, {t, sigma});
    for (std::size_t s = 0; s < kSamples; ++s) {
      auto p = alone[s].begin_step(xs[s], {t, sigma});
      REQUIRE(p.compute() == mask[s]);
      for (std::size_t i = 0; i < kSize && mask[s]; ++i) outs[s].data[i] = outs_alone[s].data[i] = velocity(s, xs[s].data[i], sigma, i);
      alone[s].finish_step(p, xs[s], outs_alone[s]);
    }
    // Sample 1's output has the wrong size: sample 0 finishes, sample 1 refuses.
    std::vector<view> wrong = outs;
    wrong[1].size = kSize - 1;
    CHECK_THROWS_WITH(batched.finish_step(xs, wrong), Contains("elements"));
    CHECK(batched.sample(0).stats().evaluations == t + 1);
    CHECK(batched.sample(1).stats().evaluations == t);
    // Fixed, the same call finishes samples 1 and 2 (sample 0's step is not finished twice).
    CHECK_NOTHROW(batched.finish_step(xs, outs));
    for (std::size_t s = 0; s < kSamples; ++s) {
      CHECK(batched.sample(s).stats().evaluations == t + 1);
      for (std::size_t i = 0; i < kSize; ++i) CHECK(outs[s].data[i] == outs_alone[s].data[i]);
    }
    for (std::size_t i = 0; i < x.memory.size(); ++i) x.memory[i] -= out.memory[i] / float(kSteps);
  }
  auto outs = out.views();
  CHECK_THROWS_WITH(batched.finish_step(xs, outs), Contains("without begin_step"));
}

TEST_CASE("batch controller: a refused begin_step keeps the step begun before", "[batch][errors]") {
  easycache::batch_controller<view> batched(cfg(), kSamples);
  batch_tensor x, out;
  auto xs = x.views();
  auto outs = out.views();
  const std::vector<bool> mask = batched.begin_step(xs, {0, 1.0});
  // A step beyond the schedule: refused; step 0 can still be finished.
  CHECK_THROWS_WITH(batched.begin_step(xs, {99, 0.9}), Contains("step 99 out of range"));
  CHECK(mask == std::vector<bool>(kSamples, true));
  CHECK_NOTHROW(batched.finish_step(xs, outs));
  CHECK(batched.stats().evaluations == kSamples);
}
