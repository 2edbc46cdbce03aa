// Must not compile: the specialization has every required member but commit,
// and the one diagnostic names it.
#include <easycache/easycache.hpp>

#include <vector>

struct no_commit {
  float* data;
  std::size_t size;
};

template <>
struct easycache::tensor_traits<no_commit> {
  using buffer_type = std::vector<float>;
  using workspace_type = double;
  static std::size_t size(const no_commit& t) { return t.size; }
  static void allocate(buffer_type&, const no_commit&) {}
  static void prepare(workspace_type&, const no_commit&) {}
  static void reduce_abs_diff(workspace_type&, statistic_slot, const no_commit&, const buffer_type&,
                              const statistics_sampling&) {}
  static void apply_delta(const no_commit&, const buffer_type&, no_commit&, buffer_type*) {}
  static void store_delta(const no_commit&, const no_commit&, buffer_type&) {}
  static void read(workspace_type&, double (&)[statistic_slot_count]) {}
};

static_assert(sizeof(easycache::tensor_traits_check<no_commit>) != 0);

int main() { return 0; }
