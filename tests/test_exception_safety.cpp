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
#include <easycache/backends/host_buffer.hpp>

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
  STATIC_REQUIRE(noexcept(cache.set_statistics_reduction({})));
  STATIC_REQUIRE(noexcept(cache.stats()));
  STATIC_REQUIRE(noexcept(cache.trace()));
  STATIC_REQUIRE(noexcept(cache.configuration()));
  STATIC_REQUIRE(noexcept(cache.policy()));
}

TEST_CASE("strong: refused calls, configurations and a throwing denoiser change nothing", "[exceptions][errors]") {
  const reset_failures guard;
  faulty_controller reference(small(2)), cache(small(2));
  run(reference, 0, 8, 2);
  run(cache, 0, 4, 2);  // steps 2 and 3 were skipped: E > 0, a cached vector per branch
  REQUIRE(test::pattern(cache.trace()) == "CCSS");
  REQUIRE(cache.policy().accumulated_error() > 0);
  const observed before = observe(cache);
  faulty::tensor out;
  auto throwing = [](const faulty::tensor&) -> faulty::tensor { throw std::runtime_error("model failed"); };
  auto wrong_size = [](const faulty::tensor&) { return input(0, 3); };
  easycache::config bad = small(2);
  bad.threshold = -1;

  CHECK_THROWS_AS(cache.step(input(4), out, {3, 0.0, 0}, affine), easycache::error);  // step 3 again
  CHECK_THROWS_AS(cache.step(input(4), out, {8, 0.0, 0}, affine), easycache::error);  // out of range
  CHECK_THROWS_AS(cache.step(input(4), out, {4, 0.0, 1}, affine), easycache::error);  // branch before anchor
  CHECK_THROWS_AS(cache.step(input(4), out, {4, 0.0, 2}, affine), easycache::error);  // no such branch
  CHECK_THROWS_AS(cache.step(input(4, 5), out, {4, 0.0, 0}, affine), easycache::error);  // size changed
  faulty::tensor x = input(4);
  CHECK_THROWS_AS(cache.step(x, x, {4, 0.0, 0}, affine), easycache::error);  // aliasing
  CHECK_THROWS_AS(cache.reset(bad), easycache::error);
  CHECK(cache.configuration().threshold == 0.5);
  CHECK(same_observed(observe(cache), before));

  // Step 6 computes (E crosses τ): a throwing denoiser there, on the anchor and on
  // branch 1, and an output of the wrong size, change nothing either.
  run(cache, 4, 6, 2);
  const observed at_six = observe(cache);
  CHECK_THROWS_AS(cache.step(input(6), out, {6, 0.0, 0}, throwing), std::runtime_error);
  CHECK_THROWS_AS(cache.step(input(6), out, {6, 0.0, 0}, wrong_size), easycache::error);
  CHECK(same_observed(observe(cache), at_six));
  cache.step(input(6), out, {6, 0.0, 0}, affine);
  const observed anchor_done = observe(cache);
  CHECK_THROWS_AS(cache.step(input(6), out, {6, 0.0, 1}, throwing), std::runtime_error);
  CHECK(same_observed(observe(cache), anchor_done));
  cache.step(input(6), out, {6, 0.0, 1}, affine);
  run(cache, 7, 8, 2);
  CHECK(same_observed(observe(cache), observe(reference)));
}

TEST_CASE("step 0 starts a new generation before the denoiser runs", "[exceptions]") {
  const reset_failures guard;
  faulty_controller cache(small());
  run(cache, 0, 8);
  faulty::tensor out;
  CHECK_THROWS_AS(cache.step(input(0), out, {0}, [](const faulty::tensor&) -> faulty::tensor {
    throw std::runtime_error("model failed");
  }),
                  std::runtime_error);
  // The previous generation is gone; the new one has no step yet, so the next
  // step (a loop that logs the failure and goes on) starts it again there.
  CHECK(cache.stats().steps == 0);
  CHECK(cache.trace().empty());
  cache.step(input(1), out, {1}, affine);
  REQUIRE(cache.trace().size() == 1);
  CHECK(cache.trace().front().reason == easycache::reason::warmup);
  run(cache, 0, 8);
  CHECK(test::pattern(cache.trace()) == "CCSSSSCC");
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
  // Nothing of the old generation is used: step 5 begins a new one (warm-up).
  cache.step(input(5), out, {5}, affine);
  REQUIRE(cache.trace().size() == 1);
  CHECK(cache.trace().front().reason == easycache::reason::warmup);
  faulty_controller reference(small());
  run(reference, 0, 8);
  run(cache, 0, 8);
  CHECK(same_observed(observe(cache), observe(reference)));
}

