// Must not compile: the specialization declares commit with a workspace of
// another type than its workspace_type, and the one diagnostic names commit.
#include <easycache/easycache.hpp>

#include <vector>

struct mistyped_commit {
  float* data;
  std::size_t size;
};

template <>
struct easycache::tensor_traits<mistyped_commit> {
  using buffer_type = std::vector<float>;
  using workspace_type = double;
  static std::size_t size(const mistyped_commit& t) { return t.size; }
  static void allocate(buffer_type&, const mistyped_commit&) {}
  static void prepare(workspace_type&, const mistyped_commit&) {}
  static void reduce_abs_diff(workspace_type&, statistic_slot, const mistyped_commit&, const buffer_type&,
                              const statistics_sampling&) {}
  static void apply_delta(const mistyped_commit&, const buffer_type&, mistyped_commit&, buffer_type*) {}
  static void commit(std::vector<double>&, const mistyped_commit&, const mistyped_commit&, buffer_type&, buffer_type&,
                     bool, const statistics_sampling&) {}
  static void store_delta(const mistyped_commit&, const mistyped_commit&, buffer_type&) {}
  static void read(workspace_type&, double (&)[statistic_slot_count]) {}
};

static_assert(sizeof(easycache::tensor_traits_check<mistyped_commit>) != 0);

int main() { return 0; }
