// An engine's own tensor struct and model callback, cached with
// easycache::keyed_hooks, the way stable-diffusion.cpp wires its cache: a hook
// before each condition's model call (keyed by the condition's address; the
// first one of a generation is the anchor) and one after it.
//
// The engine here: a ggml-like tensor struct (f32), a flow-matching Euler
// sampler with classifier-free guidance that calls a C-style callback
//   bool denoise(const tensor* x, tensor* out, int step, float sigma, const void* condition)
// once per condition and step, and an exact Gaussian-mixture model as its
// network. Two generations run back to back through one adapter, each
// checked against the same generation without the cache.
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>

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

/// A contiguous f32 tensor over `values`.
inline tensor f32_tensor(std::vector<float>& values, std::int64_t width, std::int64_t height, std::int64_t channels) {
  tensor t{f32, {width, height, channels, 1}, {}, values.data()};
  t.nb[0] = sizeof(float);
  for (int d = 1; d < 4; ++d) t.nb[d] = t.nb[d - 1] * static_cast<std::size_t>(t.ne[d - 1]);
  return t;
}

/// The engine's callback: false is a failed model call.
using denoise_callback = std::function<bool(const tensor* x, tensor* out, int step, float sigma, const void* condition)>;

/// Euler steps of a flow-matching schedule with classifier-free guidance:
/// `denoise` is called for `cond`, then for `uncond`, at each step.
inline bool sample(tensor* x, const std::vector<float>& sigmas, float guidance, const void* cond, const void* uncond,
                   const denoise_callback& denoise) {
  const std::size_t n = static_cast<std::size_t>(x->ne[0] * x->ne[1] * x->ne[2] * x->ne[3]);
  std::vector<float> v_cond(n), v_uncond(n);
  tensor out_cond = *x, out_uncond = *x;
  out_cond.data = v_cond.data();
  out_uncond.data = v_uncond.data();
  float* latent = static_cast<float*>(x->data);
  for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
    const int step = static_cast<int>(i);
    if (!denoise(x, &out_cond, step, sigmas[i], cond) || !denoise(x, &out_uncond, step, sigmas[i], uncond))
      return false;
    const float h = sigmas[i + 1] - sigmas[i];
    for (std::size_t e = 0; e < n; ++e) latent[e] += h * (v_uncond[e] + guidance * (v_cond[e] - v_uncond[e]));
  }
  return true;
}

}  // namespace engine

// ------------------------------------------- what the engine's user writes
// The tensor type (host memory, f32): data() and size(); check() refuses what
// the fused host loops cannot read.
template <>
struct easycache::tensor_traits<engine::tensor> : easycache::host_tensor_traits<engine::tensor, float> {
  static float* data(const engine::tensor& t) { return static_cast<float*>(t.data); }
  static std::size_t size(const engine::tensor& t) {
    return static_cast<std::size_t>(t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]);
  }
  static void check(const engine::tensor& t) {
    if (t.type != engine::f32) throw easycache::error("engine tensor: only f32 tensors are cached here");
    if (t.nb[0] != sizeof(float) || t.nb[1] != t.nb[0] * std::size_t(t.ne[0]) ||
        t.nb[2] != t.nb[1] * std::size_t(t.ne[1]) || t.nb[3] != t.nb[2] * std::size_t(t.ne[2]))
      throw easycache::error("engine tensor: not contiguous");
  }
};
// ----------------------------------------------------------- (end of it)

namespace {

struct condition {
  int class_id;  // -1: unconditional
};

double psnr(const std::vector<float>& a, const std::vector<float>& b, double& max_error) {
  double squared = 0;
  max_error = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    squared += d * d;
    max_error = std::fmax(max_error, std::fabs(d));
  }
  const double mse = squared / static_cast<double>(a.size());
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
    const float* in = static_cast<const float*>(x->data);
    float* o = static_cast<float*>(out->data);
    for (Eigen::Index i = 0; i < model_in.size(); ++i) model_in(i) = in[i];
    mixture.velocity(model_in, sigma, static_cast<const condition*>(c)->class_id, model_out);
    for (Eigen::Index i = 0; i < model_out.size(); ++i) o[i] = model_out(i);
    ++model_calls;
    return true;
  };

  // ---------------------------------------- the user's wiring of the cache
  easycache::hooks_options options;
  options.never_throw = true;  // a production loop: a misuse is reported and computed
  easycache::keyed_hooks<engine::tensor> hooks(easycache::config::wan21(steps), options);
  auto cached = [&](const engine::tensor* x, engine::tensor* out, int step, float sigma, const void* c) {
    if (hooks.before(c, *x, *out, easycache::step_info{step, sigma}.of(steps))) return true;  // from the cache
    if (!model(x, out, step, sigma, c)) return false;
    hooks.after(c, *x, *out);
    return true;
  };
  // ------------------------------------------------------------ (end of it)

  std::printf("easycache engine_hooks: a ggml-like f32 tensor, a denoise(x, out, step, sigma, condition) callback\n");
  std::printf("sampler: flow matching, %d Euler steps, guidance %.1f (cond, uncond); EasyCache: config::wan21(%d)\n",
              steps, static_cast<double>(guidance), steps);
  bool ok = true;
  const int classes[] = {2, 4};
  for (int generation = 0; generation < 2; ++generation) {
    condition cond{classes[generation]}, uncond{-1};
    std::vector<float> noise(mixture.size());
    std::mt19937 rng(static_cast<unsigned>(generation + 1));
    std::normal_distribution<float> normal;
    for (float& value : noise) value = normal(rng);

    std::vector<float> reference = noise, latent = noise;
    engine::tensor x_reference = engine::f32_tensor(reference, width, height, channels);
    engine::tensor x = engine::f32_tensor(latent, width, height, channels);
    model_calls = 0;
    ok = engine::sample(&x_reference, sigmas, guidance, &cond, &uncond, model) && ok;
    const std::size_t uncached_calls = model_calls;
    model_calls = 0;
    ok = engine::sample(&x, sigmas, guidance, &cond, &uncond, cached) && ok;

    std::string pattern;
    for (const easycache::step_record& r : hooks.cache().trace())
      if (r.branch == 0) pattern += r.action == easycache::action::skip ? '.' : 'C';
    const easycache::statistics& s = hooks.cache().stats();
    double max_error = 0;
    const double quality = psnr(latent, reference, max_error);
    std::printf("[%d/2] class %d, seed %d: model calls %zu -> %zu (%zu served from the cache, %.2fx fewer)\n",
                generation + 1, cond.class_id, generation + 1, uncached_calls, model_calls, s.skips,
                s.speedup_in_calls());
    std::printf("      steps (C = called, . = cached): %s\n", pattern.c_str());
    std::printf("      %s\n", easycache::summary(s).c_str());
    std::printf("      against the uncached run: PSNR %.1f dB, max |error| %.4f\n", quality, max_error);
    ok = ok && s.skips > 0 && s.calls == model_calls && s.evaluations == uncached_calls && quality > 25.0;
  }
  std::printf("incidents: %llu\n", static_cast<unsigned long long>(hooks.incident_count()));
  ok = ok && hooks.incident_count() == 0;
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
