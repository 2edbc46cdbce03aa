// 16-bit host tensors (host_buffer<float16>, host_buffer<bfloat16>) and the
// run-time dtype view (host_view): the conversions, the tiled passes against
// the float passes on the same values, and the refusals.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <random>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>
#include <easycache/detail/half_convert.hpp>
#include <easycache/view_traits.hpp>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "backend_comparison.hpp"

using easycache::bfloat16;
using easycache::float16;
using easycache::host_buffer;
using easycache::host_dtype;
using easycache::host_view;
using Catch::Matchers::Contains;

namespace {

float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A float16 holding its own cached vectors (host_tensor_traits' third argument).
struct own_precision_half {
  float16* data;
  std::size_t size;
};

}  // namespace

template <>
struct easycache::tensor_traits<own_precision_half>
    : easycache::host_tensor_traits<own_precision_half, easycache::float16, easycache::float16> {
  static float16* data(const own_precision_half& t) noexcept { return t.data; }
  static std::size_t size(const own_precision_half& t) noexcept { return t.size; }
};

// [host-view-route]
namespace ggml_like {
enum type { f32 = 0, f16 = 1, q8_0 = 8 };
struct tensor { int type; int64_t ne[4]; size_t nb[4]; void* data; };  // ggml's shape
}

template <>
struct easycache::tensor_traits<ggml_like::tensor>
    : easycache::view_traits<ggml_like::tensor, easycache::host_view> {
  static easycache::host_view view(const ggml_like::tensor& t) {
    if (t.type != ggml_like::f32 && t.type != ggml_like::f16)
      throw easycache::error("only f32 and f16 tensors are cached, not type " + std::to_string(t.type));
    const auto n = static_cast<std::size_t>(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
    return {t.data, n, t.type == ggml_like::f16 ? easycache::host_dtype::float16 : easycache::host_dtype::float32};
  }
};
// [host-view-route]

namespace {

// The script's values as Element (rounded once, from float), in memory the backend keeps.
template <class Element, class Tensor = host_buffer<Element>>
struct sixteen_bit_backend {
  using tensor = Tensor;
  std::deque<std::vector<Element>> memory;

  tensor make(const std::vector<double>& v) {
    memory.emplace_back(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) memory.back()[i] = Element(static_cast<float>(v[i]));
    return {memory.back().data(), v.size()};
  }
  std::vector<double> values(const tensor& t) const {
    std::vector<double> v(t.size);
    for (std::size_t i = 0; i < t.size; ++i) v[i] = static_cast<double>(static_cast<float>(t.data[i]));
    return v;
  }
  void write(const std::vector<double>& v, tensor& out) const {
    for (std::size_t i = 0; i < v.size(); ++i) out.data[i] = Element(static_cast<float>(v[i]));
  }
};

// float tensors holding exactly the values the 16-bit run decodes: each value
// rounded to Element and back, outputs read through the same rounding.
template <class Element>
struct rounded_float_backend {
  using tensor = host_buffer<float>;
  std::deque<std::vector<float>> memory;

  static float rounded(double v) { return static_cast<float>(Element(static_cast<float>(v))); }
  tensor make(const std::vector<double>& v) {
    memory.emplace_back(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) memory.back()[i] = rounded(v[i]);
    return {memory.back().data(), v.size()};
  }
  std::vector<double> values(const tensor& t) const {
    std::vector<double> v(t.size);
    for (std::size_t i = 0; i < t.size; ++i) v[i] = static_cast<double>(rounded(static_cast<double>(t.data[i])));
    return v;
  }
  void write(const std::vector<double>& v, tensor& out) const {
    for (std::size_t i = 0; i < v.size(); ++i) out.data[i] = rounded(v[i]);
  }
};

// host_view over the memory of a 16-bit or float backend, its dtype from Element.
template <class Element>
struct view_backend {
  using tensor = host_view;
  sixteen_bit_backend<Element> elements;

  tensor make(const std::vector<double>& v) {
    const auto b = elements.make(v);
    return host_view(b.data, b.size);
  }
  std::vector<double> values(const tensor& t) const {
    return elements.values(host_buffer<Element>{static_cast<Element*>(t.data), t.size});
  }
  void write(const std::vector<double>& v, tensor& out) const {
    host_buffer<Element> b{static_cast<Element*>(out.data), out.size};
    elements.write(v, b);
  }
};

template <class Tensor, class Backend>
script::result run(const easycache::config& cfg, std::size_t size = script::size) {
  Backend backend;
  return script::run<Tensor>(backend, cfg, size);
}

// The configurations of every backend's comparison, and the peers' presets (scoped statistics).
std::vector<easycache::config> all_configurations() {
  std::vector<easycache::config> all = script::configurations(0.3);
  for (easycache::config cfg : {easycache::config::comfyui(20, 2), easycache::config::stable_diffusion_cpp(20, 2)}) {
    cfg.threshold = 0.3;
    all.push_back(cfg);
  }
  return all;
}

// Bit-for-bit equality of two runs: decisions, every statistic, realized errors, outputs.
void require_identical(const script::result& got, const script::result& want, std::size_t branches) {
  script::compare(got, want, branches, 0.0);
  for (std::size_t i = 0; i < want.trace.size(); ++i) {
    const double a = got.trace[i].realized_error, b = want.trace[i].realized_error;
    INFO("evaluation " << i);
    CHECK((a == b || (std::isnan(a) && std::isnan(b))));
  }
}

}  // namespace

TEST_CASE("float16 conversion: exact both ways, round to nearest even, F16C and portable alike", "[half]") {
  namespace hb = easycache::detail::half_bits;
  // Every binary16 value converts to float and back to itself (NaN to a NaN).
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = hb::from_binary16(static_cast<std::uint16_t>(h));
    const bool nan = (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0;
    CHECK(std::isnan(f) == nan);
    if (!nan) CHECK(hb::to_binary16(f) == h);
  }
  CHECK(static_cast<float>(float16(65504.0f)) == 65504.0f);
  CHECK(std::isinf(static_cast<float>(float16(65520.0f))));               // halfway to 2^16: rounds up to Inf
  CHECK(static_cast<float>(float16(65519.0f)) == 65504.0f);
  CHECK(static_cast<float>(float16(std::ldexp(1.0f, -24))) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(float16(std::ldexp(1.0f, -25)).bits == 0);                        // the tie to 0 (even)
  CHECK(float16(std::ldexp(1.5f, -25)).bits == 1);
  CHECK(float16(1.0f + std::ldexp(1.0f, -11)).bits == float16(1.0f).bits);  // tie: to even
  CHECK(float16(1.0f + 3 * std::ldexp(1.0f, -11)).bits == float16(1.0f).bits + 2);
  CHECK(float16(-0.0f).bits == 0x8000u);
#if defined(__SSE2__)
  // The same with denormals flushed (a caller built with -ffast-math): no
  // intermediate is a float subnormal, so every binary16 still round-trips.
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040u);  // FTZ | DAZ
  std::size_t wrong = 0;
  for (std::uint32_t h = 0; h < 0x7c00u; ++h)
    wrong += hb::to_binary16(hb::from_binary16(static_cast<std::uint16_t>(h))) != h;
  const float smallest = hb::from_binary16(1);
  _mm_setcsr(saved);
  CHECK(wrong == 0);
  CHECK(smallest == std::ldexp(1.0f, -24));
#endif

  // Random floats: the nearest binary16 (ties to even), the same bits from the block conversions.
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> bits;
  std::vector<float> floats(4099);
  for (float& f : floats) {
    // Exponents around binary16's range, where rounding, subnormals and overflow happen.
    const std::uint32_t u = bits(rng);
    f = float_of((u & 0x807fffffu) | ((100u + (u >> 23) % 50u) << 23));
  }
  floats[0] = std::numeric_limits<float>::quiet_NaN();
  floats[1] = std::numeric_limits<float>::infinity();
  std::vector<float16> portable(floats.size()), fast(floats.size());
  for (std::size_t i = 0; i < floats.size(); ++i) {
    const float f = floats[i];
    portable[i] = float16(f);
    if (std::isnan(f) || std::isinf(f)) continue;
    const double got = static_cast<float>(portable[i]);
    if (std::isinf(got)) {
      CHECK(std::abs(f) >= 65520.0f);
      continue;
    }
    // No other binary16 is nearer, and a tie went to the even one.
    const std::uint16_t h = portable[i].bits;
    for (const std::uint16_t neighbour : {static_cast<std::uint16_t>(h + 1), static_cast<std::uint16_t>(h - 1)}) {
      const float other = static_cast<float>(float16::from_bits(neighbour));
      if (std::isnan(other) || ((neighbour ^ h) & 0x8000u)) continue;
      const double mine = std::abs(got - f), theirs = std::abs(static_cast<double>(other) - f);
      CHECK((mine < theirs || (mine == theirs && (h & 1u) == 0)));
    }
  }
  // Every binary16 decodes to the same float bits on both paths (F16C where
  // this CPU has it), NaNs quieted alike.
  const bool f16c = easycache::detail::half_convert::uses_f16c();
  std::vector<float16> every(0x10000);
  for (std::uint32_t h = 0; h < 0x10000u; ++h) every[h] = float16::from_bits(static_cast<std::uint16_t>(h));
  std::vector<float> every_fast(every.size()), every_portable(every.size());
  easycache::detail::half_convert::decode(every.data(), every_fast.data(), every.size(), f16c);
  easycache::detail::half_convert::decode(every.data(), every_portable.data(), every.size(), false);
  CHECK(std::memcmp(every_fast.data(), every_portable.data(), every.size() * sizeof(float)) == 0);
  easycache::detail::half_convert::encode(floats.data(), fast.data(), floats.size(), f16c);
  std::vector<float> decoded(floats.size()), decoded_portable(floats.size());
  easycache::detail::half_convert::decode(fast.data(), decoded.data(), fast.size(), f16c);
  easycache::detail::half_convert::decode(fast.data(), decoded_portable.data(), fast.size(), false);
  INFO("F16C used: " << easycache::detail::half_convert::uses_f16c());
  for (std::size_t i = 0; i < floats.size(); ++i) {
    if (std::isnan(floats[i])) {
      CHECK(std::isnan(decoded[i]));
      continue;
    }
    CHECK(fast[i].bits == portable[i].bits);
    CHECK(std::memcmp(&decoded[i], &decoded_portable[i], 4) == 0);
  }
}

TEST_CASE("bfloat16 conversion: the top half of a float, rounded to nearest even", "[half]") {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const float f = static_cast<float>(bfloat16::from_bits(static_cast<std::uint16_t>(b)));
    if (!std::isnan(f)) CHECK(bfloat16(f).bits == b);
  }
  CHECK(bfloat16(float_of(0x3f808000u)).bits == 0x3f80u);  // tie: to even
  CHECK(bfloat16(float_of(0x3f818000u)).bits == 0x3f82u);  // tie: to even (up)
  CHECK(bfloat16(float_of(0x3f808001u)).bits == 0x3f81u);
  CHECK(std::isinf(static_cast<float>(bfloat16(float_of(0x7f7fffffu)))));  // FLT_MAX rounds up
  CHECK(std::isnan(static_cast<float>(bfloat16(float_of(0x7f800001u)))));   // a NaN whose payload is in the low bits
  std::vector<float> floats = {1.0f, -2.5f, float_of(0x7fc00000u), float_of(0x3f808000u), 1e-40f, -0.0f};
  std::vector<bfloat16> encoded(floats.size());
  easycache::detail::half_convert::encode(floats.data(), encoded.data(), floats.size(), false);
  for (std::size_t i = 0; i < floats.size(); ++i) CHECK(encoded[i].bits == bfloat16(floats[i]).bits);
}

TEST_CASE("16-bit host buffers run the float passes on the converted values: the float run bit for bit",
          "[half][host_buffer]") {
  for (const easycache::config& cfg : all_configurations()) {
    INFO(script::describe(cfg));
    const auto want16 = run<host_buffer<float>, rounded_float_backend<float16>>(cfg);
    const auto wantbf = run<host_buffer<float>, rounded_float_backend<bfloat16>>(cfg);
    REQUIRE(want16.stats.skips > 0);
    REQUIRE(wantbf.stats.skips > 0);
    require_identical(run<host_buffer<float16>, sixteen_bit_backend<float16>>(cfg), want16, cfg.branches);
    require_identical(run<host_buffer<bfloat16>, sixteen_bit_backend<bfloat16>>(cfg), wantbf, cfg.branches);
    // The run-time dtype view: the same passes, the same bits, for each dtype.
    require_identical(run<host_view, view_backend<float16>>(cfg), want16, cfg.branches);
    require_identical(run<host_view, view_backend<bfloat16>>(cfg), wantbf, cfg.branches);
    require_identical(run<host_view, view_backend<float>>(cfg), script::run_eigen<float>(cfg, script::size),
                      cfg.branches);
  }
}

TEST_CASE("16-bit host buffers across several tiles: the float run bit for bit", "[half][host_buffer]") {
  // 1488 and 5040 elements (31 and 105 planes of 6x8): tiles of the float
  // passes' block, the last one partial, their sums added in the float pass's order.
  for (const std::size_t n : {std::size_t{1488}, std::size_t{5040}})
    for (const easycache::config& cfg : all_configurations()) {
      INFO(script::describe(cfg) << ", " << n << " elements");
      const auto want = run<host_buffer<float>, rounded_float_backend<float16>>(cfg, n);
      REQUIRE(want.stats.skips > 0);
      require_identical(run<host_buffer<float16>, sixteen_bit_backend<float16>>(cfg, n), want, cfg.branches);
    }
}

TEST_CASE("16-bit tensors take Eigen's decisions where no decision is near a tie, cached in float or in 16 bits",
          "[half][host_buffer]") {
  const std::vector<easycache::config> configurations = all_configurations();
  const std::size_t peers = 2;  // the last two: scoped statistics, where no realized error is measured
  for (std::size_t c = 0; c < configurations.size(); ++c) {
    const easycache::config cfg = script::far_from_ties(configurations[c]);
    INFO(script::describe(cfg));
    const script::result reference = script::run_eigen<double>(cfg, script::size);
    REQUIRE(script::margin(reference, cfg.threshold) > 0.05);
    const auto half = run<host_buffer<float16>, sixteen_bit_backend<float16>>(cfg);
    script::compare(half, reference, cfg.branches, 2e-2);
    script::compare(run<host_buffer<bfloat16>, sixteen_bit_backend<bfloat16>>(cfg), reference, cfg.branches, 5e-2);
    script::compare(run<own_precision_half, sixteen_bit_backend<float16, own_precision_half>>(cfg), reference,
                    cfg.branches, 2e-2);
    // The fused passes measure the realized error on 16-bit tensors too.
    std::size_t measured = 0;
    for (const auto& r : half.trace) measured += std::isfinite(r.realized_error);
    if (c + peers < configurations.size()) CHECK(measured > 0);
  }
}

TEST_CASE("float16 elements at an odd byte address give the aligned run's results", "[half][host_buffer]") {
  const easycache::config cfg = script::configurations(0.3).front();
  struct odd_backend : sixteen_bit_backend<float16> {
    std::deque<std::vector<unsigned char>> bytes;
    host_buffer<float16> make(const std::vector<double>& v) {
      bytes.emplace_back(2 * v.size() + 1);
      auto* data = reinterpret_cast<float16*>(bytes.back().data() + 1);
      for (std::size_t i = 0; i < v.size(); ++i) {
        const float16 h(static_cast<float>(v[i]));
        std::memcpy(bytes.back().data() + 1 + 2 * i, &h, 2);
      }
      return {data, v.size()};
    }
    std::vector<double> values(const host_buffer<float16>& t) const {
      std::vector<double> v(t.size);
      for (std::size_t i = 0; i < t.size; ++i) {
        float16 h;
        std::memcpy(&h, reinterpret_cast<const unsigned char*>(t.data) + 2 * i, 2);
        v[i] = static_cast<float>(h);
      }
      return v;
    }
    void write(const std::vector<double>& v, host_buffer<float16>& out) const {
      for (std::size_t i = 0; i < v.size(); ++i) {
        const float16 h(static_cast<float>(v[i]));
        std::memcpy(reinterpret_cast<unsigned char*>(out.data) + 2 * i, &h, 2);
      }
    }
  };
  require_identical(run<host_buffer<float16>, odd_backend>(cfg, 1027),
                    run<host_buffer<float16>, sixteen_bit_backend<float16>>(cfg, 1027), cfg.branches);
}

namespace {

// ggml_like tensors of Element over the memory of a 16-bit or float backend.
template <class Element>
struct ggml_like_backend {
  using tensor = ggml_like::tensor;
  sixteen_bit_backend<Element> elements;

