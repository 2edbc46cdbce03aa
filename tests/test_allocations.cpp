// No heap allocation after the first step of a generation: the global
// operator new is replaced to count allocations while a flag is up.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include <easycache/extras/batch.hpp>
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>
#include <easycache/backends/host_buffer.hpp>

namespace {
std::atomic<bool> counting{false};
std::atomic<std::size_t> allocations{0};
}  // namespace

// g++ 12 warns that free() gets what operator new returned once these are
// inlined into their callers; here that pairing is the point (malloc underneath).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t size) {
  if (counting.load()) ++allocations;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

struct count_scope {
  count_scope() {
    allocations = 0;
    counting = true;
  }
  ~count_scope() { counting = false; }
};

template <class Run>
std::size_t allocations_after_first_step(Run&& run) {
  std::size_t counted = 0;
  run([&](std::size_t step, auto&& body) {
    if (step == 0) {
      body();
      return;
    }
    count_scope scope;
    body();
    counted += allocations.load();
  });
  return counted;
}

}  // namespace

TEST_CASE("Eigen: no allocation after the first step with guidance and trace and callback", "[allocations]") {
  for (auto variant : {easycache::input_change_reference::previous_step, easycache::input_change_reference::last_compute}) {
    easycache::config cfg = easycache::config::wan21(50);
    cfg.input_change = variant;
    cfg.measure_forced_steps = true;
    easycache::controller<Eigen::VectorXf> cache(cfg);
    std::size_t seen = 0;
    cache.on_decision([&](const easycache::step_record&) { ++seen; });
    Eigen::VectorXf x = Eigen::VectorXf::LinSpaced(4096, -1.0f, 1.0f), cond(4096), uncond(4096);
    auto model = [](const Eigen::VectorXf& in, Eigen::VectorXf& out, const easycache::step_info& info) {
      out.array() = in.array() * (0.5f + 0.01f * float(info.index)) + 0.1f * float(info.branch);
    };
    for (int generation = 0; generation < 2; ++generation) {
      const std::size_t counted = allocations_after_first_step([&](auto&& at) {
        for (std::size_t t = 0; t < 50; ++t) {
          at(t, [&] {
            cache.step(x, cond, {t, 0.0, 0}, model);
            cache.step(x, uncond, {t, 0.0, 1}, model);
            x.array() += 0.02f * (cond.array() - uncond.array() - x.array());
          });
        }
      });
      CHECK(counted == 0);
      CHECK(cache.stats().skips > 0);
    }
    CHECK(seen == 200);
  }
}

TEST_CASE("host buffers: no allocation after the first step", "[allocations]") {
  easycache::config cfg = easycache::config::hunyuan_video(30);
  cfg.sampling = easycache::statistics_sampling{8, 16, 16};
  easycache::controller<easycache::host_buffer<float>> cache(cfg);
  std::vector<float> x(4 * 16 * 16, 0.5f), out(x.size());
  easycache::host_buffer<float> xb{x.data(), x.size()}, ob{out.data(), out.size()};
  const std::size_t counted = allocations_after_first_step([&](auto&& at) {
    for (std::size_t t = 0; t < 30; ++t) {
      at(t, [&] {
        cache.step(xb, ob, {t}, [&](const easycache::host_buffer<float>& in, easycache::host_buffer<float>& o) {
          for (std::size_t i = 0; i < in.size; ++i) o.data[i] = 0.9f * in.data[i] + 0.01f;
        });
        for (std::size_t i = 0; i < x.size(); ++i) x[i] += 0.03f * (out[i] - x[i]);
      });
    }
  });
  CHECK(counted == 0);
  CHECK(cache.stats().skips > 0);
}

