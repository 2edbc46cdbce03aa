// The core target alone: host buffers need no third-party library.
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>

#include <cstdio>
#include <vector>

int main() {
  easycache::config cfg = easycache::config::hunyuan_video(12);
  cfg.threshold = 0.5;
  easycache::controller<easycache::host_buffer<float>> cache(cfg);
  std::vector<float> x(16, 0.0f), out(16);
  easycache::host_buffer<float> input{x.data(), x.size()}, output{out.data(), out.size()};
  for (std::size_t t = 0; t < 12; ++t) {
    cache.step(input, output, {t}, [](const easycache::host_buffer<float>& in, easycache::host_buffer<float>& v) {
      for (std::size_t i = 0; i < in.size; ++i) v.data[i] = in.data[i] + 8.0f;
    });
    for (float& e : x) e += 1.0f;
  }
  std::printf("consumer_core: %zu calls, %zu skips\n", cache.stats().calls, cache.stats().skips);
  return cache.stats().skips > 0 ? 0 : 1;
}
