// Classifier-free guidance with easycache: a conditional and an unconditional
// call per step (as in Wan2.1). Branch 0 decides for both; each branch keeps
// its own cached transformation vector.
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

#include <cstdio>
#include <random>
#include <string>

#include "../common/mixture_model.hpp"

int main() {
  const std::size_t steps = 50;
  const float guidance_scale = 5.0f;
  const int wanted_class = 2;
  example::mixture_model model(4, 32, 32, 6);
  const std::vector<double> sigmas = example::shifted_sigmas(steps, 5.0);
  auto conditional = [&](const Eigen::VectorXf& x, Eigen::VectorXf& v, const easycache::step_info& info) {
    model.velocity(x, info.timestep, wanted_class, v);
  };
  auto unconditional = [&](const Eigen::VectorXf& x, Eigen::VectorXf& v, const easycache::step_info& info) {
    model.velocity(x, info.timestep, -1, v);
  };

  auto sample = [&](easycache::controller<Eigen::VectorXf>* cache) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    Eigen::VectorXf x(static_cast<Eigen::Index>(model.size())), v_cond(x.size()), v_uncond(x.size());
    for (Eigen::Index i = 0; i < x.size(); ++i) x(i) = normal(rng);
    for (std::size_t i = 0; i < steps; ++i) {
      if (cache) {
        cache->step(x, v_cond, {i, sigmas[i], 0}, conditional);      // branch 0: the anchor
        cache->step(x, v_uncond, {i, sigmas[i], 1}, unconditional);  // branch 1 follows it
      } else {
        conditional(x, v_cond, {i, sigmas[i]});
        unconditional(x, v_uncond, {i, sigmas[i]});
      }
      const Eigen::VectorXf v = v_uncond + guidance_scale * (v_cond - v_uncond);
      x += static_cast<float>(sigmas[i + 1] - sigmas[i]) * v;
    }
    return x;
  };

  const Eigen::VectorXf reference = sample(nullptr);
  easycache::controller<Eigen::VectorXf> cache(easycache::config::wan21(steps));
  const Eigen::VectorXf cached = sample(&cache);

  std::string conditional_pattern, unconditional_pattern;
  for (const easycache::step_record& r : cache.trace())
    (r.branch == 0 ? conditional_pattern : unconditional_pattern) += r.action == easycache::action::skip ? '.' : 'C';
  const easycache::statistics& stats = cache.stats();
  std::printf("easycache guidance: Wan2.1 preset, %zu steps, 2 calls a step (guidance scale %.1f)\n", steps,
              static_cast<double>(guidance_scale));
  std::printf("conditional   (branch 0): %s\n", conditional_pattern.c_str());
  std::printf("unconditional (branch 1): %s\n", unconditional_pattern.c_str());
  std::printf("denoiser calls: %zu of %zu (%.2fx fewer)\n", stats.calls, stats.evaluations, stats.speedup_in_calls());
  std::printf("final sample against the uncached one: PSNR %.1f dB\n", example::psnr(cached, reference));
  return stats.skips > 0 && conditional_pattern == unconditional_pattern ? 0 : 1;
}
