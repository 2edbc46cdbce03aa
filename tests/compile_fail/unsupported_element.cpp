// Must not compile: host buffers of int have no tensor_traits; the one
// diagnostic says which element types host buffers hold.
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>

static_assert(sizeof(easycache::tensor_traits_check<easycache::host_buffer<int>>) != 0);

int main() { return 0; }