TEST_CASE("strong: an allocation that fails at a branch's first evaluation", "[exceptions][guidance]") {
  const reset_failures guard;
  faulty_controller reference(small(2)), cache(small(2));
  run(reference, 0, 8, 2);
  faulty::tensor out;
  cache.step(input(0), out, {0, 0.0, 0}, affine);
  const observed before = observe(cache);
  faulty::fail.allocate = true;
  CHECK_THROWS_AS(cache.step(input(0), out, {0, 0.0, 1}, affine), std::bad_alloc);
  CHECK(same_observed(observe(cache), before));
  faulty::fail.allocate = false;
  cache.step(input(0), out, {0, 0.0, 1}, affine);
  run(cache, 1, 8, 2);
  CHECK(same_observed(observe(cache), observe(reference)));
}

TEST_CASE("strong: a reduction that fails before the decision", "[exceptions]") {
  const reset_failures guard;
  faulty_controller reference(small()), cache(small());
  run(reference, 0, 8);
  run(cache, 0, 3);
  const observed before = observe(cache);
  faulty::tensor out;
  faulty::fail.reduce = true;
  CHECK_THROWS_AS(cache.step(input(3), out, {3}, affine), std::runtime_error);
  CHECK(same_observed(observe(cache), before));
  faulty::fail.reduce = false;
  run(cache, 3, 8);
  CHECK(same_observed(observe(cache), observe(reference)));
}

TEST_CASE("strong: a statistics reduction that throws changes nothing", "[exceptions][reduction]") {
  // The hook runs inside begin_step, after the decision's reduction and before
  // the policy decides: its exception must leave the controller as it was, so
  // that the run continues exactly as one whose hook never failed.
  const reset_failures guard;
  faulty_controller reference(small()), cache(small());
  run(reference, 0, 8);
  bool fail = false;
  std::size_t hook_calls = 0;
  cache.set_statistics_reduction([&](double*, std::size_t) {
    ++hook_calls;
    if (fail) throw std::runtime_error("allreduce failed");
  });
  for (std::size_t t = 0; t < 8; ++t) {
    faulty::tensor out = affine(input(t));
    fail = true;
    const observed before = observe(cache);
    if (t >= 2 && t < 7) {  // the decision steps: step() and begin_step both fail
      CHECK_THROWS_WITH(cache.step(input(t), out, {t, 0.0}, affine), "allreduce failed");
      fail = false;
      auto begun = cache.begin_step(input(t), {t, 0.0});
      fail = true;
      CHECK_THROWS_WITH(cache.begin_step(input(t), {t, 0.0}), "allreduce failed");
      CHECK(same_observed(observe(cache), before));
      fail = false;
      cache.finish_step(begun, input(t), out);  // still the latest pending of branch 0
    } else {
      cache.step(input(t), out, {t, 0.0}, affine);  // forced steps make no decision: no hook
    }
  }
  CHECK(hook_calls == 3 * 5);
  CHECK(same_observed(observe(cache), observe(reference)));
}

TEST_CASE("strong: a refused finish_step changes nothing, and the pending can still be finished", "[exceptions][two_phase]") {
  const reset_failures guard;
  faulty_controller reference(small(2)), cache(small(2));
  run(reference, 0, 8, 2);
  for (std::size_t t = 0; t < 8; ++t)
    for (std::size_t b = 0; b < 2; ++b) {
      auto p = cache.begin_step(input(t), {t, 0.0, b});
      const observed before = observe(cache);
      faulty::tensor out = p.compute() ? affine(input(t)) : faulty::tensor{};
      faulty::tensor wrong = affine(input(t, 3));
      CHECK_THROWS_AS(cache.finish_step(p, input(t, 5), out), easycache::error);  // input of another size
      if (p.compute()) CHECK_THROWS_AS(cache.finish_step(p, input(t), wrong), easycache::error);
      CHECK(same_observed(observe(cache), before));
      cache.finish_step(p, input(t), out);
      CHECK_THROWS_AS(cache.finish_step(p, input(t), out), easycache::error);  // spent
    }
  CHECK(same_observed(observe(cache), observe(reference)));
}