TEST_CASE("16-bit host buffers and host_view: no allocation after the first step", "[allocations][half]") {
  using easycache::float16;
  easycache::config cfg = easycache::config::hunyuan_video(30);
  cfg.predictor = easycache::skip_predictor::linear_in_timestep;  // the commit that also moves Δ_prev
  easycache::controller<easycache::host_buffer<float16>> buffers(cfg);
  easycache::controller<easycache::host_view> views(cfg);
  std::vector<float16> x(3000, float16(0.5f)), out(x.size());  // six tiles, the last one partial
  easycache::host_buffer<float16> xb{x.data(), x.size()}, ob{out.data(), out.size()};
  easycache::host_view xv(x.data(), x.size()), ov(out.data(), out.size());
  auto denoise = [](const float16* in, float16* o, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) o[i] = float16(0.9f * static_cast<float>(in[i]) + 0.01f);
  };
  const std::size_t counted = allocations_after_first_step([&](auto&& at) {
    for (std::size_t t = 0; t < 30; ++t) {
      at(t, [&] {
        const easycache::step_info info{t, 1.0 - static_cast<double>(t) / 30.0};  // the predictor needs a timestep
        buffers.step(xb, ob, info, [&](const easycache::host_buffer<float16>& in, easycache::host_buffer<float16>& o) {
          denoise(in.data, o.data, in.size);
        });
        views.step(xv, ov, info, [&](const easycache::host_view& in, easycache::host_view& o) {
          denoise(static_cast<const float16*>(in.data), static_cast<float16*>(o.data), in.size);
        });
        for (std::size_t i = 0; i < x.size(); ++i)
          x[i] = float16(static_cast<float>(x[i]) + 0.03f * (static_cast<float>(out[i]) - static_cast<float>(x[i])));
      });
    }
  });
  CHECK(counted == 0);
  CHECK(buffers.stats().skips > 0);
  CHECK(views.stats().skips > 0);
}

namespace {

// Two generations of a 30-step flow-matching loop on host buffers, through
// step() or through begin_step / finish_step; counts allocations after step 0 of each.
template <class Policy>
std::size_t allocations_of_loop(const easycache::config& cfg, const Policy& policy, bool two_phase) {
  using view = easycache::host_buffer<float>;
  easycache::controller<view, Policy> cache(cfg, policy);
  std::vector<float> x(1024), out(x.size());
  view xb{x.data(), x.size()}, ob{out.data(), out.size()};
  auto model = [](const view& in, view& o, const easycache::step_info& info) {
    for (std::size_t i = 0; i < in.size; ++i)
      o.data[i] = (0.8f + 0.004f * static_cast<float>(info.index)) * in.data[i] + 0.01f;
  };
  std::size_t counted = 0;
  for (int generation = 0; generation < 2; ++generation) {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.001f * static_cast<float>(i % 97) - 0.05f;
    counted += allocations_after_first_step([&](auto&& at) {
      for (std::size_t t = 0; t < cfg.steps; ++t) {
        at(t, [&] {
          const easycache::step_info info{t, 1.0 - static_cast<double>(t) / static_cast<double>(cfg.steps)};
          if (two_phase) {
            const auto pending = cache.begin_step(xb, info);
            if (pending.compute()) model(xb, ob, info);
            cache.finish_step(pending, xb, ob);
          } else {
            cache.step(xb, ob, info, model);
          }
          for (std::size_t i = 0; i < x.size(); ++i) x[i] += 0.03f * (out[i] - x[i]);
        });
      }
    });
    REQUIRE(cache.stats().skips > 0);
  }
  return counted;
}

}  // namespace

TEST_CASE("no allocation after the first step: predictors, policies, the two-phase API", "[allocations]") {
  easycache::config cfg = easycache::config::hunyuan_video(30);
  cfg.threshold = 0.2;
  for (auto predictor : {easycache::skip_predictor::constant, easycache::skip_predictor::linear_in_timestep,
                         easycache::skip_predictor::last_output})
    for (bool two_phase : {false, true}) {
      cfg.predictor = predictor;
      INFO("predictor " << static_cast<int>(predictor) << ", two-phase " << two_phase);
      CHECK(allocations_of_loop(cfg, easycache::easycache_policy(cfg), two_phase) == 0);
      // The second generation is calibrated on the first.
      CHECK(allocations_of_loop(cfg, easycache::budget_policy(easycache::budget::calls(12)), two_phase) == 0);
      CHECK(allocations_of_loop(cfg, easycache::fixed_interval_policy(3), two_phase) == 0);
      CHECK(allocations_of_loop(cfg, easycache::step_mask_policy::evenly_spaced(30, cfg.warmup_steps, 12), two_phase) ==
            0);
    }
}

