// Guidance branches: the anchor decides, each branch keeps its own cached vector.
#include <catch2/catch.hpp>

#include <vector>

#include "helpers.hpp"

using Eigen::VectorXd;
using easycache::action;

namespace {
VectorXd cond(const VectorXd& x) { return (x.array() + 8.0).matrix(); }
VectorXd uncond(const VectorXd& x) { return (-2.0 * x.array() + 3.0).matrix(); }

easycache::config two_branches() {
  easycache::config cfg;
  cfg.steps = 8;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.5;
  cfg.branches = 2;
  return cfg;
}
}  // namespace

TEST_CASE("other branches follow the anchor and keep their own cached vector", "[guidance]") {
  easycache::controller<VectorXd> cache(two_branches());
  int uncond_calls = 0;
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    VectorXd out_cond, out_uncond;
    cache.step(x, out_cond, {t, 0.0, 0}, cond);
    cache.step(x, out_uncond, {t, 0.0, 1}, [&](const VectorXd& in) {
      ++uncond_calls;
      return uncond(in);
    });
    const bool skipped = cache.trace().back().action == action::skip;
    if (skipped) {
      // Last computed step of this branch is t=1: delta = uncond(1) − 1 = 1 − 1 = 0.
      CHECK(out_uncond == x + (uncond(test::constant(4, 1)) - test::constant(4, 1)));
      CHECK(out_cond == x + (cond(test::constant(4, 1)) - test::constant(4, 1)));
    } else {
      CHECK(out_uncond == uncond(x));
    }
  }
  CHECK(test::pattern(cache.trace(), 0) == "CCSSSSCC");
  CHECK(test::pattern(cache.trace(), 1) == "CCSSSSCC");
  CHECK(uncond_calls == 4);
  CHECK(cache.stats().evaluations == 16);
  CHECK(cache.stats().calls == 8);
  CHECK(cache.stats().steps == 8);
  CHECK(cache.stats().speedup_in_calls() == 2.0);
}

TEST_CASE("statistics come from the anchor branch only", "[guidance]") {
  // A wildly moving unconditional branch must not change the decisions.
  easycache::controller<VectorXd> single([] {
    auto c = two_branches();
    c.branches = 1;
    return c;
  }());
  easycache::controller<VectorXd> guided(two_branches());
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    VectorXd out;
    single.step(x, out, {t}, cond);
    guided.step(x, out, {t, 0.0, 0}, cond);
    guided.step(x, out, {t, 0.0, 1}, [&](const VectorXd& in) { return VectorXd(in * 1e6 * double(t + 1)); });
  }
  CHECK(test::pattern(single.trace()) == test::pattern(guided.trace(), 0));
  CHECK(test::pattern(guided.trace(), 1) == test::pattern(guided.trace(), 0));
}

TEST_CASE("the unconditional branch may use its own input (never mixed with the anchor's)", "[guidance]") {
  easycache::controller<VectorXd> cache(two_branches());
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    const VectorXd y = test::constant(6, 100.0 + double(t));  // another size, other values
    VectorXd a, b;
    cache.step(x, a, {t, 0.0, 0}, cond);
    cache.step(y, b, {t, 0.0, 1}, uncond);
    if (cache.trace().back().action == action::skip) {
      CHECK(b == y + (uncond(test::constant(6, 101)) - test::constant(6, 101)));
    }
  }
  CHECK(test::pattern(cache.trace(), 1) == "CCSSSSCC");
}

TEST_CASE("a branch that joins late computes until it has a cached vector", "[guidance]") {
  easycache::controller<VectorXd> cache(two_branches());
  for (std::size_t t = 0; t < 8; ++t) {
    const VectorXd x = test::constant(4, double(t));
    VectorXd out;
    cache.step(x, out, {t, 0.0, 0}, cond);
    if (t >= 3) cache.step(x, out, {t, 0.0, 1}, uncond);
  }
  const auto reasons = test::reasons(cache.trace(), 1);
  CHECK(test::pattern(cache.trace(), 1) == "CSSCC");
  CHECK(reasons[0] == easycache::reason::no_history);
}

TEST_CASE("one batched call per step is one branch", "[guidance]") {
  // HunyuanVideo style: cond and uncond stacked in one tensor.
  easycache::config cfg = easycache::config::hunyuan_video(12);
  cfg.threshold = 0.5;
  easycache::controller<Eigen::MatrixXd> cache(cfg);
  for (std::size_t t = 0; t < 12; ++t) {
    Eigen::MatrixXd x = Eigen::MatrixXd::Constant(4, 2, double(t)), out;
    cache.step(x, out, {t}, [](const Eigen::MatrixXd& in) { return Eigen::MatrixXd((in.array() + 8.0).matrix()); });
    CHECK(out.rows() == 4);
    CHECK(out.cols() == 2);
  }
  CHECK(cache.stats().evaluations == 12);
  CHECK(cache.stats().skips > 0);
}
