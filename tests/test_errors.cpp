// Bad input: each case gets an easycache::error naming the bad value, or a
// documented safe fallback, and the controller stays usable.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <easycache/backends/host_buffer.hpp>

#include "helpers.hpp"

using Catch::Matchers::Contains;
using Eigen::VectorXd;
using test::affine;
using test::small_config;
using easycache::reason;

namespace {

// Runs steps [from, to) of the affine trajectory.
void run(easycache::controller<VectorXd>& cache, std::size_t from, std::size_t to, std::size_t n = 4) {
  for (std::size_t t = from; t < to; ++t) {
    VectorXd out;
    cache.step(test::constant(n, double(t)), out, {t}, affine);
  }
}
}  // namespace

TEST_CASE("invalid configurations are refused with the value named", "[errors][config]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto refused = [](easycache::config cfg, const std::string& needle) {
    CHECK_THROWS_WITH(cfg.validate(), Contains(needle));
    CHECK_THROWS_AS(easycache::controller<VectorXd>(cfg), easycache::error);
  };
  easycache::config c;
  c.threshold = -0.1;
  refused(c, "threshold must be >= 0 (got -0.1)");
  c.threshold = nan;
  refused(c, "threshold must be >= 0 (got nan)");
  c = {};
  c.steps = 0;
  refused(c, "steps must be >= 1 (got 0)");
  c = {};
  c.steps = 5;
  c.warmup_steps = 6;
  refused(c, "warmup_steps (6) must not exceed steps (5)");
  c = {};
  c.branches = 0;
  refused(c, "branches must be >= 1 (got 0)");
  c = {};
  c.window = easycache::schedule_window{0.9, 0.2};
  refused(c, "start 0.9, end 0.2");
  c.window = easycache::schedule_window{nan, 0.5};
  refused(c, "start nan");
  c = {};
  c.sampling.stride = 0;
  refused(c, "sampling.stride must be >= 1 (got 0)");
  c = {};
  c.sampling = {8, 16, 0};
  refused(c, "got 16 and 0");
  // The error derives from a standard exception.
  c = {};
  c.threshold = -1;
  CHECK_THROWS_AS(c.validate(), std::invalid_argument);
  // Valid edge cases.
  c = {};
  c.threshold = std::numeric_limits<double>::infinity();
  c.warmup_steps = c.steps;
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("reset(config) with a bad configuration changes nothing", "[errors][config]") {
  easycache::controller<VectorXd> cache(small_config());
  run(cache, 0, 3);
  easycache::config bad = small_config();
  bad.threshold = -1;
  CHECK_THROWS_AS(cache.reset(bad), easycache::error);
  CHECK(cache.configuration().threshold == 0.5);
  run(cache, 3, 8);
  CHECK(test::pattern(cache.trace()) == "CCSSSSCC");
}

TEST_CASE("more steps than configured", "[errors][sequence]") {
  easycache::controller<VectorXd> cache(small_config());
  run(cache, 0, 8);
  VectorXd out;
  CHECK_THROWS_WITH(cache.step(test::constant(4, 8), out, {8}, affine),
                    Contains("step 8 out of range: the schedule has 8 steps (config.steps"));
  // Usable: a new generation starts at step 0.
  run(cache, 0, 8);
  CHECK(test::pattern(cache.trace()) == "CCSSSSCC");
}

TEST_CASE("step sequence: a repeat is refused, a gap is computed, an earlier step or reset() starts anew",
          "[errors][sequence]") {
  easycache::controller<VectorXd> cache(small_config());
  run(cache, 0, 3);
  VectorXd out;
  CHECK_THROWS_WITH(cache.step(test::constant(4, 2), out, {2}, affine),
                    Contains("branch 0 evaluated twice at step 2") && Contains("extra_evaluation"));
  run(cache, 3, 4);  // the refused call changed nothing: step 3 skips as before
  CHECK(test::pattern(cache.trace()) == "CCSS");
  // Step 4 left out: step 5 is computed, whatever E says, and the rest goes on.
  run(cache, 5, 8);
  CHECK(test::pattern(cache.trace()) == "CCSSCSC");
  CHECK(cache.trace()[4].step == 5);
  CHECK(cache.trace()[4].reason == easycache::reason::out_of_sequence);

  // An earlier step begins a new generation there; so does any step after reset().
  run(cache, 0, 3);
  CHECK(cache.stats().steps == 3);
  cache.reset();
  cache.step(test::constant(4, 1), out, {1}, affine);
  CHECK(cache.stats().steps == 1);
  CHECK(cache.trace().front().reason == easycache::reason::warmup);
  easycache::controller<VectorXd> fresh(small_config());
  fresh.step(test::constant(4, 1), out, {1}, affine);
  CHECK(fresh.stats().steps == 1);
}

