// A multi-evaluation sampler (Heun, second order) with easycache: the first
// evaluation of each step takes part in caching; the second one, at the
// predicted point, is marked step_info::extra_evaluation: always computed,
// counted in the stats, never touching the cached state.
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

#include <cstdio>
#include <random>
#include <string>

#include "../common/mixture_model.hpp"

int main() {
  const std::size_t steps = 25;
  example::mixture_model model(4, 32, 32, 6);
  const std::vector<double> sigmas = example::shifted_sigmas(steps, 5.0);
  auto denoiser = [&](const Eigen::VectorXf& x, Eigen::VectorXf& v, const easycache::step_info& info) {
    model.velocity(x, info.timestep, -1, v);
  };

  auto sample = [&](easycache::controller<Eigen::VectorXf>* cache, std::size_t& calls) {
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    Eigen::VectorXf x(static_cast<Eigen::Index>(model.size())), v(x.size()), v2(x.size()), predicted(x.size());
    for (Eigen::Index i = 0; i < x.size(); ++i) x(i) = normal(rng);
    for (std::size_t i = 0; i < steps; ++i) {
      const double h = sigmas[i + 1] - sigmas[i];
      const easycache::step_info first{i, sigmas[i]};
      if (cache) {
        cache->step(x, v, first, denoiser);
      } else {
        denoiser(x, v, first);
        ++calls;
      }
      if (sigmas[i + 1] == 0.0) {  // the last step is an Euler step
        x += static_cast<float>(h) * v;
        continue;
      }
      predicted = x + static_cast<float>(h) * v;
      easycache::step_info second{i, sigmas[i + 1]};
      second.extra_evaluation = true;
      if (cache) {
        cache->step(predicted, v2, second, denoiser);
      } else {
        denoiser(predicted, v2, second);
        ++calls;
      }
      x += static_cast<float>(h / 2) * (v + v2);
    }
    return x;
  };

  std::size_t uncached_calls = 0, unused = 0;
  const Eigen::VectorXf reference = sample(nullptr, uncached_calls);
  easycache::config cfg = easycache::config::hunyuan_video(steps);
  cfg.warmup_steps = 3;
  cfg.threshold = 0.05;
  easycache::controller<Eigen::VectorXf> cache(cfg);
  const Eigen::VectorXf cached = sample(&cache, unused);

  std::string pattern;
  for (const easycache::step_record& r : cache.trace())
    if (r.reason != easycache::reason::extra_evaluation) pattern += r.action == easycache::action::skip ? '.' : 'C';
  const easycache::statistics& s = cache.stats();
  std::printf("easycache heun: %zu Heun steps, %zu denoiser evaluations without the cache\n", steps, uncached_calls);
  std::printf("first evaluations (C = called, . = cached): %s\n", pattern.c_str());
  std::printf("evaluations %zu = %zu cached-eligible + %zu extra; calls %zu, skips %zu (%.2fx fewer calls)\n",
              s.evaluations, s.evaluations - s.extra_evaluations, s.extra_evaluations, s.calls, s.skips,
              s.speedup_in_calls());
  std::printf("final sample against the uncached one: PSNR %.1f dB\n", example::psnr(cached, reference));
  const bool accounted = s.evaluations == uncached_calls && s.calls + s.skips == s.evaluations;
  return accounted && s.skips > 0 ? 0 : 1;
}
