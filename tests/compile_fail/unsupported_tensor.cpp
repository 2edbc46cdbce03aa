// Must not compile: std::vector<float> has no tensor_traits. The build must
// fail with exactly one error, the static_assert naming what to include.
#include <easycache/easycache.hpp>

#include <vector>

int main() {
  easycache::controller<std::vector<float>> cache;
  std::vector<float> x(4), out(4);
  cache.step(x, out, {0}, [](const std::vector<float>& in) { return in; });
  return 0;
}
