// easycache's main demo: a small video diffusion transformer, trained in this
// repository on handwritten digits (models/, docs/model.md), sampled like Wan2.1
// (flow matching, shift 5, 50 Euler steps, classifier-free guidance: two calls a
// step) with and without EasyCache at the reference Wan2.1 settings.
//
//   demo [--model PATH] [--out DIR] [--repeats N] [--quick] [--quality]
//
// --quality: easycache's own quality mode (config::quality) in place of the
// reference's Wan2.1 settings.
//
// Prints the denoiser calls, the wall-clock speedup (median of N timed repeats)
// and PSNR / SSIM against the uncached clips; writes the clips as PNG strips.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

#include "../dit/dit.hpp"
#include "../dit/metrics.hpp"
#include "../dit/png.hpp"
#include "../dit/sampler.hpp"

#ifndef EASYCACHE_MODEL_PATH
#define EASYCACHE_MODEL_PATH "models/digits_dit.bin"
#endif

namespace {

struct clip_request {
  std::size_t digit;
  std::uint64_t seed;
};

struct clip_result {
  Eigen::VectorXf uncached, cached;
  std::size_t uncached_calls = 0, cached_calls = 0;
  std::string pattern;  // C = computed step, . = skipped
  double psnr = 0, ssim = 0;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// Rows per clip: uncached, EasyCache, |difference| × 4 (black: none).
dit::gray_image layout(const std::vector<clip_result>& results, const dit::dimensions& d, std::size_t scale) {
  const std::size_t gap = 4, cell_w = d.width * scale + gap, cell_h = d.height * scale + gap;
  dit::gray_image image(gap + d.frames * cell_w, gap + results.size() * 3 * cell_h + results.size() * gap, 96);
  std::size_t top = gap;
  for (const clip_result& r : results) {
    const Eigen::VectorXf difference =
        ((r.cached - r.uncached).cwiseAbs() * 4.0f).cwiseMin(2.0f) - Eigen::VectorXf::Ones(r.cached.size());
    for (const Eigen::VectorXf* clip : {&r.uncached, &r.cached, &difference}) {
      dit::draw_clip(image, *clip, d.frames, d.height, d.width, scale, gap, top);
      top += cell_h;
    }
    top += gap;
  }
  return image;
}

int run(int argc, char** argv) {
  std::string model_path = EASYCACHE_MODEL_PATH, out_dir = "out/demo";
  std::size_t repeats = 3;
  bool quick = false, quality = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      model_path = argv[++i];
    } else if (arg == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (arg == "--repeats" && i + 1 < argc) {
      repeats = std::max<std::size_t>(1, std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--quality") {
      quality = true;
    } else if (arg == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: demo [--model PATH] [--out DIR] [--repeats N] [--quick] [--quality]\n");
      return 2;
    }
  }

  dit::model model(model_path, model_path + ".sha256");
  const dit::dimensions& d = model.sizes();
  const dit::sampler_settings settings;  // Wan2.1: 50 steps, shift 5, guidance 5
  dit::sampler sampler(model, settings);
  easycache::controller<Eigen::VectorXf> cache(quality ? easycache::config::quality(settings.steps)
                                                       : easycache::config::wan21(settings.steps));
  const easycache::config& cfg = cache.configuration();

  std::vector<clip_request> requests = {{0, 1}, {3, 2}, {5, 3}, {8, 4}};
  if (quick) {
    requests.resize(1);
    repeats = 1;
  }
  std::printf("easycache demo: a video diffusion transformer trained on handwritten digits\n");
  std::printf("model: %s (checksum ok), %zu parameters, clips of %zu frames of %zux%zu\n",
              std::filesystem::path(model_path).filename().string().c_str(), model.parameters(), d.frames, d.height,
              d.width);
  std::printf("sampler (as Wan2.1): flow matching, shift %.0f, %zu Euler steps, guidance %.1f: 2 calls a step\n",
              settings.shift, settings.steps, static_cast<double>(settings.guidance));
  if (quality) {
    std::printf("easycache quality mode: config::quality(%zu): tau %.3g, warm-up %zu steps, last step computed, "
                "linear predictor, predictor_residual\n\n",
                settings.steps, cfg.threshold, cfg.warmup_steps);
  } else {
    std::printf("EasyCache: config::wan21(%zu): tau %.3g, warm-up %zu steps, last step computed\n\n", settings.steps,
                cfg.threshold, cfg.warmup_steps);
  }

  std::vector<clip_result> results(requests.size());
  std::vector<double> uncached_seconds(repeats, 0.0), cached_seconds(repeats, 0.0);
  for (std::size_t repeat = 0; repeat < repeats; ++repeat) {
    if (repeat == 1) std::printf("\ntiming: %zu more repeats of every clip, both ways\n", repeats - 1);
    for (std::size_t c = 0; c < requests.size(); ++c) {
      const clip_request& request = requests[c];
      clip_result& result = results[c];
      auto start = std::chrono::steady_clock::now();
      result.uncached = sampler.run(request.digit, request.seed);
      uncached_seconds[repeat] += seconds_since(start);
      result.uncached_calls = sampler.calls();

      start = std::chrono::steady_clock::now();
      result.cached = sampler.run(request.digit, request.seed, cache);
      cached_seconds[repeat] += seconds_since(start);
      result.cached_calls = sampler.calls();

      if (repeat == 0) {
        result.pattern.clear();
        for (const easycache::step_record& r : cache.trace())
          if (r.branch == 0) result.pattern += r.action == easycache::action::skip ? '.' : 'C';
        result.psnr = dit::psnr(result.cached, result.uncached);
        result.ssim = dit::ssim(result.cached, result.uncached, d.frames, d.height, d.width);
        std::printf("[%zu/%zu] digit %zu, seed %llu: %zu -> %zu calls, PSNR %.1f dB, SSIM %.4f\n", c + 1,
                    requests.size(), request.digit, static_cast<unsigned long long>(request.seed),
                    result.uncached_calls, result.cached_calls, result.psnr, result.ssim);
        std::printf("      steps (C = called, . = cached): %s\n", result.pattern.c_str());
      } else {
        if (c == 0) std::printf("  repeat %zu/%zu: clip", repeat + 1, repeats);
        std::printf(" %zu%s", c + 1, c + 1 == requests.size() ? "\n" : "");
      }
      std::fflush(stdout);
    }
  }

  std::size_t calls = 0, cached_calls = 0;
  double psnr_sum = 0, ssim_sum = 0, psnr_worst = INFINITY, ssim_worst = INFINITY;
  for (const clip_result& r : results) {
    calls += r.uncached_calls;
    cached_calls += r.cached_calls;
    psnr_sum += r.psnr;
    ssim_sum += r.ssim;
    psnr_worst = std::min(psnr_worst, r.psnr);
    ssim_worst = std::min(ssim_worst, r.ssim);
  }
  const double n = static_cast<double>(results.size());
  const double t_uncached = median(uncached_seconds), t_cached = median(cached_seconds);
  std::printf("\n%zu clips, against the uncached clips:\n", results.size());
  std::printf("  denoiser calls     %zu -> %zu (%.2fx fewer)\n", calls, cached_calls,
              static_cast<double>(calls) / static_cast<double>(cached_calls));
  std::printf("  wall-clock         %.2f s -> %.2f s (%.2fx faster, median of %zu)\n", t_uncached, t_cached,
              t_uncached / t_cached, repeats);
  std::printf("  PSNR               %.1f dB mean, %.1f dB worst\n", psnr_sum / n, psnr_worst);
  std::printf("  SSIM               %.4f mean, %.4f worst\n", ssim_sum / n, ssim_worst);

  std::filesystem::create_directories(out_dir);
  const std::string image_path = out_dir + "/clips.png";
  dit::write_png(image_path, layout(results, d, 4));
  std::printf("images: %s (per clip: uncached, EasyCache, |difference| x4; frames left to right)\n",
              image_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "demo: %s\n", e.what());
    return 1;
  }
}