  tensor make(const std::vector<double>& v) {
    const auto b = elements.make(v);
    const int type = std::is_same_v<Element, float16> ? ggml_like::f16 : ggml_like::f32;
    tensor t{type, {static_cast<int64_t>(b.size), 1, 1, 1}, {sizeof(Element), 0, 0, 0}, b.data};
    return t;
  }
  static std::size_t count(const tensor& t) { return static_cast<std::size_t>(t.ne[0]); }
  std::vector<double> values(const tensor& t) const {
    return elements.values(host_buffer<Element>{static_cast<Element*>(t.data), count(t)});
  }
  void write(const std::vector<double>& v, tensor& out) const {
    host_buffer<Element> b{static_cast<Element*>(out.data), count(out)};
    elements.write(v, b);
  }
};

}  // namespace

TEST_CASE("a ggml-like tensor of f32 or f16 through view_traits<T, host_view>: host_buffer's results",
          "[half][host_view]") {
  for (const easycache::config& cfg : all_configurations()) {
    INFO(script::describe(cfg));
    require_identical(run<ggml_like::tensor, ggml_like_backend<float16>>(cfg),
                      run<host_buffer<float16>, sixteen_bit_backend<float16>>(cfg), cfg.branches);
    require_identical(run<ggml_like::tensor, ggml_like_backend<float>>(cfg),
                      run<host_buffer<float>, sixteen_bit_backend<float>>(cfg), cfg.branches);
  }
  // A type the view cannot read: refused before anything happens, naming it.
  std::vector<unsigned char> bytes(64);
  ggml_like::tensor q{ggml_like::q8_0, {32, 1, 1, 1}, {1, 0, 0, 0}, bytes.data()};
  ggml_like::tensor out = q;
  easycache::controller<ggml_like::tensor> cache(easycache::config::wan21(10));
  CHECK_THROWS_WITH(cache.step(q, out, easycache::step_info{0, 1.0}, [](const ggml_like::tensor&, ggml_like::tensor&) {}),
                    Contains("not type 8"));
}

namespace {

easycache::config four_steps() {
  easycache::config cfg;
  cfg.steps = 4;
  cfg.warmup_steps = 1;
  cfg.threshold = 10;
  return cfg;
}

// v = x + 1, read as x's dtype and written as out's.
void shift(const host_view& x, host_view& out) {
  easycache::detail::with_elements(x, [&](auto* in) {
    easycache::detail::with_elements(out, [&](auto* o) {
      for (std::size_t i = 0; i < x.size; ++i)
        easycache::detail::half_convert::put(o, i, easycache::detail::half_convert::value(in, i) + 1.0f);
    });
  });
}

}  // namespace

TEST_CASE("host_view: the dtype is fixed by a generation's first step, and a change is refused", "[half][host_view]") {
  std::vector<float> x32(16, 0.5f), out32(16);
  std::vector<float16> x16(16, float16(0.5f)), out16(16);
  easycache::controller<host_view> cache(four_steps());
  host_view x(x32.data(), x32.size()), out(out32.data(), out32.size());
  cache.step(x, out, easycache::step_info{0, 1.0}, shift);
  CHECK(out32[3] == 1.5f);

  // Step 1 in float16: refused, naming both dtypes; nothing changed.
  host_view x_half(x16.data(), x16.size()), out_half(out16.data(), out16.size());
  CHECK_THROWS_WITH(cache.step(x_half, out_half, easycache::step_info{1, 0.75}, shift),
                    Contains("dtype float16") && Contains("started with float32"));
  // An output of another dtype than the input: refused before anything is written.
  CHECK_THROWS_AS(cache.step(x, out_half, easycache::step_info{1, 0.75}, shift), easycache::error);
  // The generation goes on in float32 ...
  cache.step(x, out, easycache::step_info{1, 0.75}, shift);
  CHECK(cache.stats().evaluations == 2);
  // ... and the next one may start in float16.
  cache.step(x_half, out_half, easycache::step_info{0, 1.0}, shift);
  CHECK(static_cast<float>(out16[0]) == 1.5f);

  // An unknown dtype and a null pointer with elements.
  host_view unknown(x32.data(), x32.size(), static_cast<host_dtype>(7));
  CHECK_THROWS_WITH(cache.step(unknown, out, easycache::step_info{0, 1.0}, shift), Contains("unknown dtype (7)"));
  host_view null(static_cast<float*>(nullptr), 4);
  CHECK_THROWS_WITH(cache.step(null, out, easycache::step_info{0, 1.0}, shift), Contains("null data pointer"));
}

TEST_CASE("a skipped step on 16-bit tensors writes x + Δ rounded once", "[half][host_buffer]") {
  // Δ in float: the output of a skip is the rounding of the float x + Δ, not
  // of x + rounded(Δ) (which the own-precision cache gives).
  std::vector<float16> x(8), out(8);
  easycache::config cfg = four_steps();
  cfg.warmup_steps = 2;
  easycache::controller<host_buffer<float16>> cache(cfg);
  auto denoise = [](const host_buffer<float16>& in, host_buffer<float16>& v) {
    for (std::size_t i = 0; i < in.size; ++i) v.data[i] = float16(static_cast<float>(in.data[i]) * 3.0f + 0.001f);
  };
  std::vector<float> deltas(8);
  for (std::size_t t = 0; t < 3; ++t) {
    for (std::size_t i = 0; i < 8; ++i) x[i] = float16(1.0f + 0.1f * float(i) + 0.01f * float(t));
    host_buffer<float16> xb{x.data(), 8}, ob{out.data(), 8};
    cache.step(xb, ob, easycache::step_info{t, 1.0 - 0.25 * double(t)}, denoise);
    if (t == 1)
      for (std::size_t i = 0; i < 8; ++i) deltas[i] = static_cast<float>(out[i]) - static_cast<float>(x[i]);
  }
  REQUIRE(cache.trace().back().action == easycache::action::skip);
  for (std::size_t i = 0; i < 8; ++i) CHECK(out[i].bits == float16(static_cast<float>(x[i]) + deltas[i]).bits);
}

namespace {

// Memory of all three dtypes for one tensor of n elements, filled with the same values.
struct any_dtype_tensor {
  std::vector<float> f32;
  std::vector<float16> f16;
  std::vector<bfloat16> bf16;

