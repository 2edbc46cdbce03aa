// bench/quality: how close EasyCache stays to the uncached output of the trained
// video DiT (models/, docs/model.md), against two baselines at the same number of
// denoiser calls: fewer sampling steps, and a fixed-interval (static) cache.
//
//   quality [--model PATH] [--out DIR] [--seeds N] [--repeats N] [--steps N] [--guidance G]
//
// Every sample (class × seed) is generated uncached (50 steps, 2 calls a step, as
// Wan2.1), then with EasyCache at several τ and the ComfyUI-style variant; for each
// of those runs, the two baselines are run at exactly its number of calls, and a
// diagnostic that computes the same steps as EasyCache but reuses the outputs v
// themselves instead of x_t + (v − x). Writes DIR/quality.md (the table),
// quality.csv (every run), quality_steps.csv (per-step input change, output change
// and k of the uncached runs) and quality_patterns.csv (EasyCache's steps) for plot.py.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/eigen.hpp>

#include "../../examples/dit/dit.hpp"
#include "../../examples/dit/metrics.hpp"
#include "../../examples/dit/sampler.hpp"

#ifndef EASYCACHE_MODEL_PATH
#define EASYCACHE_MODEL_PATH "models/digits_dit.bin"
#endif

namespace {

/// The static baseline: computes a fixed set of steps and skips the others,
/// reusing the cached transformation vector exactly as EasyCache does; only the
/// choice of steps differs (fixed in advance instead of from the statistics).
class fixed_schedule_policy {
 public:
  fixed_schedule_policy() = default;
  explicit fixed_schedule_policy(std::vector<bool> computed) : computed_(std::move(computed)) {}

  std::optional<easycache::verdict> plan(const easycache::step_context& ctx) const {
    const bool compute = ctx.step >= computed_.size() || computed_[ctx.step];
    return easycache::verdict{compute ? easycache::action::compute : easycache::action::skip,
                              easycache::reason::policy};
  }
  easycache::verdict decide(const easycache::step_context&, const easycache::step_measurement&) const {
    return easycache::verdict{easycache::action::compute, easycache::reason::policy};
  }
  void commit(const easycache::step_context&, const easycache::verdict&) noexcept {}
  void reset() noexcept {}

