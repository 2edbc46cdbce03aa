// The exception-safety guarantee of each public operation, as documented in
// the headers and docs/design.md: which state an exception leaves behind.
#include <catch2/catch.hpp>

#include <cmath>
#include <ios>
#include <limits>
#include <new>
#include <sstream>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <type_traits>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/host_buffer.hpp>

#include "helpers.hpp"

using Catch::Matchers::Contains;
using easycache::action;

// A host tensor whose backend passes fail on demand, to see what a failing
// allocation or pass (a CUDA error, an out-of-memory) leaves behind.
namespace faulty {
struct tensor {
  std::vector<double> values;
};
struct failures {
  bool allocate = false, reduce = false, apply = false, commit = false, store = false;
};
inline failures fail;
}  // namespace faulty

template <>
struct easycache::tensor_traits<faulty::tensor> : easycache::host_tensor_traits<faulty::tensor, double> {
  using base = easycache::host_tensor_traits<faulty::tensor, double>;
  static const double* data(const faulty::tensor& t) { return t.values.data(); }
  static double* data(faulty::tensor& t) { return t.values.data(); }
  static std::size_t size(const faulty::tensor& t) { return t.values.size(); }
  static void resize_output(faulty::tensor& out, const faulty::tensor& like) { out.values.resize(like.values.size()); }

  static void allocate(buffer_type& buffer, const faulty::tensor& like) {
    if (faulty::fail.allocate) throw std::bad_alloc();
    base::allocate(buffer, like);
  }
  static void reduce_abs_diff(workspace_type& ws, statistic_slot slot, const faulty::tensor& x, const buffer_type& ref,
                              const statistics_sampling& sampling) {
    if (faulty::fail.reduce) throw std::runtime_error("reduction failed");
    base::reduce_abs_diff(ws, slot, x, ref, sampling);
  }
  // Fail half-way: the first half of the elements is written.
  static void apply_delta(const faulty::tensor& x, const buffer_type& delta, faulty::tensor& out,
                          buffer_type* input_copy) {
    base::apply_delta(x, delta, out, input_copy);
    if (faulty::fail.apply) throw std::runtime_error("apply failed");
  }
  static void commit(workspace_type& ws, const faulty::tensor& x, const faulty::tensor& v, buffer_type& x_last,
                     buffer_type& delta, bool measure_change, const statistics_sampling& sampling) {
    base::commit(ws, x, v, x_last, delta, measure_change, sampling);
    if (faulty::fail.commit) throw std::runtime_error("commit failed");
  }
  static void store_delta(const faulty::tensor& x, const faulty::tensor& v, buffer_type& delta) {
    base::store_delta(x, v, delta);
    if (faulty::fail.store) throw std::runtime_error("store failed");
  }
};

