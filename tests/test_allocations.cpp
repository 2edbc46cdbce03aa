// No heap allocation after the first step of a generation: the global
// operator new is replaced to count allocations while a flag is up.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/eigen.hpp>
#include <easycache/host_buffer.hpp>

namespace {
std::atomic<bool> counting{false};
std::atomic<std::size_t> allocations{0};
}  // namespace

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

TEST_CASE("the counter does count (the test could fail)", "[allocations]") {
  count_scope scope;
  std::vector<int> v(100);
  CHECK(allocations.load() >= 1);
}