TEST_CASE("a tensor whose size changes within a generation", "[errors][shape]") {
  easycache::controller<VectorXd> cache(small_config());
  run(cache, 0, 3, 4);
  VectorXd out;
  CHECK_THROWS_WITH(cache.step(test::constant(5, 3), out, {3}, affine),
                    Contains("input size changed within a generation: 5 elements at step 3, 4 before"));
  run(cache, 3, 8, 4);
  CHECK(test::pattern(cache.trace()) == "CCSSSSCC");
  // A new generation may use another size: the buffers follow.
  run(cache, 0, 8, 9);
  CHECK(test::pattern(cache.trace()) == "CCSSSSCC");
}

TEST_CASE("a denoiser output of the wrong size", "[errors][shape]") {
  easycache::controller<VectorXd> cache(small_config());
  run(cache, 0, 1);
  VectorXd out;
  CHECK_THROWS_WITH(cache.step(test::constant(4, 1), out, {1}, [](const VectorXd&) { return test::constant(3, 1); }),
                    Contains("denoiser output has 3 elements at step 1, branch 0; the input has 4"));
  run(cache, 1, 8);
  CHECK(test::pattern(cache.trace()) == "CCSSSSCC");
}

TEST_CASE("a denoiser that throws leaves the controller as it was", "[errors][exceptions]") {
  easycache::controller<VectorXd> reference(small_config()), cache(small_config());
  run(reference, 0, 8);
  run(cache, 0, 6);  // step 6 is a computed step (E crosses τ)
  VectorXd out;
  CHECK_THROWS_AS(cache.step(test::constant(4, 6), out, {6}, [](const VectorXd&) -> VectorXd {
    throw std::runtime_error("model failed");
  }),
                  std::runtime_error);
  CHECK(cache.stats().steps == 6);
  CHECK(cache.trace().size() == 6);
  run(cache, 6, 8);  // the same step again
  CHECK(test::pattern(cache.trace()) == test::pattern(reference.trace()));
  for (std::size_t i = 0; i < 8; ++i) {
    const double a = cache.trace()[i].accumulated_error, b = reference.trace()[i].accumulated_error;
    CHECK(((std::isnan(a) && std::isnan(b)) || a == b));
  }
  CHECK(cache.stats().calls == reference.stats().calls);
}

TEST_CASE("branches out of range or before the anchor or twice", "[errors][guidance]") {
  easycache::config cfg = small_config();
  cfg.branches = 2;
  easycache::controller<VectorXd> cache(cfg);
  VectorXd out;
  const VectorXd x = test::constant(4, 0);
  CHECK_THROWS_WITH(cache.step(x, out, {0, 0.0, 1}, affine), Contains("branch 1 at step 0 before branch 0"));
  CHECK_THROWS_WITH(cache.step(x, out, {0, 0.0, 2}, affine), Contains("branch 2 out of range: config.branches is 2"));
  cache.step(x, out, {0, 0.0, 0}, affine);
  cache.step(x, out, {0, 0.0, 1}, affine);
  CHECK_THROWS_WITH(cache.step(x, out, {0, 0.0, 1}, affine), Contains("branch 1 evaluated twice at step 0"));
  CHECK_THROWS_WITH(cache.step(x, out, {1, 0.0, 1}, affine), Contains("(current step is 0)"));
  cache.step(test::constant(4, 1), out, {1, 0.0, 0}, affine);
  cache.step(test::constant(4, 1), out, {1, 0.0, 1}, affine);
  CHECK(cache.stats().evaluations == 4);
}

