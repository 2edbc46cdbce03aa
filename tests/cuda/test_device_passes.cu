// The CUDA backend's per-thread work, run on the host for every thread of the
// grid a kernel would launch, against the host kernels: the same sampled
// elements, the same sums, the same written buffers. Needs no GPU (it launches
// nothing); the kernels' block reduction and the launches themselves are
// checked only by the GPU tests (test_cuda.cu).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <easycache/backends/cuda.cuh>
#include <easycache/detail/host_kernels.hpp>

namespace device = easycache::detail::device;
namespace host = easycache::detail::host;

namespace {

// A kernel's grid for `work` items: the same shape as the launches in cuda.cuh.
struct grid {
  std::size_t threads;
  std::size_t blocks;
  grid(std::size_t work, unsigned most)
      : threads(device::block_threads), blocks(device::grid_blocks(work, most)) {}
  std::size_t total() const { return threads * blocks; }
};

// Σ over the grid of a per-thread float, as the kernel adds them (in double).
template <class PerThread>
double grid_sum(const grid& g, PerThread per_thread) {
  double sum = 0;
  for (std::size_t t = 0; t < g.total(); ++t) sum += double(per_thread(t, g.total()));
  return sum;
}

std::vector<float> values(std::size_t n, double phase) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = float(std::sin(0.37 * double(i) + phase) * 1.5 + 0.1 * phase);
  return v;
}

constexpr std::size_t huge_stride = std::numeric_limits<std::size_t>::max();
const easycache::statistics_sampling samplings[] = {{1, 0, 0}, {3, 0, 0},           {8, 0, 0},          {2, 6, 8},
                                                    {8, 16, 24}, {3, 7, 5},         {huge_stride, 0, 0},
                                                    {huge_stride, 6, 8}, {huge_stride - 1, 7, 5}};

}  // namespace

TEST_CASE("the sampling map visits exactly the host kernels' elements", "[cuda][host]") {
  for (const auto& s : samplings) {
    const std::size_t plane = s.height ? s.height * s.width : 1;
    for (const std::size_t n : {plane * 1, plane * 3, plane * 40 + (s.height ? 0 : 5)}) {
      INFO("stride " << s.stride << ", " << s.height << "x" << s.width << ", n " << n);
      std::vector<std::size_t> expected;
      host::for_each_chunk(n, s, [&](std::size_t begin, std::size_t end, std::size_t step) {
        if (step)
          for (std::size_t i = begin; i < end; i += step) expected.push_back(i);
      });
      const auto map = device::sampling_map::of(s);
      REQUIRE(map.count(n) == expected.size());
      REQUIRE(map.count(n) == easycache::sampled_count(n, s));
      std::vector<std::size_t> mapped;
      for (std::size_t j = 0; j < map.count(n); ++j) mapped.push_back(map.element(j));
      CHECK(mapped == expected);
      std::vector<std::size_t> visited;
      for (std::size_t i = 0; i < n; ++i)
        if (map.visits(i)) visited.push_back(i);
      CHECK(visited == expected);
    }
  }
}

TEST_CASE("per-thread reductions over the grid give the host kernels' sums", "[cuda][host]") {
  for (const auto& s : samplings) {
    const std::size_t plane = s.height ? s.height * s.width : 1;
    // Sizes below one block, of several blocks, and past the most blocks a reduction uses.
    for (const std::size_t planes : {std::size_t{1}, std::size_t{37}, std::size_t{3000}}) {
      const std::size_t n = plane * planes * (s.height ? 1 : 97);
      INFO("stride " << s.stride << ", " << s.height << "x" << s.width << ", n " << n);
      const std::vector<float> a = values(n, 0.0), b = values(n, 0.3);
      const auto map = device::sampling_map::of(s);
      const std::size_t count = map.count(n);
      const grid g(count, device::max_reduction_blocks);
      const double got = grid_sum(g, [&](std::size_t t, std::size_t threads) {
        return device::thread_abs_diff(a.data(), b.data(), map, count, t, threads);
      });
      CHECK(got == Approx(host::sum_abs_diff(a.data(), b.data(), n, s)).epsilon(1e-6));

      // Commit: the same three sums and the same buffers afterwards.
      const std::vector<float> x = values(n, 0.6), v = values(n, 1.1);
      std::vector<float> last_device = a, delta_device = b, last_host = a, delta_host = b;
      const grid c(n, device::max_reduction_blocks);
      double change = 0, moved = 0, norm = 0;
      for (std::size_t t = 0; t < c.total(); ++t) {
        const auto sums = device::thread_commit(x.data(), v.data(), last_device.data(), delta_device.data(), n, map,
                                                true, t, c.total());
        change += sums.output_change;
        moved += sums.input_change;
        norm += sums.output_norm;
      }
      const auto expected = host::commit(x.data(), v.data(), last_host.data(), delta_host.data(), n, true, s);
      CHECK(change == Approx(expected.output_change).epsilon(1e-6));
      CHECK(moved == Approx(expected.input_change).epsilon(1e-6));
      CHECK(norm == Approx(expected.output_norm).epsilon(1e-6));
      CHECK(last_device == last_host);
      CHECK(delta_device == delta_host);
    }
  }
}

