// Must not compile: the denoiser takes an int.
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

int main() {
  easycache::controller<Eigen::VectorXf> cache;
  Eigen::VectorXf x(4), out(4);
  cache.step(x, out, {0}, [](int) { return 0; });
  return 0;
}