TEST_CASE("an output that aliases the input is refused", "[errors]") {
  easycache::controller<VectorXd> cache(small_config());
  VectorXd x = test::constant(4, 0);
  CHECK_THROWS_WITH(cache.step(x, x, {0}, affine), Contains("out must not share memory with x"));
  std::vector<float> memory(8);
  easycache::controller<easycache::host_buffer<float>> raw(small_config());
  easycache::host_buffer<float> a{memory.data(), 8}, b{memory.data(), 8};
  CHECK_THROWS_WITH(raw.step(a, b, {0}, [](const auto&, auto&) {}), Contains("share memory"));
}

TEST_CASE("zero input change between computed steps: k is undefined so the step is computed", "[errors][degenerate]") {
  easycache::controller<VectorXd> cache(small_config());
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    cache.step(test::constant(4, 1.0), out, {t}, affine);  // x never moves
  }
  // k = 0/0 after the warm-up: never skip on an undefined rate.
  CHECK(test::pattern(cache.trace()) == "CCCCCCCC");
  CHECK(cache.stats().count(reason::degenerate_statistics) == 5);
  for (const auto& r : cache.trace()) CHECK_FALSE(std::isinf(r.accumulated_error));
}

TEST_CASE("zero input change with a defined k is a legitimate skip", "[errors][degenerate]") {
  easycache::controller<VectorXd> cache(small_config());
  const double inputs[] = {0, 1, 1, 1, 1, 1, 1, 1};
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    cache.step(test::constant(4, inputs[t]), out, {t}, affine);
  }
  CHECK(test::pattern(cache.trace()) == "CCSSSSSC");
  CHECK(cache.trace()[3].predicted_error == 0.0);
}

TEST_CASE("a zero output norm is degenerate: computed and never divided by", "[errors][degenerate]") {
  easycache::controller<VectorXd> cache(small_config());
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t}, [](const VectorXd& x) { return VectorXd::Zero(x.size()).eval(); });
  }
  CHECK(test::pattern(cache.trace()) == "CCCCCCCC");
  CHECK(cache.stats().count(reason::degenerate_statistics) == 5);
}

TEST_CASE("NaN or Inf in outputs are never cached", "[errors][degenerate]") {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    easycache::config cfg = small_config();
    cfg.steps = 12;
    easycache::controller<VectorXd> cache(cfg);
    std::vector<VectorXd> outputs;
    for (std::size_t t = 0; t < 12; ++t) {
      VectorXd out;
      cache.step(test::constant(4, double(t)), out, {t}, [&](const VectorXd& x) {
        VectorXd v = affine(x);
        if (t == 1) v(2) = bad;  // one poisoned output in the warm-up
        return v;
      });
      outputs.push_back(out);
    }
    INFO("bad value " << bad);
    // Step 2 must compute (k from a poisoned output), step 3 too (its k involves
    // the poisoned v_1): only then is k finite and skipping allowed again.
    CHECK(test::pattern(cache.trace()).substr(0, 4) == "CCCC");
    CHECK(cache.trace()[2].reason == reason::degenerate_statistics);
    CHECK(cache.trace()[3].reason == reason::degenerate_statistics);
    CHECK(cache.stats().skips > 0);
    for (std::size_t t = 2; t < 12; ++t) CHECK(outputs[t].allFinite());
  }
}

TEST_CASE("NaN or Inf in outputs at elements the statistics do not sample are never cached",
          "[errors][degenerate][sampling]") {
  // Every 2nd element sampled (and the ComfyUI-style 2-D pattern): element 3 is not.
  for (const easycache::statistics_sampling sampling :
       {easycache::statistics_sampling{2, 0, 0}, easycache::statistics_sampling{2, 2, 4}}) {
    for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
      INFO("bad value " << bad << ", height " << sampling.height);
      easycache::config cfg = small_config(12);
      cfg.threshold = std::numeric_limits<double>::infinity();  // skip wherever allowed
      cfg.sampling = sampling;
      auto run = [&](auto& cache, auto make_input, auto output_finite) {
        for (std::size_t t = 0; t < 12; ++t) {
          auto [x, out] = make_input(double(t));
          cache.step(x, out, {t}, [&](const auto& in, auto& v) {
            using scalar = typename std::decay_t<decltype(in)>::Scalar;
            v = (in.array() + scalar(8)).matrix();
            if (t == 1 || t == 6) v(3) = static_cast<scalar>(bad);  // a warm-up output, and a later computed one
          });
          if (t >= 2 && t != 6) CHECK(output_finite(out));
        }
        // Step 2 has the poisoned vector of step 1 only: computed, not skipped.
        CHECK(cache.trace()[2].action == easycache::action::compute);
        CHECK(cache.trace()[2].reason == reason::degenerate_statistics);
        CHECK(cache.stats().skips > 0);
      };
      easycache::controller<VectorXd> eigen(cfg);
      run(eigen, [](double t) { return std::pair<VectorXd, VectorXd>{test::constant(8, t), VectorXd()}; },
          [](const VectorXd& v) { return v.allFinite(); });
      easycache::controller<Eigen::VectorXf> eigen_float(cfg);
      run(eigen_float,
          [](double t) {
            return std::pair<Eigen::VectorXf, Eigen::VectorXf>{Eigen::VectorXf::Constant(8, float(t)), Eigen::VectorXf()};
          },
          [](const Eigen::VectorXf& v) { return v.allFinite(); });
    }
  }
}

