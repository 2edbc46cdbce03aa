// Must not compile: read() fills float sums instead of double ones (and hides
// the base's read), so the required read is missing; the one diagnostic names it.
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>

struct wrong_read {
  float* data;
  std::size_t size;
};

template <>
struct easycache::tensor_traits<wrong_read> : easycache::host_tensor_traits<wrong_read, float> {
  static float* data(const wrong_read& t) { return t.data; }
  static std::size_t size(const wrong_read& t) { return t.size; }
  static void read(workspace_type&, float (&)[statistic_slot_count]) {}
};

static_assert(sizeof(easycache::tensor_traits_check<wrong_read>) != 0);

int main() { return 0; }
