// The fused host passes (detail/host_kernels.hpp) against plain loops in
// double: every size around the vector and block widths, misaligned pointers,
// and the streaming-store variants, which the controller only uses on latents
// larger than the tests can afford. Then the controller over host buffers at
// addresses misaligned for their element type.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <easycache/detail/host_kernels.hpp>
#include <easycache/backends/host_buffer.hpp>

#include "helpers.hpp"

namespace host = easycache::detail::host;

namespace {

std::vector<float> values(std::size_t n, float phase) {
  std::vector<float> v(n + 4);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = std::sin(phase + 0.37f * static_cast<float>(i)) * (1.0f + static_cast<float>(i % 7));
  return v;
}

double reference_abs_diff(const float* a, const float* b, std::size_t n) {
  double total = 0;
  for (std::size_t i = 0; i < n; ++i) total += std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
  return total;
}

// The first 16-byte aligned element of v (which holds 4 spare elements).
float* aligned(std::vector<float>& v) {
  float* p = v.data();
  while (!easycache::detail::simd::aligned16(p)) ++p;
  return p;
}

const std::size_t sizes[] = {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 1023, 1024, 1025, 1031, 4099};

}  // namespace

TEST_CASE("host kernels: the sum of |a - b| matches a double loop at every size and offset", "[kernels]") {
  for (std::size_t n : sizes)
    for (std::size_t offset = 0; offset < 4; ++offset) {
      const auto a = values(n, 0.1f), b = values(n, 1.3f);
      const double expected = reference_abs_diff(a.data() + offset, b.data() + offset, n);
      const double got = host::sum_abs_diff(a.data() + offset, b.data() + offset, n, {});
      INFO("n = " << n << ", offset = " << offset);
      CHECK(got == Approx(expected).epsilon(1e-6).margin(1e-30));
      // The double path, for comparison, within the same tolerance.
      const std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end());
      CHECK(host::sum_abs_diff(ad.data() + offset, bd.data() + offset, n, {}) == Approx(expected).epsilon(1e-12));
    }
}

TEST_CASE("host kernels: add writes x + delta and the copy of x, cached or streamed", "[kernels]") {
  for (std::size_t n : sizes)
    for (bool with_copy : {false, true}) {
      const auto x = values(n, 0.2f), delta = values(n, 2.1f);
      std::vector<float> out(n + 4, -7.0f), copy(n + 4, -7.0f), streamed(n + 4, -7.0f), streamed_copy(n + 4, -7.0f);
      host::add(x.data() + 1, delta.data(), out.data() + 1, with_copy ? copy.data() + 1 : nullptr, n);
      // Streaming stores need 16-byte aligned destinations, as vector data is.
      float* streamed_out = aligned(streamed);
      float* streamed_copy_out = aligned(streamed_copy);
      host::vec::add<true>(x.data() + 1, delta.data(), streamed_out, with_copy ? streamed_copy_out : nullptr, n);
      INFO("n = " << n << ", copy = " << with_copy);
      for (std::size_t i = 0; i < n; ++i) {
        REQUIRE(out[i + 1] == x[i + 1] + delta[i]);
        REQUIRE(streamed_out[i] == x[i + 1] + delta[i]);
        if (with_copy) {
          REQUIRE(copy[i + 1] == x[i + 1]);
          REQUIRE(streamed_copy_out[i] == x[i + 1]);
        }
      }
      // Nothing past the end is written.
      CHECK(out[n + 1] == -7.0f);
      CHECK(streamed_out[n] == -7.0f);
      CHECK(copy[0] == -7.0f);
    }
}

TEST_CASE("host kernels: the extrapolated add matches its formula", "[kernels]") {
  const float weight = 0.375f;
  for (std::size_t n : sizes) {
    const auto x = values(n, 0.4f), delta = values(n, 1.1f), previous = values(n, 2.9f);
    std::vector<float> out(n + 4), copy(n + 4), streamed_values(n + 4);
    float* streamed = aligned(streamed_values);
    host::add_extrapolated(x.data(), delta.data(), previous.data(), double(weight), out.data(), copy.data(), n);
    host::vec::add_extrapolated<true>(x.data(), delta.data(), previous.data(), weight, streamed, nullptr, n);
    for (std::size_t i = 0; i < n; ++i) {
      const double expected = double(x[i]) + (double(delta[i]) + double(weight) * (double(delta[i]) - double(previous[i])));
      REQUIRE(out[i] == Approx(expected).epsilon(1e-6).margin(1e-6));
      REQUIRE(streamed[i] == out[i]);
      REQUIRE(copy[i] == x[i]);
    }
  }
}

