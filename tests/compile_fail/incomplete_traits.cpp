// Must not compile: the specialization lacks most required members.
#include <easycache/easycache.hpp>

struct half_done {
  float value;
};

template <>
struct easycache::tensor_traits<half_done> {
  static std::size_t size(const half_done&) { return 1; }
};

int main() {
  easycache::controller<half_done> cache;
  (void)cache;
  return 0;
}