TEST_CASE("the peer presets: no allocation after the first step", "[allocations][peer]") {
  // 1024 elements: one 32 x 32 plane for ComfyUI's 8x subsampling.
  easycache::config comfy = easycache::config::comfyui(30, 1, 32, 32, 3.0);
  easycache::config sdcpp = easycache::config::stable_diffusion_cpp(30, 1, 3.0);
  easycache::config comfy_batched = easycache::config::comfyui(30, 1, 16, 16);
  comfy_batched.batched_conditions = 2;  // two slices of 2 planes
  comfy_batched.threshold = 0.4;
  for (const easycache::config& cfg : {comfy, sdcpp, comfy_batched})
    for (bool two_phase : {false, true}) {
      INFO("window map " << static_cast<int>(cfg.window_sigma->map) << ", batched " << cfg.batched_conditions
                         << ", two-phase " << two_phase);
      CHECK(allocations_of_loop(cfg, easycache::easycache_policy(cfg), two_phase) == 0);
    }
}

TEST_CASE("batch controller: no allocation after the first step", "[allocations][batch]") {
  using view = easycache::host_buffer<float>;
  easycache::config cfg = easycache::config::hunyuan_video(30);
  cfg.threshold = 0.2;
  const std::size_t batch = 3;
  easycache::batch_controller<view> cache(cfg, batch);
  std::vector<std::vector<float>> x(batch, std::vector<float>(256)), out(batch, std::vector<float>(256));
  std::vector<view> inputs, outputs;
  for (std::size_t s = 0; s < batch; ++s) {
    for (std::size_t i = 0; i < x[s].size(); ++i) x[s][i] = 0.01f * static_cast<float>(s + 1) * static_cast<float>(i % 13);
    inputs.push_back({x[s].data(), x[s].size()});
    outputs.push_back({out[s].data(), out[s].size()});
  }
  std::size_t skipped = 0;
  const std::size_t counted = allocations_after_first_step([&](auto&& at) {
    for (std::size_t t = 0; t < cfg.steps; ++t) {
      at(t, [&] {
        const std::vector<bool>& mask = cache.begin_step(inputs, {t});
        for (std::size_t s = 0; s < batch; ++s) {
          if (!mask[s]) {
            ++skipped;
            continue;
          }
          for (std::size_t i = 0; i < x[s].size(); ++i) out[s][i] = (0.7f + 0.1f * static_cast<float>(s)) * x[s][i];
        }
        cache.finish_step(inputs, outputs);
        for (std::size_t s = 0; s < batch; ++s)
          for (std::size_t i = 0; i < x[s].size(); ++i) x[s][i] += 0.05f * (out[s][i] - x[s][i]);
      });
    }
  });
  CHECK(counted == 0);
  CHECK(skipped > 0);
}

TEST_CASE("the counter does count (the test could fail)", "[allocations]") {
  count_scope scope;
  std::vector<int> v(100);
  CHECK(allocations.load() >= 1);
}

TEST_CASE("keyed hooks: no allocation after the first step, generation after generation", "[allocations]") {
  using view = easycache::host_buffer<float>;
  easycache::keyed_hooks<view> hooks(easycache::config::wan21(30));
  const char cond = 'c', uncond = 'u';  // two conditions: their addresses are the keys
  std::vector<float> x(1024), v_cond(x.size()), v_uncond(x.size());
  view xb{x.data(), x.size()}, cb{v_cond.data(), v_cond.size()}, ub{v_uncond.data(), v_uncond.size()};
  auto model = [&](view& out, float scale) {
    for (std::size_t i = 0; i < x.size(); ++i) out.data[i] = scale * x[i] + 0.01f;
  };
  std::size_t counted = 0;
  for (int generation = 0; generation < 2; ++generation) {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.001f * static_cast<float>(i % 97) - 0.05f;
    counted += allocations_after_first_step([&](auto&& at) {
      for (int t = 0; t < 30; ++t) {
        at(static_cast<std::size_t>(t), [&] {
          const easycache::step_info info{t, 1.0 - t / 30.0};
          if (!hooks.before(&cond, xb, cb, info)) {
            model(cb, 0.8f);
            hooks.after(&cond, xb, cb);
          }
          if (!hooks.before(&uncond, xb, ub, info)) {
            model(ub, 0.7f);
            hooks.after(&uncond, xb, ub);
          }
          for (std::size_t i = 0; i < x.size(); ++i) x[i] += 0.03f * (v_cond[i] - x[i]);
        });
      }
    });
    REQUIRE(hooks.cache().stats().skips > 0);
  }
  CHECK(counted == 0);
}
