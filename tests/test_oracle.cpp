// The controller against a literal transcription of algorithm.md
// (spec_oracle.hpp) on random trajectories: every decision and every output.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "helpers.hpp"
#include "spec_oracle.hpp"

namespace {

struct trajectory_model {
  // A smooth, nonlinear denoiser whose transformation rate drifts along the schedule.
  std::vector<double> operator()(const std::vector<double>& x, double sigma, std::size_t branch) const {
    std::vector<double> v(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double phase = static_cast<double>(i % 7) * 0.3 + static_cast<double>(branch);
      v[i] = (1.0 - sigma) * 0.8 * x[i] + sigma * std::sin(x[i] + phase) + 0.1 * std::cos(3 * sigma + phase);
    }
    return v;
  }
};

Eigen::VectorXd to_eigen(const std::vector<double>& v) {
  return Eigen::Map<const Eigen::VectorXd>(v.data(), static_cast<Eigen::Index>(v.size()));
}

std::vector<double> to_std(const Eigen::VectorXd& v) { return {v.data(), v.data() + v.size()}; }

// Returns the number of skipped evaluations, so that callers can check the run exercised both paths.
std::size_t compare_with_oracle(const easycache::config& cfg, std::size_t size, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> x0(size);
  for (double& e : x0) e = normal(rng);

  easycache::controller<Eigen::VectorXd> cache(cfg);
  oracle::model reference(cfg);
  trajectory_model model;
  std::vector<double> x_ours = x0, x_ref = x0;
  const double guidance = 3.0;
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    const double sigma = 1.0 - static_cast<double>(t) / static_cast<double>(cfg.steps);
    const double next = 1.0 - static_cast<double>(t + 1) / static_cast<double>(cfg.steps);
    std::vector<std::vector<double>> ours(cfg.branches), refs(cfg.branches);
    for (std::size_t b = 0; b < cfg.branches; ++b) {
      Eigen::VectorXd out;
      cache.step(to_eigen(x_ours), out, {t, sigma, b},
                 [&](const Eigen::VectorXd& in) { return to_eigen(model(to_std(in), sigma, b)); });
      ours[b] = to_std(out);
      auto r = reference.step(x_ref, t, b, [&](const std::vector<double>& in) { return model(in, sigma, b); });
      refs[b] = r.output;
      INFO("seed " << seed << " step " << t << " branch " << b);
      REQUIRE(cache.trace().back().action == r.action);
      for (std::size_t i = 0; i < size; ++i) REQUIRE(ours[b][i] == Approx(refs[b][i]).epsilon(1e-12).margin(1e-12));
    }
    // Euler step of a guided velocity (cond + guidance·(cond − uncond) when 2 branches).
    for (auto* pair : {&ours, &refs}) {
      auto& outs = *pair;
      auto& x = pair == &ours ? x_ours : x_ref;
      for (std::size_t i = 0; i < size; ++i) {
        double v = outs[0][i];
        if (cfg.branches > 1) v = outs[1][i] + guidance * (outs[0][i] - outs[1][i]);
        x[i] += (next - sigma) * v;
      }
    }
  }
  return cache.stats().skips;
}

}  // namespace

TEST_CASE("random trajectories: decisions and outputs match the spec", "[oracle][spec]") {
  std::size_t runs_with_skips = 0, runs_with_computes_after_warmup = 0;
  for (unsigned seed = 1; seed <= 12; ++seed) {
    easycache::config cfg;
    cfg.steps = 20 + seed;
    cfg.warmup_steps = seed % 6;
    cfg.threshold = 0.02 * seed;
    cfg.branches = 1 + seed % 2;
    const std::size_t skips = compare_with_oracle(cfg, 50 + 7 * seed, seed);
    runs_with_skips += skips > 0;
    runs_with_computes_after_warmup += skips + cfg.warmup_steps + 1 < cfg.steps;
  }
  CHECK(runs_with_skips >= 8);
  CHECK(runs_with_computes_after_warmup >= 8);
}

TEST_CASE("random trajectories: the ComfyUI-style variants match the spec", "[oracle][variants]") {
  for (unsigned seed = 1; seed <= 8; ++seed) {
    easycache::config cfg;
    cfg.steps = 30;
    cfg.threshold = 0.1 * seed;
    cfg.branches = 1 + seed % 2;
    cfg.input_change = easycache::input_change_reference::last_compute;
    if (seed % 2) cfg.window = easycache::schedule_window{0.15, 0.95};
    if (seed % 3 == 0) cfg.sampling = easycache::statistics_sampling{2, 6, 8};
    if (seed % 4 == 0) cfg.sampling = easycache::statistics_sampling{3, 0, 0};
    CHECK(compare_with_oracle(cfg, 6 * 8 * 3, 100 + seed) > 0);
  }
}

TEST_CASE("random trajectories: subsampling with the reference dx matches the spec", "[oracle][variants]") {
  easycache::config cfg;
  cfg.steps = 40;
  cfg.threshold = 0.08;
  cfg.warmup_steps = 4;
  cfg.sampling = easycache::statistics_sampling{4, 16, 12};
  CHECK(compare_with_oracle(cfg, 2 * 16 * 12, 7) > 0);
}
