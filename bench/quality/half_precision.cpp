// Where should a 16-bit engine's cached vectors live: in float, or in the
// tensor's own 16 bits? On the trained video DiT (models/, docs/model.md),
// the sampler's tensors pass through float16 at the cache's boundary, as an
// engine holding f16 latents and model outputs has them: x rounded to
// float16 before each call, the model's output rounded to float16. Each
// sample runs uncached that way (the reference) and cached with the cached
// vectors (x_last, Δ) in float (host_buffer<float16>, the default) and in
// float16 (host_tensor_traits<T, float16, float16>), under config::wan21 and
// config::quality; and uncached and cached in float, for the float figures.
//
//   quality_half_precision [--model PATH] [--out DIR] [--seeds N]
// writes DIR/half_precision.md and .csv (default bench/results).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>
#include <easycache/backends/host_buffer.hpp>

#include "format.hpp"
#include "../../examples/dit/dit.hpp"
#include "../../examples/dit/metrics.hpp"
#include "../../examples/dit/sampler.hpp"

#ifndef EASYCACHE_MODEL_PATH
#define EASYCACHE_MODEL_PATH "models/digits_dit.bin"
#endif

namespace {

using easycache::float16;
using vector = Eigen::VectorXf;

// float16 tensors whose cached vectors are float16 too.
struct half_cached_in_half {
  float16* data;
  std::size_t size;
};

}  // namespace

template <>
struct easycache::tensor_traits<half_cached_in_half>
    : easycache::host_tensor_traits<half_cached_in_half, easycache::float16, easycache::float16> {
  static easycache::float16* data(const half_cached_in_half& t) noexcept { return t.data; }
  static std::size_t size(const half_cached_in_half& t) noexcept { return t.size; }
};

namespace {

// Each call of the sampler through float16 tensors: x rounded in, the
// model's output rounded out; through `cache` when there is one.
template <class Tensor>
class float16_boundary {
 public:
  explicit float16_boundary(easycache::controller<Tensor>* cache) : cache_(cache) {}

  template <class Denoiser>
  void operator()(const easycache::step_info& info, const vector& x, vector& v, Denoiser& denoiser) {
    const std::size_t n = static_cast<std::size_t>(x.size());
    std::vector<float16>& in = inputs_[info.branch];
    std::vector<float16>& out = outputs_[info.branch];
    in.resize(n);
    out.resize(n);
    for (std::size_t i = 0; i < n; ++i) in[i] = float16(x(Eigen::Index(i)));
    auto model = [&](const Tensor& t, Tensor& o) {
      vector x_model(x.size()), v_model(x.size());
      for (std::size_t i = 0; i < n; ++i) x_model(Eigen::Index(i)) = static_cast<float>(t.data[i]);
      denoiser(x_model, v_model, info);
      for (std::size_t i = 0; i < n; ++i) o.data[i] = float16(v_model(Eigen::Index(i)));
    };
    Tensor tin{in.data(), n}, tout{out.data(), n};
    if (cache_) {
      cache_->step(tin, tout, info, model);
    } else {
      model(tin, tout);
    }
    v.resize(x.size());
    for (std::size_t i = 0; i < n; ++i) v(Eigen::Index(i)) = static_cast<float>(out[i]);
  }

 private:
  easycache::controller<Tensor>* cache_;
  std::vector<float16> inputs_[2], outputs_[2];
};

struct row {
  std::string config, tensors, cached_in;
  std::vector<double> psnr_16, psnr_32;
  double calls = 0;
};

using bench::format;

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double e : v) s += e;
  return s / static_cast<double>(v.size());
}