TEST_CASE("NaN in the input falls back to computing", "[errors][degenerate]") {
  easycache::controller<VectorXd> cache(small_config());
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd x = test::constant(4, double(t)), out;
    if (t == 4) x(0) = std::numeric_limits<double>::quiet_NaN();
    cache.step(x, out, {t}, affine);
  }
  CHECK(cache.trace()[4].action == easycache::action::compute);
  CHECK(cache.trace()[4].reason == reason::degenerate_statistics);
}

TEST_CASE("host buffers: a null pointer with elements and an output of another size", "[errors][host]") {
  easycache::controller<easycache::host_buffer<double>> cache(small_config());
  std::vector<double> x(4, 0.0), y(3, 0.0);
  easycache::host_buffer<double> in{x.data(), 4}, out{y.data(), 3}, null{nullptr, 4};
  CHECK_THROWS_WITH(cache.step(null, out, {0}, [](const auto&, auto&) {}), Contains("null data pointer and 4 elements"));
  CHECK_THROWS_WITH(cache.step(in, out, {0}, [](const auto&, auto&) {}), Contains("output has 3 elements, input has 4"));
}

TEST_CASE("a non-contiguous Eigen map is refused", "[errors][eigen]") {
  using strided = Eigen::Map<Eigen::VectorXd, 0, Eigen::InnerStride<2>>;
  std::vector<double> memory(8, 1.0), output(8, 0.0);
  strided x(memory.data(), 4, Eigen::InnerStride<2>(2)), out(output.data(), 4, Eigen::InnerStride<2>(2));
  easycache::controller<strided> cache(small_config());
  CHECK_THROWS_WITH(cache.step(x, out, {0}, [](const strided& in, strided& o) { o = in; }),
                    Contains("not contiguous (inner stride 2"));
}

TEST_CASE("subsampling layout that does not divide the input", "[errors][variants]") {
  easycache::config cfg = small_config();
  cfg.sampling = {2, 3, 5};
  easycache::controller<VectorXd> cache(cfg);
  VectorXd out;
  CHECK_THROWS_WITH(cache.step(test::constant(16, 0), out, {0}, affine), Contains("16 elements is not a whole number of 3x5"));
  CHECK_NOTHROW(cache.step(test::constant(30, 0), out, {0}, affine));
}

TEST_CASE("a sampling plane whose element count overflows is refused", "[errors][config][variants]") {
  // Found by the fuzzer: height x width wrapped around to 0 and the divisibility
  // check of step 0 divided by it.
  easycache::config cfg = small_config();
  cfg.sampling = {2, std::size_t{1} << 63, 2};
  CHECK_THROWS_WITH(cfg.validate(), Contains("sampling.height x sampling.width overflows"));
  CHECK_THROWS_AS(easycache::controller<VectorXd>(cfg), easycache::error);
  cfg.sampling = {8, std::size_t{1} << 33, std::numeric_limits<std::size_t>::max()};
  CHECK_THROWS_WITH(cfg.validate(), Contains("got 8589934592 and 18446744073709551615"));
  cfg.sampling = {8, std::size_t{1} << 32, std::size_t{1} << 31};  // 2^63 elements: fits
  CHECK_NOTHROW(cfg.validate());
}