  explicit any_dtype_tensor(std::size_t n) : f32(n), f16(n), bf16(n) {}
  host_view as(host_dtype t) {
    switch (t) {
      case host_dtype::float16: return host_view(f16.data(), f16.size());
      case host_dtype::bfloat16: return host_view(bf16.data(), bf16.size());
      case host_dtype::float32: break;
    }
    return host_view(f32.data(), f32.size());
  }
  void fill(std::size_t t, std::size_t steps) {
    for (std::size_t i = 0; i < f32.size(); ++i) {
      const float v = static_cast<float>(script::input(t, i, steps));
      f32[i] = v;
      f16[i] = float16(v);
      bf16[i] = bfloat16(v);
    }
  }
};

void denoise_view(const host_view& x, host_view& out) {
  easycache::detail::with_elements(x, [&](auto* in) {
    easycache::detail::with_elements(out, [&](auto* o) {
      for (std::size_t i = 0; i < x.size; ++i)
        easycache::detail::half_convert::put(
            o, i, static_cast<float>(script::denoise(double(easycache::detail::half_convert::value(in, i)), 0)));
    });
  });
}

}  // namespace

TEST_CASE("host_view under random dtype changes: each refused, the run otherwise the undisturbed run's",
          "[half][host_view]") {
  // Six generations, each of a random dtype; at random steps the caller first
  // passes an input of another dtype (refused, the controller unchanged) or,
  // in the second controller, an output of another dtype (refused: that step
  // fails, as a failing denoiser would, and the loop goes on).
  const std::size_t steps = 12, n = 700;
  easycache::config cfg = script::configurations(0.3).front();
  cfg.steps = steps;
  cfg.branches = 1;
  const host_dtype dtypes[] = {host_dtype::float32, host_dtype::float16, host_dtype::bfloat16};
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> pick(0, 2), percent(0, 99);
  easycache::controller<host_view> disturbed(cfg), undisturbed(cfg), failing(cfg);
  any_dtype_tensor x(n), out(n), out_reference(n), out_failing(n);
  std::size_t input_refusals = 0, output_refusals = 0, computed_after_failure = 0;
  bool previous_failed = false;
  for (int generation = 0; generation < 6; ++generation) {
    const host_dtype dtype = dtypes[pick(rng)];
    INFO("generation " << generation << ", " << easycache::to_string(dtype));
    for (std::size_t t = 0; t < steps; ++t) {
      x.fill(t, steps);
      const easycache::step_info info{t, 1.0 - double(t) / double(steps)};
      host_view xv = x.as(dtype), ov = out.as(dtype), rv = out_reference.as(dtype), fv = out_failing.as(dtype);
      const host_dtype other = dtypes[(static_cast<int>(dtype) + 1 + pick(rng) % 2) % 3];
      if (t > 0 && percent(rng) < 20) {
        host_view wrong = x.as(other), wrong_out = out.as(other);
        CHECK_THROWS_WITH(disturbed.step(wrong, wrong_out, info, denoise_view), Contains("changed within a generation"));
        ++input_refusals;
      }
      disturbed.step(xv, ov, info, denoise_view);
      undisturbed.step(xv, rv, info, denoise_view);
      if (t > 0 && percent(rng) < 15) {
        host_view wrong_out = out_failing.as(other);
        CHECK_THROWS_AS(failing.step(xv, wrong_out, info, denoise_view), easycache::error);
        previous_failed = true;
        ++output_refusals;
      } else {
        failing.step(xv, fv, info, denoise_view);
        // The step after a failed one is computed, nothing older reused.
        if (previous_failed && t > 0) {
          CHECK(failing.trace().back().action == easycache::action::compute);
          ++computed_after_failure;
        }
        previous_failed = false;
        bool finite = true;
        easycache::detail::with_elements(fv, [&](auto* o) {
          for (std::size_t i = 0; i < n; ++i) finite = finite && std::isfinite(easycache::detail::half_convert::value(o, i));
        });
        CHECK(finite);
      }
      // The refused inputs changed nothing: the same outputs, bit for bit.
      REQUIRE(std::memcmp(ov.data, rv.data, n * easycache::element_size(dtype)) == 0);
    }
    previous_failed = false;  // a new generation starts afresh
  }
  CHECK(input_refusals > 5);
  CHECK(output_refusals > 5);
  CHECK(computed_after_failure > 0);
  CHECK(disturbed.stats().skips == undisturbed.stats().skips);
  CHECK(disturbed.stats().skips > 0);
  CHECK(failing.stats().skips > 0);
}
