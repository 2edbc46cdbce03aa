// bench/quality: how close EasyCache stays to the uncached output of the trained
// video DiT (models/, docs/model.md), against two baselines at the same number of
// denoiser calls: fewer sampling steps, and a fixed-interval (static) cache; and
// what the features beyond the paper give on it: a compute budget in place of τ,
// the linear and last-output skip predictors, and per-sample decisions in a batch.
//
//   quality [--model PATH] [--out DIR] [--seeds N] [--repeats N] [--steps N] [--guidance G]
//
// Every sample (class × seed) is generated uncached (50 steps, 2 calls a step, as
// Wan2.1), then with EasyCache at several τ and the ComfyUI-style variant; for each
// of those runs, the two baselines and the budget policy are run at exactly its
// number of calls, and the two other predictors at exactly its computed steps
// (its decisions replayed with step_mask_policy::from_trace). Then mixed batches
// of 4 samples, decided batch-wide (the reference) or per sample. Writes
// DIR/quality.md (the tables), quality.csv (every run), quality_steps.csv (per-step
// input change, output change and k of the uncached runs), quality_patterns.csv
// (EasyCache's steps) and quality_batch.csv for plot.py.
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

#include <easycache/extras/batch.hpp>
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

using bench::format;

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
  // The window in sigma by the sampler's own shift, as ComfyUI maps it for a flow model of that shift.
  cached_settings.push_back(
      {"EasyCache, ComfyUI variant", easycache::config::comfyui(steps, 2, d.height, d.width, settings.shift)});

  std::vector<method_summary> methods;
  methods.push_back({"uncached, " + std::to_string(steps) + " steps", "", {}, {}, 0, 0});
  for (const cached_setting& s : cached_settings) {
    methods.push_back({s.name, s.name, {}, {}, 0, 0});
    methods.push_back({"fewer steps, same calls", s.name, {}, {}, 0, 0});
    methods.push_back({"static cache, same calls", s.name, {}, {}, 0, 0});
    methods.push_back({"budget policy, same calls", s.name, {}, {}, 0, 0});
    methods.push_back({"budget policy calibrated on the previous sample, same calls", s.name, {}, {}, 0, 0});
    methods.push_back({"linear predictor, same steps", s.name, {}, {}, 0, 0});
    methods.push_back({"last-output predictor, same steps", s.name, {}, {}, 0, 0});
  }
  const std::size_t rows_per_setting = 7;
  // One budget policy per setting carried from sample to sample: from the second
  // sample on it is calibrated on the previous one (a server's previous request).
  std::vector<std::optional<easycache::budget_policy>> learned(cached_settings.size());

  std::filesystem::create_directories(out_dir);
  std::ofstream runs_csv(out_dir + "/quality.csv");
  runs_csv << "method,matched_to,digit,seed,calls,seconds,psnr,ssim\n";
  std::ofstream steps_csv(out_dir + "/quality_steps.csv");
  steps_csv << "digit,seed,step,sigma,input_change,output_change,relative_input_change,relative_output_change,"
               "transformation_rate\n";
  std::ofstream patterns_csv(out_dir + "/quality_patterns.csv");
  patterns_csv << "method,digit,seed,calls,pattern\n";

  struct reference_clip {
    std::size_t digit, seed;
    Eigen::VectorXf clip;
  };
  std::vector<reference_clip> references;
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
      references.push_back({digit, seed, reference.clip});

      for (std::size_t c = 0; c < cached_settings.size(); ++c) {
        const easycache::config& cfg = cached_settings[c].cfg;
        easycache::controller<Eigen::VectorXf> cache(cfg);
        const run_result cached = timed(repeats, [&](std::size_t& calls) {
          Eigen::VectorXf clip = sampler.run(digit, seed, cache);
          calls = sampler.calls();
          return clip;
        });
        record(methods[1 + rows_per_setting * c], cached);

        std::vector<bool> forced(steps, false);
        std::string pattern;
        for (const easycache::step_record& r : cache.trace()) {
          if (r.branch != 0) continue;
          forced[r.step] = r.reason == easycache::reason::warmup || r.reason == easycache::reason::last_step ||
                           r.reason == easycache::reason::outside_window;
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

        easycache::controller<Eigen::VectorXf, easycache::step_mask_policy> fixed(
            cfg, easycache::step_mask_policy(even_schedule(forced, computed_steps)));
        record(methods[3 + rows_per_setting * c], timed(repeats, [&](std::size_t& calls) {
                 Eigen::VectorXf clip = sampler.run(digit, seed, fixed);
                 calls = sampler.calls();
                 return clip;
               }));

        // The budget policy, told EasyCache's number of computed steps instead of
        // τ, in its first generation: a new controller each repeat (a policy that
        // has seen a generation calibrates on it, the next row).
        std::string budget_pattern;
        record(methods[4 + rows_per_setting * c], timed(repeats, [&](std::size_t& calls) {
                 easycache::controller<Eigen::VectorXf, easycache::budget_policy> budgeted(
                     cfg, easycache::budget_policy(easycache::budget::calls(computed_steps)));
                 Eigen::VectorXf clip = sampler.run(digit, seed, budgeted);
                 calls = sampler.calls();
                 budget_pattern.clear();
                 for (const easycache::step_record& r : budgeted.trace())
                   if (r.branch == 0) budget_pattern += r.action == easycache::action::skip ? '.' : 'C';
                 return clip;
               }));
        patterns_csv << "\"budget policy, " << cached_settings[c].name << "\"," << digit << ',' << seed << ','
                     << cached.calls << ',' << budget_pattern << '\n';

        easycache::budget_policy carried =
            learned[c] ? *learned[c] : easycache::budget_policy(easycache::budget::calls(computed_steps));
        carried.retarget(easycache::budget::calls(computed_steps));
        std::optional<easycache::budget_policy> after;
        record(methods[5 + rows_per_setting * c], timed(repeats, [&](std::size_t& calls) {
                 // Each repeat starts from what the previous sample taught.
                 easycache::controller<Eigen::VectorXf, easycache::budget_policy> calibrated(cfg, carried);
                 Eigen::VectorXf clip = sampler.run(digit, seed, calibrated);
                 calls = sampler.calls();
                 after = calibrated.policy();
                 return clip;
               }));
        learned[c] = after;

        // EasyCache's own steps replayed, with another predictor for the skipped ones.
        const easycache::step_mask_policy replayed = easycache::step_mask_policy::from_trace(cache.trace());
        std::size_t row = 6;
        for (easycache::skip_predictor predictor :
             {easycache::skip_predictor::linear_in_timestep, easycache::skip_predictor::last_output}) {
          easycache::config predicted = cfg;
          predicted.predictor = predictor;
          easycache::controller<Eigen::VectorXf, easycache::step_mask_policy> same_steps(predicted, replayed);
          record(methods[row++ + rows_per_setting * c], timed(repeats, [&](std::size_t& calls) {
                   Eigen::VectorXf clip = sampler.run(digit, seed, same_steps);
                   calls = sampler.calls();
                   return clip;
                 }));
        }
      }
      ++done;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::printf("  [%zu/%zu] digit %zu, seed %zu done (%.0f s, about %.0f s left)\n", done, samples, digit, seed,
                  elapsed, elapsed / static_cast<double>(done) * static_cast<double>(samples - done));
      std::fflush(stdout);
    }

  // Mixed batches: 4 requests in one latent batch, with different digits, seeds
  // and guidance scales (as a server batches unrelated requests), decided
  // batch-wide (one controller on the whole batch, its statistics over all
  // samples, as the reference does) or per sample (batch_controller: the model
  // runs only on the samples whose own statistics ask for it).
  const std::size_t batch = 4, latent = d.latent_size();
  const float batch_guidance[batch] = {1.5f, 3.0f, 5.0f, 8.0f};
  struct batch_summary {
    std::string name;
    double tau;
    bool per_sample;
    std::vector<double> psnr;
    std::size_t sample_calls = 0;
  };
  std::vector<batch_summary> batch_rows;
  for (double tau : {0.05, 0.1})
    for (bool per_sample : {false, true})
      batch_rows.push_back({std::string(per_sample ? "per-sample decisions" : "batch-wide decisions (reference)") +
                                ", τ=" + format(tau, "%g"),
                            tau, per_sample, {}, 0});
  std::ofstream batch_csv(out_dir + "/quality_batch.csv");
  batch_csv << "method,batch,digit,seed,guidance,model_calls,psnr\n";
  std::printf("\nmixed batches of %zu samples: batch-wide against per-sample decisions\n", batch);
  const std::vector<double> sigmas_b = dit::shifted_sigmas(steps, settings.shift);
  enum class batch_mode { uncached, batch_wide, per_sample };
  for (std::size_t first = 0; first + batch <= references.size(); first += batch) {
    // One batched generation; returns the clips, counts the model calls per sample.
    auto generate = [&](batch_mode mode, double tau, std::vector<std::size_t>& calls) {
      easycache::config cfg = easycache::config::wan21(steps);
      cfg.threshold = tau;
      cfg.warmup_steps = steps / 5;
      Eigen::VectorXf x(static_cast<Eigen::Index>(batch * latent)), v_cond(x.size()), v_uncond(x.size());
      for (std::size_t s = 0; s < batch; ++s)
        x.segment(static_cast<Eigen::Index>(s * latent), static_cast<Eigen::Index>(latent)) =
            dit::gaussian_noise(latent, references[first + s].seed);
      calls.assign(batch, 0);
      Eigen::VectorXf one(static_cast<Eigen::Index>(latent));
      // The model on sample s of `in` into sample s of `out`, for branch `branch`.
      auto model_on = [&](std::size_t s, std::size_t branch, double sigma, const float* in, float* out) {
        const auto n = static_cast<Eigen::Index>(latent);
        Eigen::Map<const Eigen::VectorXf> input(in + s * latent, n);
        Eigen::Map<Eigen::VectorXf> output(out + s * latent, n);
        model.forward(input, static_cast<float>(sigma), branch == 0 ? references[first + s].digit : model.null_class(),
                      one);
        output = one;
        ++calls[s];
      };
      easycache::controller<easycache::host_buffer<float>> whole(cfg);
      easycache::batch_controller<easycache::host_buffer<float>> each(cfg, batch);
      for (std::size_t i = 0; i < steps; ++i) {
        for (std::size_t branch = 0; branch < 2; ++branch) {
          Eigen::VectorXf& v = branch == 0 ? v_cond : v_uncond;
          const easycache::step_info info{i, sigmas_b[i], branch};
          if (mode == batch_mode::uncached) {
            for (std::size_t s = 0; s < batch; ++s) model_on(s, branch, sigmas_b[i], x.data(), v.data());
          } else if (mode == batch_mode::batch_wide) {
            easycache::host_buffer<float> xb{x.data(), static_cast<std::size_t>(x.size())},
                vb{v.data(), static_cast<std::size_t>(v.size())};
            whole.step(xb, vb, info, [&](const easycache::host_buffer<float>& in, easycache::host_buffer<float>& out) {
              for (std::size_t s = 0; s < batch; ++s) model_on(s, branch, sigmas_b[i], in.data, out.data);
            });
          } else {
            std::vector<easycache::host_buffer<float>> xs, vs;
            for (std::size_t s = 0; s < batch; ++s) {
              xs.push_back({x.data() + s * latent, latent});
              vs.push_back({v.data() + s * latent, latent});
            }
            each.step(xs, vs, info, [&](const std::vector<bool>& mask) {
              for (std::size_t s = 0; s < batch; ++s)
                if (mask[s]) model_on(s, branch, sigmas_b[i], x.data(), v.data());
            });
          }
        }
        const float dt = static_cast<float>(sigmas_b[i + 1] - sigmas_b[i]);
        for (std::size_t s = 0; s < batch; ++s) {
          const auto at = static_cast<Eigen::Index>(s * latent), n = static_cast<Eigen::Index>(latent);
          x.segment(at, n) += dt * (v_uncond.segment(at, n) +
                                    batch_guidance[s] * (v_cond.segment(at, n) - v_uncond.segment(at, n)));
        }
      }
      return x;
    };
    std::vector<std::size_t> calls;
    const Eigen::VectorXf uncached = generate(batch_mode::uncached, 0.0, calls);
    for (batch_summary& row : batch_rows) {
      const Eigen::VectorXf x = generate(row.per_sample ? batch_mode::per_sample : batch_mode::batch_wide, row.tau, calls);
      for (std::size_t s = 0; s < batch; ++s) {
        const auto at = static_cast<Eigen::Index>(s * latent), n = static_cast<Eigen::Index>(latent);
        const double p = dit::psnr(x.segment(at, n), uncached.segment(at, n));
        row.psnr.push_back(p);
        row.sample_calls += calls[s];
        batch_csv << '"' << row.name << "\"," << first / batch << ',' << references[first + s].digit << ','
                  << references[first + s].seed << ',' << batch_guidance[s] << ',' << calls[s] << ',' << p << '\n';
      }
    }
    std::printf("  batch %zu of %zu done\n", first / batch + 1, references.size() / batch);
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
  table << "\nMixed batches of " << batch << " requests (" << references.size() / batch
        << " batches; different digits, seeds and guidance scales 1.5, 3, 5, 8 in one latent batch), Wan2.1 settings "
        << "otherwise. Batch-wide: one controller on "
        << "the whole batch, its statistics over all samples (the reference). Per sample: batch_controller, the model "
        << "run only on the samples whose own statistics ask for it. Model calls per sample (of " << 2 * steps
        << "), PSNR against each sample's uncached clip (same guidance).\n\n";
  table << "| decisions | model calls per sample | PSNR mean (dB) | PSNR worst (dB) |\n|---|---:|---:|---:|\n";
  std::printf("\n%s %22s %10s %11s\n", padded("decisions", 44).c_str(), "model calls per sample", "PSNR mean",
              "PSNR worst");
  for (const batch_summary& row : batch_rows) {
    const double n = static_cast<double>(row.psnr.size());
    double psnr_mean = 0;
    for (double p : row.psnr) psnr_mean += p / n;
    const double psnr_worst = *std::min_element(row.psnr.begin(), row.psnr.end());
    const double calls_per_sample = static_cast<double>(row.sample_calls) / n;
    table << "| " << row.name << " | " << format(calls_per_sample, "%.1f") << " | " << format(psnr_mean, "%.1f")
          << " | " << format(psnr_worst, "%.1f") << " |\n";
    std::printf("%s %22.1f %10s %11s\n", padded(row.name, 44).c_str(), calls_per_sample,
                format(psnr_mean, "%.1f").c_str(), format(psnr_worst, "%.1f").c_str());
  }
  std::printf("\nwrote %s/quality.md, quality.csv, quality_steps.csv, quality_patterns.csv, quality_batch.csv\n",
              out_dir.c_str());
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