TEST_CASE("a sampling stride beyond the tensor samples like the tensor's extent", "[errors][variants]") {
  // Found by the fuzzer: stride 2^54 made the 1-D chunk length stride x 1024 wrap
  // to 0 (an endless loop), and a stride near SIZE_MAX made the sampled count 0
  // (statistics 0/0, every step computed).
  struct layout {
    std::size_t height, width, equivalent_stride;
  };
  const std::size_t n = 24;
  for (const layout l : {layout{0, 0, n}, layout{4, 3, 4}}) {
    for (std::size_t stride : {std::size_t{1} << 54, std::numeric_limits<std::size_t>::max(), n + 1}) {
      easycache::config cfg = small_config(), same = small_config();
      cfg.sampling = {stride, l.height, l.width};
      same.sampling = {l.equivalent_stride, l.height, l.width};
      INFO("stride " << stride << ", plane " << l.height << "x" << l.width);
      CHECK(easycache::sampled_count(n, cfg.sampling) == easycache::sampled_count(n, same.sampling));
      easycache::controller<VectorXd> cache(cfg), reference(same);
      for (std::size_t t = 0; t < 8; ++t) {
        VectorXd x = test::constant(n, double(t)), out;
        x(0) += 0.5 * double(t * t);  // the sampled element moves faster than the others
        cache.step(x, out, {t}, affine);
        reference.step(x, out, {t}, affine);
      }
      CHECK(test::pattern(cache.trace()) == test::pattern(reference.trace()));
      CHECK(cache.stats().skips > 0);
      for (std::size_t t = 0; t < 8; ++t) {
        const auto &a = cache.trace()[t], &b = reference.trace()[t];
        CHECK(((std::isnan(a.input_change) && std::isnan(b.input_change)) || a.input_change == b.input_change));
      }
    }
  }
}

TEST_CASE("a failed first evaluation of a branch does not fix its size", "[errors][exceptions][guidance]") {
  // Found by the fuzzer: the branch's size was recorded before its denoiser ran,
  // so after the denoiser threw, a retry with another size was refused.
  easycache::config cfg = small_config();
  cfg.branches = 2;
  easycache::controller<VectorXd> cache(cfg);
  VectorXd out;
  cache.step(test::constant(4, 0), out, {0, 0.0, 0}, affine);
  auto failing = [](const VectorXd&) -> VectorXd { throw std::runtime_error("model failed"); };
  CHECK_THROWS_AS(cache.step(test::constant(6, 0), out, {0, 0.0, 1}, failing), std::runtime_error);
  CHECK_THROWS_WITH(cache.step(test::constant(5, 0), out, {0, 0.0, 1}, [](const VectorXd&) { return test::constant(3, 0); }),
                    Contains("denoiser output has 3 elements"));
  CHECK_NOTHROW(cache.step(test::constant(4, 0), out, {0, 0.0, 1}, affine));
  CHECK(cache.stats().evaluations == 2);
  // From now on the branch's size is fixed for the generation.
  cache.step(test::constant(4, 1), out, {1, 0.0, 0}, affine);
  CHECK_THROWS_WITH(cache.step(test::constant(6, 1), out, {1, 0.0, 1}, affine),
                    Contains("input size of branch 1 changed within a generation: 6 elements at step 1, 4 before"));
}

TEST_CASE("host buffers: a null output with elements is refused before anything is written", "[errors][host]") {
  // The output was checked only after the denoiser wrote into it, and a skipped
  // step wrote x + delta through the null pointer.
  easycache::controller<easycache::host_buffer<double>> cache(small_config());
  std::vector<double> x(4), y(4);
  easycache::host_buffer<double> in{x.data(), 4}, out{y.data(), 4}, null{nullptr, 4};
  bool called = false;
  auto denoiser = [&](const easycache::host_buffer<double>& a, easycache::host_buffer<double>& v) {
    called = true;
    for (std::size_t i = 0; i < a.size; ++i) v.data[i] = a.data[i] + 8.0;
  };
  CHECK_THROWS_WITH(cache.step(in, null, {0}, denoiser), Contains("null data pointer and 4 elements"));
  CHECK_FALSE(called);
  for (std::size_t t = 0; t < 3; ++t) {
    std::fill(x.begin(), x.end(), double(t));
    cache.step(in, out, {t}, denoiser);
  }
  REQUIRE(test::pattern(cache.trace()) == "CCS");  // step 3 would be skipped too
  std::fill(x.begin(), x.end(), 3.0);
  CHECK_THROWS_WITH(cache.step(in, null, {3}, denoiser), Contains("null data pointer"));
  cache.step(in, out, {3}, denoiser);
  CHECK(test::pattern(cache.trace()) == "CCSS");
  CHECK(y[0] == 11.0);
}

