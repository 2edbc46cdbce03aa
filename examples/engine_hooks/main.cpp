// An engine's own tensor struct and model callback, cached with
// easycache::keyed_hooks, the way stable-diffusion.cpp wires its cache: a hook
// before each condition's model call (keyed by the condition's address; the
// first one of a generation is the anchor) and one after it.
//
// The engine here: a ggml-like tensor struct whose element type (f32 or f16)
// is a run-time field, a flow-matching Euler sampler with classifier-free
// guidance that calls a C-style callback
//   bool denoise(const tensor* x, tensor* out, int step, float sigma, const void* condition)
// once per condition and step, and an exact Gaussian-mixture model as its
// network. Four generations run back to back through one adapter (two in f32,
// two in f16), each checked against the same generation without the cache.
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>
#include <easycache/view_traits.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../common/mixture_model.hpp"

// ---------------------------------------------------------------- the engine
namespace engine {

enum element_type { f32 = 0, f16 = 1 };

/// ggml's shape of a tensor: element type, extents (ne[0] innermost), byte strides, data.
struct tensor {
  int type;
  std::int64_t ne[4];
  std::size_t nb[4];
  void* data;
};

inline std::size_t element_count(const tensor& t) {
  return static_cast<std::size_t>(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
}
inline bool is_contiguous(const tensor& t) {
  return t.nb[1] == t.nb[0] * std::size_t(t.ne[0]) && t.nb[2] == t.nb[1] * std::size_t(t.ne[1]) &&
         t.nb[3] == t.nb[2] * std::size_t(t.ne[2]);
}

// Element access, in float (ggml_fp16_to_fp32 in ggml; easycache's float16 here for brevity).
inline float get(const tensor& t, std::size_t i) {
  return t.type == f16 ? static_cast<float>(static_cast<const easycache::float16*>(t.data)[i])
                       : static_cast<const float*>(t.data)[i];
}
inline void set(tensor& t, std::size_t i, float v) {
  if (t.type == f16) {
    static_cast<easycache::float16*>(t.data)[i] = easycache::float16(v);
  } else {
    static_cast<float*>(t.data)[i] = v;
  }
}

/// A contiguous tensor of `type` over `memory` (resized to fit).
inline tensor new_tensor(std::vector<unsigned char>& memory, int type, std::int64_t width, std::int64_t height,
                         std::int64_t channels) {
  tensor t{type, {width, height, channels, 1}, {}, nullptr};
  t.nb[0] = type == f16 ? 2 : 4;
  for (int d = 1; d < 4; ++d) t.nb[d] = t.nb[d - 1] * static_cast<std::size_t>(t.ne[d - 1]);
  memory.resize(t.nb[3]);
  t.data = memory.data();
  return t;
}

/// The engine's callback: false is a failed model call.
using denoise_callback = std::function<bool(const tensor* x, tensor* out, int step, float sigma, const void* condition)>;

/// Euler steps of a flow-matching schedule with classifier-free guidance:
/// `denoise` is called for `cond`, then for `uncond`, at each step.
inline bool sample(tensor* x, const std::vector<float>& sigmas, float guidance, const void* cond, const void* uncond,
                   const denoise_callback& denoise) {
  const std::size_t n = element_count(*x);
  std::vector<unsigned char> memory_cond, memory_uncond;
  tensor out_cond = new_tensor(memory_cond, x->type, x->ne[0], x->ne[1], x->ne[2]);
  tensor out_uncond = new_tensor(memory_uncond, x->type, x->ne[0], x->ne[1], x->ne[2]);
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const int step = static_cast<int>(i);
    if (!denoise(x, &out_cond, step, sigmas[i], cond) || !denoise(x, &out_uncond, step, sigmas[i], uncond))
      return false;
    const float h = sigmas[i + 1] - sigmas[i];
    for (std::size_t e = 0; e < n; ++e) {
      const float u = get(out_uncond, e);
      set(*x, e, get(*x, e) + h * (u + guidance * (get(out_cond, e) - u)));
    }
  }
  return true;
}

}  // namespace engine

// ------------------------------------------- what the engine's user writes
// The tensor type, f32 or f16 decided at run time: viewed as a host_view
// (pointer, element count, dtype); easycache refuses a generation whose
// dtype changes mid-way, and view() refuses what it cannot read.
// [engine-traits]
template <>
struct easycache::tensor_traits<engine::tensor>
    : easycache::view_traits<engine::tensor, easycache::host_view> {
  static easycache::host_view view(const engine::tensor& t) {
    if (t.type != engine::f32 && t.type != engine::f16)
      throw easycache::error("engine tensor: only f32 and f16 tensors are cached, not type " + std::to_string(t.type));
    if (!engine::is_contiguous(t)) throw easycache::error("engine tensor: not contiguous");
    return {t.data, engine::element_count(t),
            t.type == engine::f16 ? easycache::host_dtype::float16 : easycache::host_dtype::float32};
  }
};
// [engine-traits]
// ----------------------------------------------------------- (end of it)