int run_bench(int argc, char** argv) {
  std::string model_path = EASYCACHE_MODEL_PATH, out_dir = "bench/results";
  std::size_t seeds = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      model_path = argv[++i];
    } else if (arg == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (arg == "--seeds" && i + 1 < argc) {
      seeds = std::max<std::size_t>(1, std::strtoul(argv[++i], nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: quality_half_precision [--model PATH] [--out DIR] [--seeds N]\n");
      return 2;
    }
  }
  dit::model model(model_path, model_path + ".sha256");
  const std::size_t steps = 50, classes = model.sizes().classes;
  dit::sampler sampler(model, dit::sampler_settings{});
  struct named_config {
    const char* name;
    easycache::config cfg;
  };
  const named_config configs[] = {{"config::wan21(50)", easycache::config::wan21(steps)},
                                  {"config::quality(50)", easycache::config::quality(steps)}};
  std::vector<row> rows;
  for (const named_config& c : configs) {
    rows.push_back({c.name, "float16", "float (default)", {}, {}, 0});
    rows.push_back({c.name, "float16", "float16", {}, {}, 0});
    rows.push_back({c.name, "float", "float", {}, {}, 0});
  }
  row rounding{"uncached", "float16", "—", {}, {}, 0};

  std::filesystem::create_directories(out_dir);
  std::ofstream csv(out_dir + "/half_precision.csv");
  csv << "config,tensors,cached_in,digit,seed,calls,psnr_vs_uncached_float16,psnr_vs_uncached_float\n";
  std::printf("quality_half_precision: %zu samples, %zu steps, float16 tensors at the cache's boundary\n",
              classes * seeds, steps);
  for (std::size_t seed = 1; seed <= seeds; ++seed)
    for (std::size_t digit = 0; digit < classes; ++digit) {
      const vector reference_32 = sampler.run(digit, seed);
      float16_boundary<easycache::host_buffer<float16>> uncached(nullptr);
      const vector reference_16 = sampler.run_custom(digit, seed, uncached);
      rounding.psnr_16.push_back(INFINITY);
      rounding.psnr_32.push_back(dit::psnr(reference_16, reference_32));
      rounding.calls += static_cast<double>(sampler.calls());
      std::size_t r = 0;
      for (const named_config& c : configs) {
        vector clips[3];
        std::size_t calls[3];
        {
          easycache::controller<easycache::host_buffer<float16>> cache(c.cfg);
          float16_boundary<easycache::host_buffer<float16>> through(&cache);
          clips[0] = sampler.run_custom(digit, seed, through);
          calls[0] = sampler.calls();
        }
        {
          easycache::controller<half_cached_in_half> cache(c.cfg);
          float16_boundary<half_cached_in_half> through(&cache);
          clips[1] = sampler.run_custom(digit, seed, through);
          calls[1] = sampler.calls();
        }
        {
          easycache::controller<vector> cache(c.cfg);
          clips[2] = sampler.run(digit, seed, cache);
          calls[2] = sampler.calls();
        }
        for (std::size_t k = 0; k < 3; ++k, ++r) {
          const double p16 = k < 2 ? dit::psnr(clips[k], reference_16) : NAN;
          const double p32 = dit::psnr(clips[k], reference_32);
          if (k < 2) rows[r].psnr_16.push_back(p16);
          rows[r].psnr_32.push_back(p32);
          rows[r].calls += static_cast<double>(calls[k]);
          csv << c.name << ',' << rows[r].tensors << ",\"" << rows[r].cached_in << "\"," << digit << ',' << seed << ','
              << calls[k] << ',' << p16 << ',' << p32 << '\n';
        }
      }
      std::printf("  digit %zu, seed %zu done\n", digit, seed);
    }

  const double samples = static_cast<double>(classes * seeds);
  std::ofstream table(out_dir + "/half_precision.md");
  table << "Trained video DiT (models/digits_dit.bin), " << classes * seeds << " samples, " << steps
        << " Euler steps, shift 5, guidance 5, 2 calls a step. float16 rows: the sampler's x and the model's "
        << "outputs rounded to float16 at the cache's boundary, as an engine with f16 tensors has them. PSNR in dB, "
        << "mean (worst sample).\n\n"
        << "| config | tensors | cached vectors in | calls (of " << 2 * steps << ") | PSNR vs uncached float16 | "
        << "PSNR vs uncached float |\n|---|---|---|---|---|---|\n";
  auto print = [&](const row& r) {
    const auto worst = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
    table << "| " << r.config << " | " << r.tensors << " | " << r.cached_in << " | " << format(r.calls / samples)
          << " | " << (r.psnr_16.empty() ? std::string("—") : format(mean(r.psnr_16)) + " (" + format(worst(r.psnr_16)) + ")")
          << " | " << format(mean(r.psnr_32)) << " (" << format(worst(r.psnr_32)) << ") |\n";
  };
  print(rounding);
  for (const row& r : rows) print(r);
  table << "\ncommand: bench/quality/run.sh (quality_half_precision --seeds " << seeds << ")\n";
  table.close();
  std::ifstream back(out_dir + "/half_precision.md");
  std::string line;
  while (std::getline(back, line)) std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quality_half_precision: %s\n", e.what());
    return 1;
  }
}
