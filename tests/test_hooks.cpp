// keyed_hooks: the before/after adapter keyed by condition, against the same
// calls made by hand through begin_step / finish_step.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <easycache/hooks.hpp>
#include <easycache/backends/host_buffer.hpp>

#include "helpers.hpp"

using Catch::Matchers::Contains;
using Eigen::VectorXd;
using easycache::hook_call;
using easycache::step_info;
using test::small_config;

// The tensor struct of a C engine (ggml's shape): element type, extents, byte
// strides, data; f32 here. The one data() serves const and non-const tensors.
namespace engine {
struct tensor {
  int type;
  std::int64_t ne[4];
  std::size_t nb[4];
  void* data;
};
}  // namespace engine

template <>
struct easycache::tensor_traits<engine::tensor> : easycache::host_tensor_traits<engine::tensor, float> {
  static float* data(const engine::tensor& t) { return static_cast<float*>(t.data); }
  static std::size_t size(const engine::tensor& t) {
    return static_cast<std::size_t>(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
  }
};

namespace {

using hooks = easycache::keyed_hooks<VectorXd>;

// Two conditions of an engine; only their addresses matter to the adapter.
struct condition {
  double offset;
};

// The model of each condition: v = x + offset (hand-checkable norms, as test::affine).
VectorXd model(const VectorXd& x, const condition& c) { return (x.array() + c.offset).matrix(); }

easycache::config two_branches(std::size_t steps = 8) {
  easycache::config cfg = small_config(steps);
  cfg.branches = 2;
  return cfg;
}

// One engine call through the adapter, as an engine's denoise callback makes it.
VectorXd through_hooks(hooks& h, const condition& c, const VectorXd& x, step_info info, int* calls = nullptr) {
  VectorXd out(x.size());
  if (!h.before(&c, x, out, info)) {
    out = model(x, c);
    if (calls) ++*calls;
    h.after(&c, x, out);
  }
  return out;
}

// The same call written by hand against the controller, the branch given.
VectorXd by_hand(easycache::controller<VectorXd>& cache, const condition& c, const VectorXd& x, step_info info,
                 std::size_t branch) {
  VectorXd out(x.size());
  info.branch = branch;
  const auto p = cache.begin_step(x, info);
  if (p.compute()) out = model(x, c);
  cache.finish_step(p, x, out);
  return out;
}

struct generation {
  std::size_t first, steps;
};

}  // namespace

TEST_CASE("keyed hooks take the decisions of hand-written two-phase calls, generation after generation",
          "[hooks]") {
  hooks h(two_branches());
  easycache::controller<VectorXd> cache(two_branches());
  // A full run, a new run with new condition objects, img2img from step 3,
  // a schedule of 6 steps: no reset anywhere.
  condition cond_a{8}, uncond_a{7}, cond_b{8}, uncond_b{7};
  const condition* conds[] = {&cond_a, &cond_b, &cond_b, &cond_a};
  const condition* unconds[] = {&uncond_a, &uncond_b, &uncond_b, &uncond_a};
  const generation runs[] = {{0, 8}, {0, 8}, {3, 8}, {0, 6}};
  std::size_t skips = 0;
  for (std::size_t g = 0; g < 4; ++g) {
    for (std::size_t t = runs[g].first; t < runs[g].steps; ++t) {
      const VectorXd x = test::constant(4, double(t));
      const step_info info = step_info{t, 1.0 - double(t) / 8}.of(runs[g].steps);
      CHECK(through_hooks(h, *conds[g], x, info) == by_hand(cache, *conds[g], x, info, 0));
      CHECK(through_hooks(h, *unconds[g], x, info) == by_hand(cache, *unconds[g], x, info, 1));
    }
    CHECK(h.branch_of(conds[g]) == std::size_t{0});
    CHECK(h.branch_of(unconds[g]) == std::size_t{1});
    REQUIRE(h.cache().trace().size() == cache.trace().size());
    for (std::size_t i = 0; i < cache.trace().size(); ++i) {
      CHECK(h.cache().trace()[i].branch == cache.trace()[i].branch);
      CHECK(h.cache().trace()[i].action == cache.trace()[i].action);
      CHECK(h.cache().trace()[i].reason == cache.trace()[i].reason);
    }
    CHECK(h.cache().stats().calls == cache.stats().calls);
    skips += h.cache().stats().skips;
  }
  CHECK(skips > 0);
  CHECK(h.incident_count() == 0);
}

TEST_CASE("keyed hooks: the first key of a generation is the anchor, the next ones get branches in order",
          "[hooks]") {
  easycache::config cfg = two_branches();
  cfg.branches = 3;
  hooks h(cfg);
  condition a{8}, b{7}, c{6};
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    through_hooks(h, a, x, {t});
    through_hooks(h, b, x, {t});
    through_hooks(h, c, x, {t});
  }
  CHECK(h.keys() == std::vector<const void*>{&a, &b, &c});
  CHECK(test::pattern(h.cache().trace(), 2) == "CCSSSSCC");
  // The next run calls b first: b is its anchor, a and c follow in their order.
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    through_hooks(h, b, x, {t});
    if (t == 0) {
      CHECK(h.keys() == std::vector<const void*>{&b});
      CHECK(h.cache().stats().steps == 1);  // the previous run's statistics are gone
    }
    through_hooks(h, c, x, {t});
    through_hooks(h, a, x, {t});
  }
  CHECK(h.keys() == std::vector<const void*>{&b, &c, &a});
  CHECK(h.branch_of(&a) == std::size_t{2});
  CHECK_FALSE(h.branch_of(nullptr).has_value());
  // The anchor's decisions are b's: its model's norm (|x + 7|) is in the trace.
  // (Step 2's decision reads |v| of step 1: |1 + 7| for b, |1 + 8| for a.)
  CHECK(h.cache().trace()[6].branch == 0);
  CHECK(h.cache().trace()[6].output_norm == Approx(8.0));
}