TEST_CASE("host kernels: the commit's sums and writes, with and without the change", "[kernels]") {
  for (std::size_t n : sizes)
    for (bool measure : {false, true})
      for (bool stream : {false, true}) {
        const auto x = values(n, 0.5f), v = values(n, 1.7f), last0 = values(n, 2.3f), delta0 = values(n, 3.1f);
        std::vector<float> last_values = last0, delta_values = delta0;
        // Aligned destinations, as the controller's buffers are; the sources shift with them.
        float* last = aligned(last_values);
        float* delta = aligned(delta_values);
        const std::size_t shift = static_cast<std::size_t>(last - last_values.data());
        const std::size_t delta_shift = static_cast<std::size_t>(delta - delta_values.data());
        REQUIRE(shift == delta_shift);
        const float* x_at = x.data() + shift;
        const float* v_at = v.data() + shift;
        host::commit_sums sums;
        if (stream && measure)
          host::vec::commit<true, true>(x_at, v_at, last, delta, n, sums.output_change, sums.input_change,
                                        sums.output_norm);
        else if (stream)
          host::vec::commit<true, false>(x_at, v_at, last, delta, n, sums.output_change, sums.input_change,
                                         sums.output_norm);
        else
          sums = host::commit(x_at, v_at, last, delta, n, measure, {});
        double change = 0, moved = 0, norm = 0;
        for (std::size_t i = 0; i < n; ++i) {
          change += std::abs(double(v_at[i]) - (double(last0[i + shift]) + double(delta0[i + shift])));
          moved += std::abs(double(x_at[i]) - double(last0[i + shift]));
          norm += std::abs(double(v_at[i]));
        }
        INFO("n = " << n << ", measure = " << measure << ", stream = " << stream);
        CHECK(sums.output_norm == Approx(norm).epsilon(1e-6).margin(1e-30));
        CHECK(sums.output_change == Approx(measure ? change : 0.0).epsilon(1e-6).margin(1e-30));
        CHECK(sums.input_change == Approx(measure ? moved : 0.0).epsilon(1e-6).margin(1e-30));
        for (std::size_t i = 0; i < n; ++i) {
          REQUIRE(last[i] == x_at[i]);
          REQUIRE(delta[i] == v_at[i] - x_at[i]);
        }
        CHECK(last[n] == last0[n + shift]);
        CHECK(delta[n] == delta0[n + shift]);
      }
}

TEST_CASE("host kernels: float and double commits agree", "[kernels]") {
  const std::size_t n = 5000;
  const auto x = values(n, 0.5f), v = values(n, 1.7f), last0 = values(n, 2.3f), delta0 = values(n, 3.1f);
  std::vector<float> last = last0, delta = delta0;
  std::vector<double> xd(x.begin(), x.end()), vd(v.begin(), v.end()), lastd(last0.begin(), last0.end()),
      deltad(delta0.begin(), delta0.end());
  const auto f = host::commit(x.data(), v.data(), last.data(), delta.data(), n, true, {});
  const auto d = host::commit(xd.data(), vd.data(), lastd.data(), deltad.data(), n, true, {});
  CHECK(f.output_change == Approx(d.output_change).epsilon(1e-6));
  CHECK(f.input_change == Approx(d.input_change).epsilon(1e-6));
  CHECK(f.output_norm == Approx(d.output_norm).epsilon(1e-6));
}

// Host tensors at any byte address (ggml tensors inside packed buffers): the
// controller over host buffers whose pointers are misaligned for their element
// type, on sizes with vector blocks and tails, gives the aligned run's results
// bit for bit (and under -fsanitize=undefined, no misaligned access).
namespace {

// `size` elements starting `offset` bytes past a 64-byte boundary of its own
// storage: at offset 1, a float* at an odd address.
template <class S>
class placed_buffer {
 public:
  placed_buffer(std::size_t size, std::size_t offset) : bytes_(size * sizeof(S) + 128) {
    const auto base = reinterpret_cast<std::uintptr_t>(bytes_.data());
    const std::size_t to_boundary = (64 - base % 64) % 64;
    view_ = {reinterpret_cast<S*>(bytes_.data() + to_boundary + offset), size};
  }
  placed_buffer(const placed_buffer&) = delete;
  placed_buffer& operator=(const placed_buffer&) = delete;
  easycache::host_buffer<S>& view() noexcept { return view_; }

