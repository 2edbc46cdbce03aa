// easycache quickstart: a flow-matching Euler sampler, first without the cache,
// then with it. The lines marked "easycache" are all it takes.
#include <easycache/easycache.hpp>  // easycache
#include <easycache/backends/eigen.hpp>      // easycache

#include <cstdio>
#include <random>
#include <string>

#include "../common/mixture_model.hpp"

int main() {
  const std::size_t steps = 50;
  example::mixture_model model(4, 32, 32, 6);
  const std::vector<double> sigmas = example::shifted_sigmas(steps, 5.0);
  auto denoiser = [&](const Eigen::VectorXf& x, Eigen::VectorXf& v, const easycache::step_info& info) {
    model.velocity(x, info.timestep, -1, v);
  };

  auto sample = [&](easycache::controller<Eigen::VectorXf>* cache) {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal;
    Eigen::VectorXf x(static_cast<Eigen::Index>(model.size())), v(x.size());
    for (Eigen::Index i = 0; i < x.size(); ++i) x(i) = normal(rng);
    for (std::size_t i = 0; i < steps; ++i) {
      const easycache::step_info info{i, sigmas[i]};
      if (cache) {
        cache->step(x, v, info, denoiser);  // easycache: was denoiser(x, v, info)
      } else {
        denoiser(x, v, info);
      }
      x += static_cast<float>(sigmas[i + 1] - sigmas[i]) * v;
    }
    return x;
  };

  const Eigen::VectorXf reference = sample(nullptr);
  easycache::controller<Eigen::VectorXf> cache(easycache::config::hunyuan_video(steps));  // easycache
  const Eigen::VectorXf cached = sample(&cache);

  std::string pattern;
  for (const easycache::step_record& r : cache.trace()) pattern += r.action == easycache::action::skip ? '.' : 'C';
  const easycache::statistics& stats = cache.stats();
  std::printf("easycache quickstart: flow matching, %zu Euler steps, a %zu-element latent\n", steps, model.size());
  std::printf("skip pattern (C = denoiser called, . = cached): %s\n", pattern.c_str());
  std::printf("denoiser calls: %zu of %zu (%.2fx fewer)\n", stats.calls, stats.evaluations, stats.speedup_in_calls());
  std::printf("final sample against the uncached one: PSNR %.1f dB, max |difference| %.4f\n",
              example::psnr(cached, reference), static_cast<double>((cached - reference).cwiseAbs().maxCoeff()));
  return stats.skips > 0 ? 0 : 1;
}