namespace {

using faulty_controller = easycache::controller<faulty::tensor>;

// Everything a user can observe of a controller.
struct observed {
  easycache::statistics stats;
  std::vector<easycache::step_record> trace;
  double accumulated_error;
};

template <class Controller>
observed observe(const Controller& c) {
  return {c.stats(), c.trace(), c.policy().accumulated_error()};
}

bool same(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

bool same_record(const easycache::step_record& a, const easycache::step_record& b) {
  return a.step == b.step && a.branch == b.branch && same(a.timestep, b.timestep) &&
         same(a.input_change, b.input_change) && same(a.transformation_rate, b.transformation_rate) &&
         same(a.output_norm, b.output_norm) && same(a.predicted_error, b.predicted_error) &&
         same(a.accumulated_error, b.accumulated_error) && a.action == b.action && a.reason == b.reason;
}

bool same_observed(const observed& a, const observed& b) {
  if (a.stats.steps != b.stats.steps || a.stats.evaluations != b.stats.evaluations || a.stats.calls != b.stats.calls ||
      a.stats.skips != b.stats.skips || a.stats.reasons != b.stats.reasons || a.trace.size() != b.trace.size() ||
      !same(a.accumulated_error, b.accumulated_error))
    return false;
  for (std::size_t i = 0; i < a.trace.size(); ++i)
    if (!same_record(a.trace[i], b.trace[i])) return false;
  return true;
}

easycache::config small(std::size_t branches = 1) {
  easycache::config cfg;
  cfg.steps = 8;
  cfg.warmup_steps = 2;
  cfg.threshold = 0.5;
  cfg.branches = branches;
  return cfg;
}

faulty::tensor input(std::size_t t, std::size_t n = 4) { return {std::vector<double>(n, double(t))}; }

faulty::tensor affine(const faulty::tensor& x) {
  faulty::tensor v = x;
  for (double& e : v.values) e += 8.0;
  return v;
}

// Steps [from, to) of every branch on the affine trajectory: "CCSSSSCC" for small().
template <class Controller>
void run(Controller& cache, std::size_t from, std::size_t to, std::size_t branches = 1) {
  for (std::size_t t = from; t < to; ++t)
    for (std::size_t b = 0; b < branches; ++b) {
      faulty::tensor out;
      cache.step(input(t), out, {t, 0.0, b}, affine);
    }
}

struct reset_failures {
  reset_failures() { faulty::fail = {}; }
  ~reset_failures() { faulty::fail = {}; }
};

}  // namespace

TEST_CASE("no-throw operations", "[exceptions]") {
  faulty_controller cache(small());
  STATIC_REQUIRE(noexcept(cache.reset()));
  STATIC_REQUIRE(noexcept(cache.on_decision({})));
  STATIC_REQUIRE(noexcept(cache.stats()));
  STATIC_REQUIRE(noexcept(cache.trace()));
  STATIC_REQUIRE(noexcept(cache.configuration()));
  STATIC_REQUIRE(noexcept(cache.policy()));
}

TEST_CASE("basic: an allocation that fails at step 0 leaves no generation and empty statistics", "[exceptions]") {
  const reset_failures guard;
  faulty_controller cache(small());
  run(cache, 0, 5);
  faulty::tensor out;
  faulty::fail.allocate = true;
  // A different size forces new buffers; the first allocation fails.
  CHECK_THROWS_AS(cache.step(input(0, 6), out, {0}, affine), std::bad_alloc);
  const observed after = observe(cache);
  CHECK(after.stats.steps == 0);
  CHECK(after.stats.evaluations == 0);
  CHECK(after.trace.empty());  // statistics and trace agree
  CHECK(after.accumulated_error == 0);
  faulty::fail.allocate = false;
  CHECK_THROWS_WITH(cache.step(input(5), out, {5}, affine), Contains("without a generation in progress"));
  faulty_controller reference(small());
  run(reference, 0, 8);
  run(cache, 0, 8);
  CHECK(same_observed(observe(cache), observe(reference)));
}

namespace {
// A stream buffer that accepts `room` characters, then fails.
class full_buffer : public std::streambuf {
 public:
  explicit full_buffer(std::size_t room) : room_(room) {}

 protected:
  int_type overflow(int_type c) override {
    if (room_ == 0) return traits_type::eof();
    --room_;
    return c;
  }

 private:
  std::size_t room_;
};
}  // namespace

TEST_CASE("the writers: a failing stream throws only if asked to, and keeps its precision", "[exceptions][trace]") {
  faulty_controller cache(small());
  run(cache, 0, 8);
  for (int writer = 0; writer < 2; ++writer) {
    INFO((writer == 0 ? "csv" : "json"));
    full_buffer buffer(100);
    std::ostream out(&buffer);
    out.precision(3);
    out.exceptions(std::ios::badbit);
    auto write = [&] {
      if (writer == 0) {
        easycache::write_csv(out, cache.trace());
      } else {
        easycache::write_json(out, cache.stats(), cache.trace());
      }
    };
    CHECK_THROWS_AS(write(), std::ios::failure);
    CHECK(out.precision() == 3);
    // Without exceptions the stream only records the failure.
    full_buffer quiet_buffer(100);
    std::ostream quiet(&quiet_buffer);
    quiet.precision(3);
    if (writer == 0) {
      CHECK_NOTHROW(easycache::write_csv(quiet, cache.trace()));
    } else {
      CHECK_NOTHROW(easycache::write_json(quiet, cache.stats(), cache.trace()));
    }
    CHECK(quiet.bad());
    CHECK(quiet.precision() == 3);
  }
  CHECK(cache.stats().steps == 8);  // the writers read, never change, the controller
}