TEST_CASE("keyed hooks: step_info from the engine's int loop variables", "[hooks]") {
  hooks h(two_branches(10));
  condition cond{8}, uncond{7};
  const int steps = 10;
  int calls = 0;
  for (int i = 0; i < steps; ++i) {
    const float sigma = 1.0f - static_cast<float>(i) / static_cast<float>(steps);
    const VectorXd x = test::constant(4, i);
    through_hooks(h, cond, x, step_info{i, sigma}.of(steps), &calls);
    through_hooks(h, uncond, x, {i, sigma}, &calls);
  }
  CHECK(h.cache().stats().steps == 10);
  CHECK(calls == static_cast<int>(h.cache().stats().calls));
  CHECK(h.cache().stats().skips > 0);
  CHECK(h.cache().trace()[2].timestep == Approx(0.9));
}

TEST_CASE("keyed hooks: extra evaluations pass through, always computed, never cached", "[hooks]") {
  hooks h(two_branches());
  easycache::controller<VectorXd> cache(two_branches());
  condition cond{8}, uncond{7};
  int calls = 0;
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t)), predicted = test::constant(4, double(t) + 0.5);
    CHECK(through_hooks(h, cond, x, {t}) == by_hand(cache, cond, x, {t}, 0));
    CHECK(through_hooks(h, uncond, x, {t}) == by_hand(cache, uncond, x, {t}, 1));
    step_info second{t};
    second.extra_evaluation = true;
    // Heun's second evaluation of each condition, at the predicted point.
    CHECK(through_hooks(h, cond, predicted, second, &calls) == model(predicted, cond));
    CHECK(through_hooks(h, uncond, predicted, second, &calls) == model(predicted, uncond));
    by_hand(cache, cond, predicted, second, 0);
    by_hand(cache, uncond, predicted, second, 1);
  }
  CHECK(calls == 16);
  CHECK(h.cache().stats().extra_evaluations == 16);
  CHECK(h.cache().stats().calls == cache.stats().calls);
  CHECK(test::pattern(h.cache().trace(), 0) == test::pattern(cache.trace(), 0));
  CHECK(test::reasons(h.cache().trace(), 1) == test::reasons(cache.trace(), 1));
  CHECK(h.cache().stats().skips == 8);  // 4 skipped steps of 2 branches: the extra ones took nothing from the cache
}

TEST_CASE("keyed hooks: batched guidance begins both keys, then finishes the anchor first", "[hooks]") {
  hooks batched(two_branches()), sequential(two_branches());
  condition cond{8}, uncond{7};
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    VectorXd out_cond(4), out_uncond(4);
    const bool cached_cond = batched.before(&cond, x, out_cond, {t});
    const bool cached_uncond = batched.before(&uncond, x, out_uncond, {t});
    CHECK(cached_cond == cached_uncond);
    if (!cached_cond) {  // one model call for both
      out_cond = model(x, cond);
      out_uncond = model(x, uncond);
      if (t == 1) {
        CHECK_THROWS_WITH(batched.after(&uncond, x, out_uncond), Contains("before branch 0 of that step has finished"));
      }
      batched.after(&cond, x, out_cond);
      batched.after(&uncond, x, out_uncond);
    }
    CHECK(out_cond == through_hooks(sequential, cond, x, {t}));
    CHECK(out_uncond == through_hooks(sequential, uncond, x, {t}));
  }
  CHECK(test::pattern(batched.cache().trace(), 1) == "CCSSSSCC");
}