TEST_CASE("basic: a backend pass that fails after the decision drops the generation", "[exceptions]") {
  const reset_failures guard;
  struct failing_pass {
    const char* name;
    bool faulty::failures::*flag;
    std::size_t step, branch;
  };
  // apply: a skipped step; commit: a computed anchor step; store: a computed step of branch 1.
  for (const failing_pass pass : {failing_pass{"apply", &faulty::failures::apply, 3, 0},
                                  failing_pass{"commit", &faulty::failures::commit, 1, 0},
                                  failing_pass{"store", &faulty::failures::store, 1, 1}}) {
    INFO(pass.name);
    faulty_controller reference(small(2)), cache(small(2));
    run(reference, 0, 8, 2);
    run(cache, 0, pass.step, 2);
    faulty::tensor out;
    if (pass.branch == 1) cache.step(input(pass.step), out, {pass.step, 0.0, 0}, affine);
    const observed before = observe(cache);
    faulty::fail.*pass.flag = true;
    CHECK_THROWS_AS(cache.step(input(pass.step), out, {pass.step, 0.0, pass.branch}, affine), std::runtime_error);
    faulty::fail.*pass.flag = false;
    // The failed evaluation is not counted, and the buffers it may have half
    // written are never used: the next anchor step begins a new generation.
    CHECK(same_observed(observe(cache), before));
    cache.step(input(pass.step), out, {pass.step, 0.0, 0}, affine);
    REQUIRE(cache.trace().size() == 1);
    CHECK(cache.trace().front().step == pass.step);
    CHECK(cache.trace().front().reason == easycache::reason::warmup);
    run(cache, 0, 8, 2);
    CHECK(same_observed(observe(cache), observe(reference)));
  }
}

TEST_CASE("a throwing decision callback: the step has taken effect", "[exceptions][trace]") {
  const reset_failures guard;
  faulty_controller reference(small()), cache(small());
  run(reference, 0, 8);
  std::size_t seen = 0;
  cache.on_decision([&](const easycache::step_record& r) {
    ++seen;
    if (r.step == 3) throw std::runtime_error("callback failed");
  });
  run(cache, 0, 3);
  faulty::tensor out;
  CHECK_THROWS_AS(cache.step(input(3), out, {3, 0.0}, affine), std::runtime_error);
  CHECK(seen == 4);
  CHECK(cache.stats().steps == 4);  // counted, recorded, and its output written
  CHECK(cache.trace().back().action == action::skip);
  CHECK(out.values == affine(input(3)).values);
  CHECK_THROWS_WITH(cache.step(input(3), out, {3}, affine), Contains("branch 0 evaluated twice at step 3"));
  run(cache, 4, 8);
  CHECK(same_observed(observe(cache), observe(reference)));
  // The overload that returns the output loses it: the exception replaces the return.
  easycache::controller<Eigen::VectorXd> owning(small());
  owning.on_decision([](const easycache::step_record&) { throw std::runtime_error("callback failed"); });
  CHECK_THROWS_AS(owning.step(test::constant(4, 0), {0}, [](const Eigen::VectorXd& x) { return x; }),
                  std::runtime_error);
  CHECK(owning.stats().steps == 1);
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

TEST_CASE("validate() and the constructor: an error and no object", "[exceptions][config]") {
  easycache::config c = small();
  c.branches = 0;
  const easycache::config copy = c;
  CHECK_THROWS_AS(c.validate(), easycache::error);
  CHECK(c.branches == copy.branches);
  CHECK_THROWS_AS(faulty_controller(c), easycache::error);
  CHECK_THROWS_AS(faulty_controller(c, easycache::easycache_policy(c)), easycache::error);
}