TEST_CASE("a non-finite output where the statistics do not look makes the commit's norm NaN", "[cuda][host]") {
  const easycache::statistics_sampling s{2, 0, 0};
  const std::size_t n = 64;
  const auto map = device::sampling_map::of(s);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    const std::vector<float> x = values(n, 0.6);
    std::vector<float> v = values(n, 1.1), last = values(n, 0.0), delta = values(n, 0.3);
    v[3] = bad;  // an element the stride-2 statistics skip
    const grid c(n, device::max_reduction_blocks);
    double norm = 0;
    for (std::size_t t = 0; t < c.total(); ++t)
      norm += device::thread_commit(x.data(), v.data(), last.data(), delta.data(), n, map, true, t, c.total())
                  .output_norm;
    CHECK(std::isnan(norm));
    std::vector<float> last_host = values(n, 0.0), delta_host = values(n, 0.3);
    CHECK(std::isnan(host::commit(x.data(), v.data(), last_host.data(), delta_host.data(), n, true, s).output_norm));
  }
}

TEST_CASE("per-thread element passes write what the host kernels write", "[cuda][host]") {
  const std::size_t n = 5000;
  const std::vector<float> x = values(n, 0.2), delta = values(n, 0.9);
  std::vector<float> out(n), copy(n), out_host(n), copy_host(n), stored(n), stored_host(n);
  const grid g(n, device::max_elementwise_blocks);
  for (std::size_t t = 0; t < g.total(); ++t) {
    device::thread_apply(x.data(), delta.data(), out.data(), copy.data(), n, t, g.total());
    device::thread_store_delta(x.data(), delta.data(), stored.data(), n, t, g.total());
  }
  host::add(x.data(), delta.data(), out_host.data(), copy_host.data(), n);
  host::subtract(delta.data(), x.data(), stored_host.data(), n);
  CHECK(out == out_host);
  CHECK(copy == x);
  CHECK(stored == stored_host);
  // Without a copy target, only out is written.
  std::vector<float> out2(n);
  for (std::size_t t = 0; t < g.total(); ++t)
    device::thread_apply(x.data(), delta.data(), out2.data(), static_cast<float*>(nullptr), n, t, g.total());
  CHECK(out2 == out_host);
}

TEST_CASE("the extrapolating skip pass writes what the host kernel writes", "[cuda][host][predictor]") {
  const std::size_t n = 5000;
  const std::vector<float> x = values(n, 0.2), delta = values(n, 0.9), previous = values(n, 1.3);
  const grid g(n, device::max_elementwise_blocks);
  for (const double weight : {0.0, 0.25, 1.0, 3.5, -0.5}) {
    INFO("weight " << weight);
    std::vector<float> out(n), copy(n), out_host(n), copy_host(n), out_no_copy(n);
    for (std::size_t t = 0; t < g.total(); ++t) {
      device::thread_apply_extrapolated(x.data(), delta.data(), previous.data(), float(weight), out.data(),
                                        copy.data(), n, t, g.total());
      device::thread_apply_extrapolated(x.data(), delta.data(), previous.data(), float(weight), out_no_copy.data(),
                                        static_cast<float*>(nullptr), n, t, g.total());
    }
    host::add_extrapolated(x.data(), delta.data(), previous.data(), weight, out_host.data(), copy_host.data(), n);
    CHECK(out == out_host);
    CHECK(copy == x);
    CHECK(out_no_copy == out_host);
  }
  // Weight 0 is the constant predictor's pass.
  std::vector<float> extrapolated(n), constant(n);
  for (std::size_t t = 0; t < g.total(); ++t) {
    device::thread_apply_extrapolated(x.data(), delta.data(), previous.data(), 0.0f, extrapolated.data(),
                                      static_cast<float*>(nullptr), n, t, g.total());
    device::thread_apply(x.data(), delta.data(), constant.data(), static_cast<float*>(nullptr), n, t, g.total());
  }
  CHECK(extrapolated == constant);
}