TEST_CASE("keyed hooks: a before() whose after() never comes is replaced by the key's next call", "[hooks]") {
  hooks h(two_branches());
  condition cond{8}, uncond{7};
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    if (t == 6) {
      VectorXd out(4);
      REQUIRE_FALSE(h.before(&cond, x, out, {t}));  // the model fails: no after()
    }
    through_hooks(h, cond, x, {t});
    through_hooks(h, uncond, x, {t});
  }
  CHECK(test::pattern(h.cache().trace(), 0) == "CCSSSSCC");
  CHECK(h.cache().stats().evaluations == 16);
}

TEST_CASE("keyed hooks: a one-step schedule run again, and reset() before a run that starts later", "[hooks]") {
  easycache::config cfg = two_branches();
  cfg.warmup_steps = 0;
  hooks h(cfg);
  condition cond{8}, uncond{7};
  for (int run = 0; run < 3; ++run) {
    through_hooks(h, cond, test::constant(4, run), step_info{0}.of(1));
    CHECK(h.cache().stats().steps == 1);
  }
  // A run abandoned at step 3, then one of other conditions from step 5: that
  // is not a new generation by the rules, so its keys are new keys...
  condition cond2{8}, uncond2{7};
  for (std::size_t t = 0; t < 3; ++t) {
    through_hooks(h, cond, test::constant(4, double(t)), {t});
    through_hooks(h, uncond, test::constant(4, double(t)), {t});
  }
  VectorXd out(4);
  CHECK_THROWS_WITH(h.before(&cond2, test::constant(4, 5), out, {5}), Contains("call reset()"));
  // ... unless reset() says so.
  h.reset();
  for (std::size_t t = 5; t < 8; ++t) {
    through_hooks(h, cond2, test::constant(4, double(t)), {t});
    through_hooks(h, uncond2, test::constant(4, double(t)), {t});
  }
  CHECK(h.keys() == std::vector<const void*>{&cond2, &uncond2});
  CHECK(h.cache().stats().steps == 3);
}

TEST_CASE("keyed hooks refuse misuse with easycache::error and stay usable", "[hooks][errors]") {
  hooks h(two_branches());
  condition cond{8}, uncond{7}, third{6};
  VectorXd out(4);
  const VectorXd x0 = test::constant(4, 0);
  CHECK_THROWS_WITH(h.before(&cond, x0, out, {0, 1.0, 1}), Contains("step_info::branch is the key's"));
  step_info extra{0};
  extra.extra_evaluation = true;
  CHECK_THROWS_WITH(h.before(&cond, x0, out, extra), Contains("not evaluated in this generation"));
  CHECK_THROWS_WITH(h.after(&cond, x0, out), Contains("no evaluation outstanding"));
  CHECK(h.cache().stats().evaluations == 0);
  through_hooks(h, cond, x0, {0});
  CHECK_THROWS_WITH(h.before(&cond, x0, out, {0}), Contains("evaluated twice at step 0"));
  through_hooks(h, uncond, x0, {0});
  CHECK_THROWS_WITH(h.before(&third, x0, out, {0}), Contains("config.branches is 2"));
  const VectorXd x1 = test::constant(4, 1);
  CHECK_THROWS_WITH(h.before(&uncond, x1, out, {1}), Contains("before branch 0 of that step"));
  // A wrong output in after(): refused, and the evaluation can still be finished.
  REQUIRE_FALSE(h.before(&cond, x1, out, {1}));
  VectorXd wrong(3);
  CHECK_THROWS_WITH(h.after(&cond, x1, wrong), Contains("denoiser output has 3 elements"));
  out = model(x1, cond);
  h.after(&cond, x1, out);
  CHECK_THROWS_WITH(h.after(&cond, x1, out), Contains("no evaluation outstanding"));
  through_hooks(h, uncond, x1, {1});
  for (std::size_t t = 2; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    through_hooks(h, cond, x, {t});
    // A skipped evaluation has nothing outstanding.
    if (t == 3) CHECK_THROWS_WITH(h.after(&cond, x, out), Contains("no evaluation outstanding"));
    through_hooks(h, uncond, x, {t});
  }
  CHECK(test::pattern(h.cache().trace(), 0) == "CCSSSSCC");
  CHECK(test::pattern(h.cache().trace(), 1) == "CCSSSSCC");
  CHECK(h.incident_count() == 0);
}