TEST_CASE("host buffers: an output that overlaps the input in part is refused", "[errors][host]") {
  // Only identical pointers were refused; an output shifted by a few elements
  // let apply_delta and the denoiser overwrite inputs they had yet to read.
  std::vector<float> memory(12, 1.0f);
  easycache::controller<easycache::host_buffer<float>> cache(small_config());
  auto copy = [](const easycache::host_buffer<float>& a, easycache::host_buffer<float>& v) {
    for (std::size_t i = 0; i < a.size; ++i) v.data[i] = a.data[i];
  };
  easycache::host_buffer<float> x{memory.data(), 8}, inside{memory.data() + 4, 8};
  CHECK_THROWS_WITH(cache.step(x, inside, {0}, copy), Contains("out must not share memory with x"));
  CHECK_THROWS_WITH(cache.step(inside, x, {0}, copy), Contains("out must not share memory with x"));
  easycache::host_buffer<float> tail{memory.data() + 8, 4}, head{memory.data(), 4};
  CHECK_NOTHROW(cache.step(head, tail, {0}, copy));  // adjacent, not overlapping
  // A null input is reported as such, not compared as a range.
  easycache::host_buffer<float> null{nullptr, 4};
  CHECK_THROWS_WITH(cache.step(null, tail, {0}, copy), Contains("null data pointer"));
}

TEST_CASE("an input change that overflows the sums makes k degenerate, not 0", "[errors][degenerate]") {
  // Huge but finite inputs: Σ|x_1 − x_0| overflows the fp32 lane sums to +inf
  // while the output change stays finite, so k = finite / inf was 0 and every
  // later step was skipped on ε = 0 (E never grew).
  using Eigen::VectorXf;
  const Eigen::Index n = 2048;
  easycache::controller<VectorXf> cache(small_config());
  auto slow_model = [](std::size_t t) {
    return [t](const VectorXf& x) { return VectorXf::Constant(x.size(), 1.0f + 0.01f * float(t)).eval(); };
  };
  for (std::size_t t = 0; t < 8; ++t) {
    const float value = t == 0 ? 1e37f : 0.1f * float(t);
    VectorXf out;
    cache.step(VectorXf::Constant(n, value), out, {t}, slow_model(t));
    CHECK(out.allFinite());
  }
  const auto& trace = cache.trace();
  CHECK(trace[2].action == easycache::action::compute);
  CHECK(trace[2].reason == reason::degenerate_statistics);
  for (const auto& r : trace) CHECK_FALSE(r.transformation_rate == 0.0);
  // From step 3 on k is measured between finite steps again and skipping resumes.
  CHECK(std::isfinite(trace[3].transformation_rate));
  CHECK(cache.stats().skips > 0);
}

TEST_CASE("tensors of 0 elements: every step is computed, nothing divides by 0", "[errors][degenerate]") {
  easycache::controller<VectorXd> cache(small_config());
  easycache::controller<easycache::host_buffer<float>> raw(small_config());
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out = test::constant(3, 1.0);
    cache.step(VectorXd(), out, {t}, affine);
    CHECK(out.size() == 0);
    easycache::host_buffer<float> empty{nullptr, 0}, empty_out{nullptr, 0};
    raw.step(empty, empty_out, {t}, [](const auto&, auto&) {});
  }
  for (const auto* c : {&cache.trace(), &raw.trace()}) {
    CHECK(test::pattern(*c) == "CCCCCCCC");
    // The means are 0/0: degenerate statistics, never a skip on them.
    for (std::size_t t = 2; t < 7; ++t) CHECK((*c)[t].reason == reason::degenerate_statistics);
  }
}

