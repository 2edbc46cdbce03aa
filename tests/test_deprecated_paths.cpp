// The flat include paths of before the tree split (easycache/eigen.hpp, ...)
// still compile and bring the same declarations as their new paths.
#include <catch2/catch.hpp>

#include <easycache/batch.hpp>
#include <easycache/eigen.hpp>
#include <easycache/host_buffer.hpp>
#include <easycache/replay.hpp>

#include <Eigen/Core>

static_assert(easycache::is_tensor_v<Eigen::VectorXf>);
static_assert(easycache::is_tensor_v<easycache::host_buffer<float>>);

TEST_CASE("the deprecated flat include paths forward to backends/ and extras/", "[layout]") {
  easycache::controller<Eigen::VectorXf> cache;
  Eigen::VectorXf x = Eigen::VectorXf::Ones(4), out;
  cache.step(x, out, {0}, [](const Eigen::VectorXf& in, Eigen::VectorXf& v) { v = in * 2.0f; });
  CHECK(out(0) == 2.0f);
  CHECK(cache.stats().calls == 1);
}