TEST_CASE("keyed hooks, never_throw: a misuse computes the evaluation and is reported", "[hooks][errors]") {
  easycache::hooks_options options;
  options.never_throw = true;
  options.incident_capacity = 3;
  hooks h(two_branches(), options);
  std::vector<std::string> seen;
  h.on_incident([&](const hooks::incident& i) { seen.push_back(i.message); });
  condition cond{8}, uncond{7}, third{6};
  int calls = 0;
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    CHECK(through_hooks(h, cond, x, {t}, &calls) == model(x, cond));
    through_hooks(h, uncond, x, {t}, &calls);
    if (t == 1) {
      // A third condition with config.branches 2: computed, and its after() does nothing.
      const int before = calls;
      CHECK(through_hooks(h, third, x, {t}, &calls) == model(x, third));
      CHECK(calls == before + 1);
    }
    if (t == 4) {
      VectorXd out(4);
      h.after(&cond, x, out);  // nothing outstanding: cond was served from the cache
      CHECK(through_hooks(h, uncond, x, {t, 0.5, 1}, &calls) == model(x, uncond));  // a branch given
    }
  }
  CHECK(h.incident_count() == 3);
  REQUIRE(h.incidents().size() == 3);
  CHECK(h.incidents()[0].key == &third);
  CHECK(h.incidents()[0].call == hook_call::before);
  CHECK(h.incidents()[0].info.index == 1);
  CHECK_THAT(h.incidents()[0].message, Contains("config.branches is 2"));
  CHECK(h.incidents()[1].call == hook_call::after);
  CHECK_THAT(h.incidents()[1].message, Contains("no evaluation outstanding"));
  CHECK_THAT(h.incidents()[2].message, Contains("step_info::branch is the key's"));
  CHECK(seen.size() == 3);
  // The cache took none of it: its run is the clean run's.
  CHECK(test::pattern(h.cache().trace(), 0) == "CCSSSSCC");
  CHECK(test::pattern(h.cache().trace(), 1) == "CCSSSSCC");
  CHECK(h.cache().stats().evaluations == 16);
  CHECK(calls == 8 + 2);

  // Errors from the controller too, in before() and in after(); beyond the capacity only counted.
  VectorXd out(4), wrong(3);
  const VectorXd x = test::constant(4, 0);
  REQUIRE_FALSE(h.before(&cond, x, out, {0}));
  h.after(&cond, x, wrong);  // the controller refuses the output
  CHECK(h.incident_count() == 4);
  CHECK(h.incidents().size() == 3);
  CHECK(seen.size() == 4);
  CHECK_THAT(seen.back(), Contains("denoiser output has 3 elements"));
  h.after(&cond, x, out);  // dropped with the incident: nothing outstanding now
  CHECK(h.incident_count() == 5);
  h.clear_incidents();
  CHECK(h.incidents().empty());
  CHECK_FALSE(h.before(&uncond, test::constant(4, 1), out, {1}));  // before its anchor: computed
  CHECK(h.incident_count() == 6);
  CHECK(h.incidents().size() == 1);
  CHECK_THAT(h.incidents()[0].message, Contains("before branch 0 of that step"));
  h.after(&uncond, test::constant(4, 1), out);  // the matching after: nothing
  CHECK(h.incident_count() == 6);
}

TEST_CASE("keyed hooks over a ggml-like host tensor with one data() function, keyed by int", "[hooks]") {
  easycache::keyed_hooks<engine::tensor, int> h(two_branches());
  std::vector<float> x(4), out(4);
  engine::tensor xt{0, {2, 2, 1, 1}, {4, 8, 16, 16}, x.data()}, ot{0, {2, 2, 1, 1}, {4, 8, 16, 16}, out.data()};
  std::size_t skips = 0;
  for (std::size_t t = 0; t < 8; ++t) {
    for (float& value : x) value = static_cast<float>(t);
    for (int key : {17, 42}) {
      std::fill(out.begin(), out.end(), -1.0f);
      if (h.before(key, xt, ot, {t})) {
        ++skips;  // the cached prediction x + (v - x) at the last computed step
      } else {
        for (std::size_t i = 0; i < 4; ++i) out[i] = x[i] + static_cast<float>(key);
        h.after(key, xt, ot);
      }
      CHECK(out[3] == static_cast<float>(t) + static_cast<float>(key));
    }
  }
  // ε = dx / |v| = 1 / 18 a step against τ 0.5: steps 2 to 6 skipped, of both keys.
  CHECK(skips == 10);
  CHECK(h.branch_of(42) == std::size_t{1});
}