 private:
  std::vector<bool> computed_;
};

/// `computed_steps` steps of `steps`: the forced ones (as the matched EasyCache run
/// had them), and the rest spread evenly over the steps in between.
std::vector<bool> even_schedule(const std::vector<bool>& forced, std::size_t computed_steps) {
  std::vector<std::size_t> free_steps;
  std::size_t forced_count = 0;
  for (std::size_t i = 0; i < forced.size(); ++i) {
    if (forced[i]) {
      ++forced_count;
    } else {
      free_steps.push_back(i);
    }
  }
  std::vector<bool> computed = forced;
  const std::size_t extra = computed_steps > forced_count ? computed_steps - forced_count : 0;
  for (std::size_t j = 0; j < extra && j < free_steps.size(); ++j) {
    const double at = (static_cast<double>(j) + 0.5) * static_cast<double>(free_steps.size()) /
                      static_cast<double>(extra);
    computed[free_steps[std::min(free_steps.size() - 1, static_cast<std::size_t>(at))]] = true;
  }
  return computed;
}

/// Diagnostic, not a method of the library: the sampler computing exactly the
/// steps in `computed` and, on the others, reusing the last computed outputs v
/// themselves instead of EasyCache's x_t + (v − x) of the last computed step.
Eigen::VectorXf run_reusing_output(dit::model& model, const dit::sampler_settings& settings, std::size_t label,
                                   std::uint64_t seed, const std::vector<bool>& computed, std::size_t& calls) {
  const std::vector<double> sigmas = dit::shifted_sigmas(settings.steps, settings.shift);
  Eigen::VectorXf x = dit::gaussian_noise(model.sizes().latent_size(), seed);
  Eigen::VectorXf v_cond(x.size()), v_uncond(x.size());
  calls = 0;
  for (std::size_t i = 0; i < settings.steps; ++i) {
    if (i == 0 || computed[i]) {
      model.forward(x, static_cast<float>(sigmas[i]), label, v_cond);
      model.forward(x, static_cast<float>(sigmas[i]), model.null_class(), v_uncond);
      calls += 2;
    }
    x += static_cast<float>(sigmas[i + 1] - sigmas[i]) * (v_uncond + settings.guidance * (v_cond - v_uncond));
  }
  return x;
}

struct run_result {
  Eigen::VectorXf clip;
  std::size_t calls = 0;
  double seconds = 0;  // median over the repeats
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// Runs `generate` `repeats` times; keeps the clip and calls of the first run and the median time.
run_result timed(std::size_t repeats, const std::function<Eigen::VectorXf(std::size_t&)>& generate) {
  run_result result;
  std::vector<double> seconds;
  for (std::size_t r = 0; r < repeats; ++r) {
    std::size_t calls = 0;
    const auto start = std::chrono::steady_clock::now();
    Eigen::VectorXf clip = generate(calls);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (r == 0) {
      result.clip = std::move(clip);
      result.calls = calls;
    } else if (clip != result.clip) {
      throw std::runtime_error("a repeated run gave another clip: the sampler is not deterministic");
    }
  }
  result.seconds = median(seconds);
  return result;
}

struct method_summary {
  std::string name;
  std::string group;  // the EasyCache setting it is matched to ("" for uncached)
  std::vector<double> psnr, ssim;
  double calls = 0, seconds = 0;
};

std::string format(double value, const char* spec) {
  if (std::isinf(value)) return "∞";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, spec, value);
  return buffer;
}

// `text` padded with spaces to `width` characters (UTF-8 aware: τ and ∞ are one each).
std::string padded(const std::string& text, std::size_t width, bool right = false) {
  std::size_t characters = 0;
  for (char c : text) characters += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  const std::string fill(width > characters ? width - characters : 0, ' ');
  return right ? fill + text : text + fill;
}

int run(int argc, char** argv) {
  std::string model_path = EASYCACHE_MODEL_PATH, out_dir = "bench/results";
  std::size_t seeds = 2, repeats = 3;
  dit::sampler_settings settings;  // Wan2.1: 50 steps, shift 5, guidance 5
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      model_path = argv[++i];
    } else if (arg == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (arg == "--seeds" && i + 1 < argc) {
      seeds = std::max<std::size_t>(1, std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--repeats" && i + 1 < argc) {
      repeats = std::max<std::size_t>(1, std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--steps" && i + 1 < argc) {
      settings.steps = std::max<std::size_t>(20, std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--guidance" && i + 1 < argc) {
      settings.guidance = std::strtof(argv[++i], nullptr);
    } else {
      std::fprintf(stderr,
                   "usage: quality [--model PATH] [--out DIR] [--seeds N] [--repeats N] [--steps N] [--guidance G]\n");
      return 2;
    }
  }

  dit::model model(model_path, model_path + ".sha256");
  const dit::dimensions& d = model.sizes();
  const std::size_t steps = settings.steps;

  struct cached_setting {
    std::string name;
    easycache::config cfg;
  };
  std::vector<cached_setting> cached_settings;
  for (double tau : {0.025, 0.05, 0.1, 0.2}) {
    easycache::config cfg = easycache::config::wan21(steps);
    cfg.threshold = tau;
    cfg.warmup_steps = steps / 5;  // the reference's 10 of 50 steps, scaled when --steps changes
    cached_settings.push_back({"EasyCache τ=" + format(tau, "%g") + (tau == 0.05 ? " (Wan2.1 default)" : ""), cfg});
  }
  cached_settings.push_back({"EasyCache, ComfyUI variant", easycache::config::comfyui(steps, 2, d.height, d.width)});

  std::vector<method_summary> methods;
  methods.push_back({"uncached, " + std::to_string(steps) + " steps", "", {}, {}, 0, 0});
  for (const cached_setting& s : cached_settings) {
    methods.push_back({s.name, s.name, {}, {}, 0, 0});
    methods.push_back({"fewer steps, same calls", s.name, {}, {}, 0, 0});
    methods.push_back({"static cache, same calls", s.name, {}, {}, 0, 0});
    methods.push_back({"diagnostic: EasyCache's steps, reusing v", s.name, {}, {}, 0, 0});
  }
  const std::size_t rows_per_setting = 4;

  std::filesystem::create_directories(out_dir);
  std::ofstream runs_csv(out_dir + "/quality.csv");
  runs_csv << "method,matched_to,digit,seed,calls,seconds,psnr,ssim\n";
  std::ofstream steps_csv(out_dir + "/quality_steps.csv");
  steps_csv << "digit,seed,step,sigma,input_change,output_change,relative_input_change,relative_output_change,"
               "transformation_rate\n";
  std::ofstream patterns_csv(out_dir + "/quality_patterns.csv");
  patterns_csv << "method,digit,seed,calls,pattern\n";

  const std::size_t samples = d.classes * seeds;
  std::printf("bench/quality: %zu samples (%zu digits x %zu seeds), %zu steps, shift %.0f, guidance %.1f, "
              "timing median of %zu\n",
              samples, d.classes, seeds, steps, settings.shift, static_cast<double>(settings.guidance), repeats);
  const std::vector<double> sigmas = dit::shifted_sigmas(steps, settings.shift);
  const auto started = std::chrono::steady_clock::now();
  std::size_t done = 0;
  for (std::size_t seed = 1; seed <= seeds; ++seed)
    for (std::size_t digit = 0; digit < d.classes; ++digit) {
      // Uncached, with the per-step statistics of the conditional branch.
      dit::sampler sampler(model, settings);
      Eigen::VectorXf x_prev, v_prev;
      sampler.on_step([&](std::size_t step, const Eigen::VectorXf& x, const Eigen::VectorXf& v) {
        if (step > 0) {
          const double dx = (x - x_prev).cwiseAbs().mean(), dv = (v - v_prev).cwiseAbs().mean();
          steps_csv << digit << ',' << seed << ',' << step << ',' << sigmas[step] << ',' << dx << ',' << dv << ','
                    << dx / x_prev.cwiseAbs().mean() << ',' << dv / v_prev.cwiseAbs().mean() << ',' << dv / dx
                    << '\n';
        }
        x_prev = x;
        v_prev = v;
      });
      std::size_t observed_runs = 0;
      const run_result reference = timed(repeats, [&](std::size_t& calls) {
        if (observed_runs++ == 1) sampler.on_step(nullptr);  // statistics from the first run only
        Eigen::VectorXf clip = sampler.run(digit, seed);
        calls = sampler.calls();
        return clip;
      });
      sampler.on_step(nullptr);  // and never from the cached runs below

      auto record = [&](method_summary& m, const run_result& r) {
        const double p = dit::psnr(r.clip, reference.clip), s = dit::ssim(r.clip, reference.clip, d.frames, d.height,
                                                                          d.width);
        m.psnr.push_back(p);
        m.ssim.push_back(s);
        m.calls += static_cast<double>(r.calls);
        m.seconds += r.seconds;
        runs_csv << '"' << m.name << "\",\"" << m.group << "\"," << digit << ',' << seed << ',' << r.calls << ','
                 << r.seconds << ',' << p << ',' << s << '\n';
      };
      record(methods[0], reference);

      for (std::size_t c = 0; c < cached_settings.size(); ++c) {
        const easycache::config& cfg = cached_settings[c].cfg;
        easycache::controller<Eigen::VectorXf> cache(cfg);
        const run_result cached = timed(repeats, [&](std::size_t& calls) {
          Eigen::VectorXf clip = sampler.run(digit, seed, cache);
          calls = sampler.calls();
          return clip;
        });
        record(methods[1 + rows_per_setting * c], cached);

        std::vector<bool> forced(steps, false), computed(steps, false);
        std::string pattern;
        for (const easycache::step_record& r : cache.trace()) {
          if (r.branch != 0) continue;
          forced[r.step] = r.reason == easycache::reason::warmup || r.reason == easycache::reason::last_step ||
                           r.reason == easycache::reason::outside_window;
          computed[r.step] = r.action == easycache::action::compute;
          pattern += r.action == easycache::action::skip ? '.' : 'C';
        }
        patterns_csv << '"' << cached_settings[c].name << "\"," << digit << ',' << seed << ',' << cached.calls << ','
                     << pattern << '\n';
        const std::size_t computed_steps = cached.calls / 2;

        dit::sampler_settings fewer = settings;
        fewer.steps = computed_steps;
        dit::sampler short_sampler(model, fewer);
        record(methods[2 + rows_per_setting * c], timed(repeats, [&](std::size_t& calls) {
                 Eigen::VectorXf clip = short_sampler.run(digit, seed);
                 calls = short_sampler.calls();
                 return clip;
               }));

        easycache::config static_cfg = cfg;
        static_cfg.window.reset();
        easycache::controller<Eigen::VectorXf, fixed_schedule_policy> fixed(
            static_cfg, fixed_schedule_policy(even_schedule(forced, computed_steps)));
        record(methods[3 + rows_per_setting * c], timed(repeats, [&](std::size_t& calls) {
                 Eigen::VectorXf clip = sampler.run(digit, seed, fixed);
                 calls = sampler.calls();
                 return clip;
               }));

        record(methods[4 + rows_per_setting * c], timed(repeats, [&](std::size_t& calls) {
                 return run_reusing_output(model, settings, digit, seed, computed, calls);
               }));
      }
      ++done;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::printf("  [%zu/%zu] digit %zu, seed %zu done (%.0f s, about %.0f s left)\n", done, samples, digit, seed,
                  elapsed, elapsed / static_cast<double>(done) * static_cast<double>(samples - done));
      std::fflush(stdout);
    }

  // The table: calls and time are means / sums over the samples.
  const double uncached_seconds = methods[0].seconds;
  std::ofstream table(out_dir + "/quality.md");
  table << "Trained video DiT (models/digits_dit.bin), " << samples << " samples (" << d.classes << " digits × "
        << seeds << " seeds), " << steps << " steps, shift " << settings.shift << ", guidance " << settings.guidance
        << ", 2 calls a step. PSNR / SSIM against the uncached clip of the same sample; speedup in wall-clock time "
        << "(sum over the samples of the median of " << repeats << " runs). Baselines run at the same calls as the "
        << "EasyCache row above them, sample by sample.\n\n";
  table << "| method | calls | speedup | PSNR mean (dB) | PSNR worst (dB) | SSIM mean | SSIM worst |\n";
  table << "|---|---:|---:|---:|---:|---:|---:|\n";
  std::printf("\n%s %7s %8s %10s %11s %10s %10s\n", padded("method", 44).c_str(), "calls", "speedup", "PSNR mean",
              "PSNR worst", "SSIM mean", "SSIM worst");
  for (const method_summary& m : methods) {
    const double n = static_cast<double>(m.psnr.size());
    double psnr_mean = 0, ssim_mean = 0;
    for (double p : m.psnr) psnr_mean += p / n;
    for (double s : m.ssim) ssim_mean += s / n;
    const double psnr_worst = *std::min_element(m.psnr.begin(), m.psnr.end());
    const double ssim_worst = *std::min_element(m.ssim.begin(), m.ssim.end());
    const std::string label = m.group.empty() || m.group == m.name ? m.name : "  " + m.name;
    table << "| " << (m.group.empty() || m.group == m.name ? "**" + m.name + "**" : "↳ " + m.name) << " | "
          << format(m.calls / n, "%.1f") << " | " << format(uncached_seconds / m.seconds, "%.2f×") << " | "
          << format(psnr_mean, "%.1f") << " | " << format(psnr_worst, "%.1f") << " | " << format(ssim_mean, "%.4f")
          << " | " << format(ssim_worst, "%.4f") << " |\n";
    std::printf("%s %7.1f %7.2fx %s %s %10.4f %10.4f\n", padded(label, 44).c_str(), m.calls / n,
                uncached_seconds / m.seconds, padded(format(psnr_mean, "%.1f"), 10, true).c_str(),
                padded(format(psnr_worst, "%.1f"), 11, true).c_str(), ssim_mean, ssim_worst);
  }
  std::printf("\nwrote %s/quality.md, quality.csv, quality_steps.csv, quality_patterns.csv\n", out_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quality: %s\n", e.what());
    return 1;
  }
}
