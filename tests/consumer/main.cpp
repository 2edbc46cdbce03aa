#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

#include <iostream>

int main() {
  easycache::config cfg;
  cfg.steps = 10;
  cfg.warmup_steps = 2;
  cfg.threshold = 1.0;
  easycache::controller<Eigen::VectorXf> cache(cfg);
  Eigen::VectorXf x = Eigen::VectorXf::Zero(8), out;
  for (std::size_t t = 0; t < 10; ++t) {
    cache.step(x, out, {t}, [](const Eigen::VectorXf& in) { return Eigen::VectorXf(in.array() + 8.0f); });
    x.array() += 1.0f;
  }
  std::cout << "consumer: " << cache.stats().calls << " calls, " << cache.stats().skips << " skips\n";
  return cache.stats().skips > 0 && cache.stats().calls >= 3 ? 0 : 1;
}