 private:
  std::vector<unsigned char> bytes_;
  easycache::host_buffer<S> view_;
};

// Element i of a host buffer at any address, read and written as bytes (as the
// library does): a misaligned S* must not be dereferenced.
template <class S>
S element(const easycache::host_buffer<S>& b, std::size_t i) {
  S value;
  std::memcpy(&value, reinterpret_cast<const unsigned char*>(b.data) + i * sizeof(S), sizeof(S));
  return value;
}
template <class S>
void set_element(easycache::host_buffer<S>& b, std::size_t i, S value) {
  std::memcpy(reinterpret_cast<unsigned char*>(b.data) + i * sizeof(S), &value, sizeof(S));
}

template <class S>
struct placed_run {
  std::vector<S> outputs;        // every evaluation's output, in order
  std::vector<double> measured;  // every trace record's statistics, in order
  std::string pattern;
};

// A two-branch sampler loop: x moves a fifth of the way to branch 0's output
// each step; the denoisers are smooth in x and t, so that steps are skipped.
template <class S>
placed_run<S> run_placed(const easycache::config& cfg, std::size_t size, std::size_t input_offset,
                         std::size_t output_offset) {
  placed_buffer<S> x(size, input_offset), out(size, output_offset);
  for (std::size_t i = 0; i < size; ++i) set_element(x.view(), i, static_cast<S>(std::sin(0.05 * double(i))));
  easycache::controller<easycache::host_buffer<S>> cache(cfg);
  placed_run<S> run;
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    const double timestep = 1.0 - double(t) / double(cfg.steps);
    for (std::size_t b = 0; b < cfg.branches; ++b) {
      cache.step(x.view(), out.view(), {t, timestep, b},
                 [&](const easycache::host_buffer<S>& in, easycache::host_buffer<S>& v) {
                   for (std::size_t i = 0; i < in.size; ++i) {
                     const double xi = double(element(in, i));
                     const double drift = std::cos(0.01 * double(i) + 0.3 * timestep);
                     set_element(v, i, static_cast<S>(b == 0 ? 0.8 * xi + drift : -0.5 * xi + 0.25 * drift));
                   }
                 });
      for (std::size_t i = 0; i < size; ++i) run.outputs.push_back(element(out.view(), i));
    }
    for (std::size_t i = 0; i < size; ++i)
      set_element(x.view(), i,
                  static_cast<S>(element(x.view(), i) + S(0.2) * (element(out.view(), i) - element(x.view(), i))));
  }
  for (const easycache::step_record& r : cache.trace())
    run.measured.insert(run.measured.end(), {r.input_change, r.transformation_rate, r.output_norm,
                                             r.accumulated_error});
  for (std::size_t b = 0; b < cfg.branches; ++b) run.pattern += test::pattern(cache.trace(), b) + "/";
  return run;
}

// Equal bit for bit (NaN statistics of warm-up steps included).
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

std::vector<easycache::config> placed_configs() {
  easycache::config base;
  base.steps = 24;
  base.warmup_steps = 3;
  base.threshold = 0.3;
  base.branches = 2;
  easycache::config sampled = base;  // the strided statistics and their chunked passes
  sampled.sampling.stride = 3;
  sampled.input_change = easycache::input_change_reference::last_compute;
  easycache::config linear = base;  // the extrapolated skip
  linear.predictor = easycache::skip_predictor::linear_in_timestep;
  easycache::config last_output = base;  // the saved input and its sum
  last_output.predictor = easycache::skip_predictor::last_output;
  return {base, sampled, linear, last_output};
}

}  // namespace

TEMPLATE_TEST_CASE("host buffers at misaligned addresses give the aligned run's results bit for bit",
                   "[kernels][alignment]", float, double) {
  using S = TestType;
  for (const easycache::config& cfg : placed_configs())
    // 1031: a whole block, then tails of 7 (8 lanes) and 3 (4 lanes); 37: less than a block.
    for (std::size_t size : {std::size_t{1031}, std::size_t{37}}) {
      const placed_run<S> aligned = run_placed<S>(cfg, size, 0, 0);
      INFO("size " << size << ", pattern " << aligned.pattern << ", stride " << cfg.sampling.stride
                   << ", predictor " << static_cast<int>(cfg.predictor));
      // Skipped steps, or the skip passes would go untested.
      REQUIRE(aligned.pattern.find('S') != std::string::npos);
      for (std::size_t input_offset : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{5}}) {
        const std::size_t output_offset = 3 * input_offset % 8;  // 3, 6, 1, 7: misaligned as well
        const placed_run<S> misaligned = run_placed<S>(cfg, size, input_offset, output_offset);
        INFO("input at +" << input_offset << " bytes, output at +" << output_offset);
        CHECK(misaligned.pattern == aligned.pattern);
        CHECK(same_bits(misaligned.measured, aligned.measured));
        CHECK(same_bits(misaligned.outputs, aligned.outputs));
      }
    }
}