TEST_CASE("float16 and bfloat16 extrapolation: float arithmetic, rounded once when stored", "[cuda][host][predictor]") {
  const std::size_t n = 4096;
  const std::vector<float> xf = values(n, 0.1), df = values(n, 0.7), pf = values(n, 1.9);
  std::vector<__half> xh(n), dh(n), ph(n), oh(n), ch(n);
  std::vector<__nv_bfloat16> xb(n), db(n), pb(n), ob(n), cb(n);
  for (std::size_t i = 0; i < n; ++i) {
    xh[i] = __float2half_rn(xf[i]);
    dh[i] = __float2half_rn(df[i]);
    ph[i] = __float2half_rn(pf[i]);
    xb[i] = __float2bfloat16_rn(xf[i]);
    db[i] = __float2bfloat16_rn(df[i]);
    pb[i] = __float2bfloat16_rn(pf[i]);
  }
  const float weight = 0.75f;
  const grid g(n, device::max_elementwise_blocks);
  for (std::size_t t = 0; t < g.total(); ++t) {
    device::thread_apply_extrapolated(xh.data(), dh.data(), ph.data(), weight, oh.data(), ch.data(), n, t, g.total());
    device::thread_apply_extrapolated(xb.data(), db.data(), pb.data(), weight, ob.data(), cb.data(), n, t, g.total());
  }
  // One rounding of the (float-exact to 2^-24) result: within half a unit in
  // the last place, 2^-11 (float16) or 2^-8 (bfloat16) of it; rounding after
  // each of the three operations would miss this bound on some elements.
  std::size_t beyond_half = 0, beyond_bf16 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto exact = [&](double x, double d, double p) { return x + (d + double(weight) * (d - p)); };
    const double eh = exact(__half2float(xh[i]), __half2float(dh[i]), __half2float(ph[i]));
    const double eb = exact(__bfloat162float(xb[i]), __bfloat162float(db[i]), __bfloat162float(pb[i]));
    if (std::abs(double(__half2float(oh[i])) - eh) > std::ldexp(std::abs(eh), -11) * (1 + 1e-6) + 1e-7) ++beyond_half;
    if (std::abs(double(__bfloat162float(ob[i])) - eb) > std::ldexp(std::abs(eb), -8) * (1 + 1e-6) + 1e-7) ++beyond_bf16;
    CHECK(__half2float(ch[i]) == __half2float(xh[i]));
    CHECK(__bfloat162float(cb[i]) == __bfloat162float(xb[i]));
  }
  CHECK(beyond_half == 0);
  CHECK(beyond_bf16 == 0);
}

TEST_CASE("float16 and bfloat16 elements: float arithmetic, rounded once when stored", "[cuda][host]") {
  const std::size_t n = 4096;
  const std::vector<float> xf = values(n, 0.1), vf = values(n, 0.7);
  std::vector<__half> xh(n), vh(n), lh(n), dh(n);
  std::vector<__nv_bfloat16> xb(n), vb(n), lb(n), db(n);
  for (std::size_t i = 0; i < n; ++i) {
    xh[i] = __float2half_rn(xf[i]);
    vh[i] = __float2half_rn(vf[i]);
    xb[i] = __float2bfloat16_rn(xf[i]);
    vb[i] = __float2bfloat16_rn(vf[i]);
  }
  const auto map = device::sampling_map::of({1, 0, 0});
  const grid g(n, device::max_reduction_blocks);
  const double exact = host::sum_abs_diff(xf.data(), vf.data(), n, {1, 0, 0});
  const double half_sum = grid_sum(g, [&](std::size_t t, std::size_t threads) {
    return device::thread_abs_diff(xh.data(), vh.data(), map, n, t, threads);
  });
  const double bf16_sum = grid_sum(g, [&](std::size_t t, std::size_t threads) {
    return device::thread_abs_diff(xb.data(), vb.data(), map, n, t, threads);
  });
  // Element rounding only: 2^-11 (float16) and 2^-8 (bfloat16) of each element.
  CHECK(half_sum == Approx(exact).epsilon(1e-3));
  CHECK(bf16_sum == Approx(exact).epsilon(8e-3));

  // delta = v − x, computed in float from the rounded elements and rounded once.
  for (std::size_t t = 0; t < g.total(); ++t) {
    device::thread_commit(xh.data(), vh.data(), lh.data(), dh.data(), n, map, false, t, g.total());
    device::thread_commit(xb.data(), vb.data(), lb.data(), db.data(), n, map, false, t, g.total());
  }
  for (std::size_t i = 0; i < n; i += 97) {
    CHECK(__half2float(dh[i]) == __half2float(__float2half_rn(__half2float(vh[i]) - __half2float(xh[i]))));
    CHECK(__bfloat162float(db[i]) ==
          __bfloat162float(__float2bfloat16_rn(__bfloat162float(vb[i]) - __bfloat162float(xb[i]))));
    CHECK(__half2float(lh[i]) == __half2float(xh[i]));
  }
}

TEST_CASE("launch shapes: at least one block, at most the reduction's partial slots", "[cuda][host]") {
  CHECK(device::grid_blocks(0, device::max_reduction_blocks) == 1);
  CHECK(device::grid_blocks(1, device::max_reduction_blocks) == 1);
  CHECK(device::grid_blocks(device::block_threads + 1, device::max_reduction_blocks) == 2);
  CHECK(device::grid_blocks(std::size_t{1} << 40, device::max_reduction_blocks) == device::max_reduction_blocks);
}