TEST_CASE("NaN or ±Inf in the input: the step is computed", "[errors][degenerate]") {
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    INFO("bad value " << bad);
    easycache::controller<VectorXd> cache(small_config());
    for (std::size_t t = 0; t < 8; ++t) {
      VectorXd x = test::constant(4, double(t)), out;
      if (t == 4) x(0) = bad;
      cache.step(x, out, {t}, affine);
      if (t != 4) CHECK(out.allFinite());
    }
    // dx of steps 4 and 5 involves the bad input; k after the compute at step 4 too.
    CHECK(cache.trace()[4].action == easycache::action::compute);
    CHECK(cache.trace()[4].reason == reason::degenerate_statistics);
    CHECK(cache.trace()[5].reason == reason::degenerate_statistics);
    CHECK(cache.trace()[3].action == easycache::action::skip);  // finite before it
  }
}

TEST_CASE("huge finite values whose sums overflow: degenerate, computed", "[errors][degenerate]") {
  // fp32 lane sums of 2048 values of 1e37 overflow to +inf: the output norm of
  // a computed step, the input change of a decision step.
  using Eigen::VectorXf;
  const Eigen::Index n = 2048;
  for (bool huge_outputs : {true, false}) {
    INFO((huge_outputs ? "huge outputs" : "huge input steps"));
    easycache::controller<VectorXf> cache(small_config());
    for (std::size_t t = 0; t < 8; ++t) {
      const float x = huge_outputs ? float(t) : (t % 2 ? 1e37f : -1e37f);
      VectorXf out;
      cache.step(VectorXf::Constant(n, x), out, {t}, [&](const VectorXf& in) {
        return huge_outputs ? VectorXf::Constant(in.size(), 1e37f).eval() : (in * 0.5f).eval();
      });
      CHECK(out.allFinite());
    }
    CHECK(test::pattern(cache.trace()) == "CCCCCCCC");
    for (std::size_t t = 2; t < 7; ++t) CHECK(cache.trace()[t].reason == reason::degenerate_statistics);
  }
}

TEST_CASE("denormal values are ordinary numbers", "[errors][degenerate]") {
  // A homogeneous denoiser v = 2x: ε = k·dx/‖v‖ does not depend on the scale, so
  // a trajectory scaled into the denormals decides as the unscaled one.
  auto run = [](double scale) {
    easycache::config cfg = small_config();
    cfg.steps = 12;
    easycache::controller<VectorXd> cache(cfg);
    for (std::size_t t = 0; t < 12; ++t) {
      VectorXd out;
      cache.step(test::constant(4, scale * double(64 + t)), out, {t}, [](const VectorXd& x) { return (2.0 * x).eval(); });
      CHECK(out.allFinite());
    }
    return cache.trace();
  };
  const double denormal = std::numeric_limits<double>::denorm_min() * 1024.0;
  REQUIRE(std::fpclassify(denormal * 76.0) == FP_SUBNORMAL);
  const auto ordinary = run(1.0), tiny = run(denormal);
  CHECK(test::pattern(tiny) == test::pattern(ordinary));
  CHECK(ordinary.size() == 12);
  CHECK(test::pattern(ordinary).find('S') != std::string::npos);
  for (std::size_t t = 2; t < 11; ++t) CHECK(std::isfinite(tiny[t].accumulated_error));
}

TEST_CASE("values near the largest finite one: a skipped x + (v - x_c) can overflow", "[errors][degenerate]") {
  // Documented, not prevented: the skip computes x + (v_c − x_c) as the sampler
  // would, element by element, without checking it. Here v = x + 1.5e308 is
  // itself +inf at step 2, and the cached answer is +inf too. (One element:
  // with more, the sums of |v| overflow and every decision step computes.)
  easycache::controller<VectorXd> cache(small_config());
  const double inputs[] = {-1e300, 0.0, 0.5e308};
  VectorXd out;
  for (std::size_t t = 0; t < 3; ++t)
    cache.step(test::constant(1, inputs[t]), out, {t}, [](const VectorXd& x) {
      return (x.array() + 1.5e308).matrix().eval();
    });
  CHECK(cache.trace()[2].action == easycache::action::skip);
  CHECK(std::isinf(out(0)));
  // Below a quarter of the maximum, |x|, |v|, |x_c| cannot add up past it.
  CHECK(std::isfinite(std::numeric_limits<double>::max() / 4 * 3));
}

