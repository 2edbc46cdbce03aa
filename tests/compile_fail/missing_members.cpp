// Must not compile: size and store_delta are missing; one diagnostic each,
// naming it, and nothing else.
#include <easycache/easycache.hpp>

#include <vector>

struct two_missing {
  float* data;
  std::size_t size;
};

template <>
struct easycache::tensor_traits<two_missing> {
  using buffer_type = std::vector<float>;
  using workspace_type = double;
  static void allocate(buffer_type&, const two_missing&) {}
  static void prepare(workspace_type&, const two_missing&) {}
  static void reduce_abs_diff(workspace_type&, statistic_slot, const two_missing&, const buffer_type&,
                              const statistics_sampling&) {}
  static void apply_delta(const two_missing&, const buffer_type&, two_missing&, buffer_type*) {}
  static void commit(workspace_type&, const two_missing&, const two_missing&, buffer_type&, buffer_type&, bool,
                     const statistics_sampling&) {}
  static void read(workspace_type&, double (&)[statistic_slot_count]) {}
};

static_assert(sizeof(easycache::tensor_traits_check<two_missing>) != 0);

int main() { return 0; }
