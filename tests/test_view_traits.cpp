// The one-function route (easycache/view_traits.hpp): a user's tensor type
// viewed as a supported one gets its passes, checks and predictors. The
// snippet between the [view-route] markers is docs/custom-tensor.md's, checked
// there by the docs.snippets test so that the two cannot drift.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>
#include <easycache/view_traits.hpp>

#include "helpers.hpp"

using Catch::Matchers::Contains;

// [view-route]
namespace c_engine {
struct tensor {  // a C engine's tensor: shape, strides, a pointer
  int64_t ne[4];
  std::size_t nb[4];
  void* data;
};
}  // namespace c_engine

template <>
struct easycache::tensor_traits<c_engine::tensor>
    : easycache::view_traits<c_engine::tensor, easycache::host_buffer<float>> {
  static easycache::host_buffer<float> view(const c_engine::tensor& t) {
    const auto count = static_cast<std::size_t>(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
    return {static_cast<float*>(t.data), count};
  }
};
// [view-route]

static_assert(easycache::is_tensor_v<c_engine::tensor>);
static_assert(easycache::detail::has_check<c_engine::tensor>::value, "host_buffer's check comes with the view");
static_assert(easycache::detail::has_same_storage<c_engine::tensor>::value);
static_assert(easycache::detail::has_extrapolation<c_engine::tensor>::value, "the linear predictor too");
static_assert(easycache::detail::has_scoped_statistics<c_engine::tensor>::value, "and the peer presets' statistics");
static_assert(!easycache::is_resizable_tensor_v<c_engine::tensor>, "a view the controller cannot resize");

namespace {
c_engine::tensor wrap(std::vector<float>& values) {
  return c_engine::tensor{{static_cast<int64_t>(values.size()), 1, 1, 1}, {4, 0, 0, 0}, values.data()};
}

bool same(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

float* elements(const c_engine::tensor& t) { return static_cast<float*>(t.data); }
float* elements(const easycache::host_buffer<float>& b) { return b.data; }

// The same scripted run through host_buffer<float> and through the viewed type.
template <class Tensor, class Wrap>
std::vector<easycache::step_record> run(const easycache::config& cfg, Wrap wrap_values) {
  easycache::controller<Tensor> cache(cfg);
  std::vector<float> x(64), out(64);
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.1 * double(i) + 0.05 * double(t * t)));
    const Tensor in = wrap_values(x);
    Tensor result = wrap_values(out);
    cache.step(in, result, {t, 1.0 - double(t) / double(cfg.steps)}, [](const Tensor& a, Tensor& b) {
      const std::size_t n = easycache::tensor_traits<Tensor>::size(a);
      for (std::size_t i = 0; i < n; ++i) elements(b)[i] = std::tanh(elements(a)[i]) + 0.5f;
    });
  }
  return cache.trace();
}
}  // namespace

TEST_CASE("a tensor viewed as a host buffer takes the host buffer's decisions and outputs", "[view_traits]") {
  for (auto predictor : {easycache::skip_predictor::constant, easycache::skip_predictor::linear_in_timestep}) {
    easycache::config cfg = test::small_config(12);
    cfg.threshold = 0.3;
    cfg.predictor = predictor;
    const auto viewed = run<c_engine::tensor>(cfg, [](std::vector<float>& v) { return wrap(v); });
    const auto direct = run<easycache::host_buffer<float>>(
        cfg, [](std::vector<float>& v) { return easycache::host_buffer<float>{v.data(), v.size()}; });
    REQUIRE(viewed.size() == direct.size());
    CHECK(test::pattern(viewed) == test::pattern(direct));
    CHECK(test::pattern(viewed).find('S') != std::string::npos);
    for (std::size_t i = 0; i < viewed.size(); ++i) {
      CHECK(same(viewed[i].input_change, direct[i].input_change));
      CHECK(same(viewed[i].accumulated_error, direct[i].accumulated_error));
      CHECK(same(viewed[i].realized_error, direct[i].realized_error));
    }
    CHECK(std::isfinite(viewed.back().realized_error));  // measured through the view's commit_predicting
  }
}

TEST_CASE("a viewed tensor gets the view's checks: null data, aliasing, wrong sizes", "[view_traits][errors]") {
  easycache::controller<c_engine::tensor> cache(test::small_config());
  std::vector<float> x(16, 1.0f), out(16), small_out(8);
  auto unused = [](const c_engine::tensor&, c_engine::tensor&) {};
  c_engine::tensor null_x{{16, 1, 1, 1}, {4, 0, 0, 0}, nullptr};
  c_engine::tensor in = wrap(x), o = wrap(out), small = wrap(small_out);
  CHECK_THROWS_AS(cache.step(null_x, o, {0}, unused), easycache::error);
  CHECK_THROWS_WITH(cache.step(in, in, {0}, unused), Contains("must not share memory with x"));
  c_engine::tensor alias = wrap(x);  // another struct, the same memory
  CHECK_THROWS_WITH(cache.step(in, alias, {0}, unused), Contains("must not share memory with x"));
  CHECK_THROWS_WITH(cache.step(in, small, {0}, unused), Contains("16"));
  // Still usable.
  cache.step(in, o, {0}, [](const c_engine::tensor& a, c_engine::tensor& b) {
    for (std::size_t i = 0; i < 16; ++i) static_cast<float*>(b.data)[i] = static_cast<const float*>(a.data)[i] + 1;
  });
  CHECK(cache.stats().calls == 1);
  CHECK(out[3] == 2.0f);
}