TEST_CASE("another branch's non-finite output is replayed on its skipped steps", "[errors][degenerate][guidance]") {
  // Documented, not prevented: the statistics (and so the guards) are the
  // anchor's; another branch's cached vector is whatever its denoiser gave.
  easycache::config cfg = small_config();
  cfg.branches = 2;
  easycache::controller<VectorXd> cache(cfg);
  VectorXd out;
  for (std::size_t t = 0; t < 4; ++t) {
    cache.step(test::constant(4, double(t)), out, {t, 0.0, 0}, affine);
    CHECK(out.allFinite());
    cache.step(test::constant(4, double(t)), out, {t, 0.0, 1}, [&](const VectorXd& x) {
      VectorXd v = affine(x);
      if (t == 1) v(0) = std::numeric_limits<double>::quiet_NaN();
      return v;
    });
  }
  CHECK(test::pattern(cache.trace(), 1) == "CCSS");
  CHECK(std::isnan(out(0)));
}

TEST_CASE("step_info: NaN or infinite progress falls back to index / steps, outside [0, 1] is outside the window",
          "[errors][variants]") {
  easycache::config cfg;
  cfg.steps = 10;
  cfg.threshold = 100;
  cfg.window = easycache::schedule_window{0.2, 1.0};
  easycache::controller<VectorXd> cache(cfg);
  const double progress[] = {0.0, 0.1, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(), -1.0, 2.0, 0.5, 0.6, 1.0};
  for (std::size_t t = 0; t < 10; ++t) {
    VectorXd out;
    easycache::step_info info{t};
    info.progress = progress[t];
    cache.step(test::constant(4, double(t)), out, info, affine);
  }
  // Steps 2, 3 and 4 (NaN, +inf, -inf) use 2/10, 3/10 and 4/10: inside. Steps 5
  // and 6 (-1 and 2) are outside, and so is 1.0, the window's end.
  CHECK(test::pattern(cache.trace()) == "CCSSSCCSSC");
  const auto r = test::reasons(cache.trace());
  CHECK(r[2] == reason::below_threshold);
  CHECK(r[4] == reason::below_threshold);
  CHECK(r[5] == reason::outside_window);
  CHECK(r[6] == reason::outside_window);
  CHECK(r[9] == reason::outside_window);
}

TEST_CASE("an empty window computes every step", "[errors][variants]") {
  easycache::config cfg = small_config();
  cfg.threshold = 100;
  cfg.window = easycache::schedule_window{0.5, 0.5};
  easycache::controller<VectorXd> cache(cfg);
  run(cache, 0, 8);
  CHECK(test::pattern(cache.trace()) == "CCCCCCCC");
  CHECK(cache.stats().count(reason::outside_window) == 8);
}

TEST_CASE("step_info: a NaN or infinite timestep is only recorded", "[errors][trace]") {
  easycache::controller<VectorXd> cache(small_config());
  const double timesteps[] = {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                              -std::numeric_limits<double>::infinity(), 1e308, 0, 0, 0, 0};
  for (std::size_t t = 0; t < 8; ++t) {
    VectorXd out;
    cache.step(test::constant(4, double(t)), out, {t, timesteps[t]}, affine);
  }
  CHECK(test::pattern(cache.trace()) == "CCSSSSCC");
  std::ostringstream csv, json;
  easycache::write_csv(csv, cache.trace());
  easycache::write_json(json, cache.stats(), cache.trace());
  CHECK_THAT(csv.str(), Contains("\n0,0,,") && Contains("\n1,0,1e999,") && Contains("\n2,0,-1e999,"));
  CHECK_THAT(json.str(), Contains("\"timestep\":null") && Contains("\"timestep\":1e999"));
}

TEST_CASE("reset(config) mid-generation drops it, the statistics stay until step 0", "[errors][sequence]") {
  easycache::controller<VectorXd> cache(small_config());
  run(cache, 0, 4);
  easycache::config next = small_config();
  next.steps = 6;
  cache.reset(next);
  CHECK(cache.stats().steps == 4);
  VectorXd out;
  // Step 4 does not continue the dropped generation: a new one (6 steps) begins there.
  cache.step(test::constant(4, 4), out, {4}, affine);
  CHECK(cache.stats().steps == 1);
  CHECK(cache.trace().front().reason == easycache::reason::warmup);
  run(cache, 0, 6);
  CHECK(test::pattern(cache.trace()) == "CCSSSC");
}