namespace {

struct condition {
  int class_id;  // -1: unconditional
};

double psnr(const engine::tensor& a, const engine::tensor& b, double& max_error) {
  double squared = 0;
  max_error = 0;
  const std::size_t n = engine::element_count(a);
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(engine::get(a, i)) - static_cast<double>(engine::get(b, i));
    squared += d * d;
    max_error = std::fmax(max_error, std::fabs(d));
  }
  const double mse = squared / static_cast<double>(n);
  return mse == 0 ? INFINITY : 10 * std::log10(4.0 / mse);  // data in about [-1, 1]
}

}  // namespace

int main() {
  const int steps = 30;
  const float guidance = 5.0f;
  const std::int64_t width = 32, height = 32, channels = 4;
  example::mixture_model mixture(static_cast<std::size_t>(channels), static_cast<std::size_t>(height),
                                 static_cast<std::size_t>(width), 6);
  std::vector<float> sigmas;
  for (double s : example::shifted_sigmas(steps, 5.0)) sigmas.push_back(static_cast<float>(s));

  // The engine's network behind its callback (copies in and out of Eigen: the model's business).
  Eigen::VectorXf model_in(static_cast<Eigen::Index>(mixture.size())), model_out(model_in.size());
  std::size_t model_calls = 0;
  auto model = [&](const engine::tensor* x, engine::tensor* out, int, float sigma, const void* c) {
    for (Eigen::Index i = 0; i < model_in.size(); ++i) model_in(i) = engine::get(*x, std::size_t(i));
    mixture.velocity(model_in, sigma, static_cast<const condition*>(c)->class_id, model_out);
    for (Eigen::Index i = 0; i < model_out.size(); ++i) engine::set(*out, std::size_t(i), model_out(i));
    ++model_calls;
    return true;
  };

  // ---------------------------------------- the user's wiring of the cache
  // [engine-hooks]
  easycache::hooks_options options;
  options.never_throw = true;  // a production loop: a misuse is reported and computed
  easycache::keyed_hooks<engine::tensor> hooks(easycache::config::wan21(steps), options);
  auto cached = [&](const engine::tensor* x, engine::tensor* out, int step, float sigma, const void* c) {
    if (hooks.before(c, *x, *out, easycache::step_info{step, sigma}.of(steps))) return true;  // from the cache
    if (!model(x, out, step, sigma, c)) return false;
    hooks.after(c, *x, *out);
    return true;
  };
  // [engine-hooks]
  // ------------------------------------------------------------ (end of it)

  std::printf("easycache engine_hooks: a ggml-like f32/f16 tensor, a denoise(x, out, step, sigma, condition) callback\n");
  std::printf("sampler: flow matching, %d Euler steps, guidance %.1f (cond, uncond); EasyCache: config::wan21(%d)\n",
              steps, static_cast<double>(guidance), steps);
  bool ok = true;
  struct run {
    int type, class_id;
    unsigned seed;
  };
  const run runs[] = {{engine::f32, 2, 1}, {engine::f32, 4, 2}, {engine::f16, 2, 1}, {engine::f16, 4, 2}};
  int generation = 0;
  for (const run& r : runs) {
    ++generation;
    condition cond{r.class_id}, uncond{-1};
    std::vector<unsigned char> reference_memory, latent_memory;
    engine::tensor x_reference = engine::new_tensor(reference_memory, r.type, width, height, channels);
    engine::tensor x = engine::new_tensor(latent_memory, r.type, width, height, channels);
    std::mt19937 rng(r.seed);
    std::normal_distribution<float> normal;
    for (std::size_t i = 0; i < mixture.size(); ++i) {
      const float noise = normal(rng);
      engine::set(x_reference, i, noise);
      engine::set(x, i, noise);
    }
    model_calls = 0;
    ok = engine::sample(&x_reference, sigmas, guidance, &cond, &uncond, model) && ok;
    const std::size_t uncached_calls = model_calls;
    model_calls = 0;
    ok = engine::sample(&x, sigmas, guidance, &cond, &uncond, cached) && ok;

    std::string pattern;
    for (const easycache::step_record& record : hooks.cache().trace())
      if (record.branch == 0) pattern += record.action == easycache::action::skip ? '.' : 'C';
    const easycache::statistics& s = hooks.cache().stats();
    double max_error = 0;
    const double quality = psnr(x, x_reference, max_error);
    std::printf("[%d/4] %s, class %d, seed %u: model calls %zu -> %zu (%zu served from the cache, %.2fx fewer)\n",
                generation, r.type == engine::f16 ? "f16" : "f32", cond.class_id, r.seed, uncached_calls, model_calls,
                s.skips, s.speedup_in_calls());
    std::printf("      steps (C = called, . = cached): %s\n", pattern.c_str());
    std::printf("      %s\n", easycache::summary(s).c_str());
    std::printf("      against the uncached %s run: PSNR %.1f dB, max |error| %.4f\n",
                r.type == engine::f16 ? "f16" : "f32", quality, max_error);
    ok = ok && s.skips > 0 && s.calls == model_calls && s.evaluations == uncached_calls && quality > 25.0;
  }
  std::printf("incidents: %llu\n", static_cast<unsigned long long>(hooks.incident_count()));
  ok = ok && hooks.incident_count() == 0;
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
