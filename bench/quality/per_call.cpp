// bench/quality/per_call: quality at equal denoiser calls, the comparison a user
// makes before choosing a cache. On the trained video DiT (models/, docs/model.md),
// for Euler (HunyuanVideo's solver) and UniPC (Wan2.1's, order 2, bh2), at 2×, 3×
// and 4× fewer calls than the 50-step sampler, every method below runs the same 20
// samples (10 digits × 2 seeds) and is compared with the uncached clip of the same
// solver:
//
//   - fewer steps: the same solver with 50/s steps;
//   - static cache: the first and last steps computed, the rest spread evenly;
//     a skipped step returns x + Δ as EasyCache does;
//   - TaylorSeer-style: the same steps, a skipped step returns the first-order
//     Taylor forecast of the output from the last two computed ones, in the step
//     index (as diffusers' and cache-dit's TaylorSeer do at order 1);
//   - EasyCache, the reference rule (config::wan21);
//   - EasyCache with the linear predictor (reference rule otherwise);
//   - easycache's quality mode (config::quality): the linear predictor,
//     error_estimate::predictor_residual and a warm-up of 10 % of the steps; the
//     same with the reference's ε, and with a window in sigma in place of the warm-up.
//
// The fixed-schedule methods hit the calls exactly. The adaptive ones are set as a
// user sets them for a speed: τ such that the mean calls of the first seed's 10
// samples are the fixed schedules' calls (within 2 %, by regula falsi on log τ),
// then used on all 20; the table shows the calls each method really made.
//
//   quality_per_call [--model PATH] [--out DIR] [--seeds N] [--steps N]
//
// Writes DIR/quality_per_call.md (the table), quality_per_call.csv (every run) and
// quality_per_call_errors.csv (per step of one sample at 3×: the accumulated E each
// decision saw, the error each skipped step really made — the model run again
// on its input, outside the count — and the trace's realized_error of the
// computed steps, for plot.py).
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
#include <string>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

#include "format.hpp"
#include "../../examples/dit/dit.hpp"
#include "../../examples/dit/metrics.hpp"
#include "../../examples/dit/sampler.hpp"

#ifndef EASYCACHE_MODEL_PATH
#define EASYCACHE_MODEL_PATH "models/digits_dit.bin"
#endif

namespace {

using vector = Eigen::VectorXf;

/// `computed_steps` of `steps`: the first and the last, and the rest spread evenly between.
std::vector<bool> even_schedule(std::size_t steps, std::size_t computed_steps) {
  std::vector<bool> computed(steps, false);
  computed.front() = computed.back() = true;
  const std::size_t inner = steps - 2, extra = computed_steps > 2 ? computed_steps - 2 : 0;
  for (std::size_t j = 0; j < extra && j < inner; ++j) {
    const double at = (static_cast<double>(j) + 0.5) * static_cast<double>(inner) / static_cast<double>(extra);
    computed[1 + std::min(inner - 1, static_cast<std::size_t>(at))] = true;
  }
  return computed;
}

struct sample {
  std::size_t digit, seed;
};

struct run {
  vector clip;
  std::size_t calls = 0;
};

/// A fixed-schedule cache that forecasts each branch's output from its last two
/// computed ones, to first order in the step index (TaylorSeer at order 1).
class taylor_forecast {
 public:
  explicit taylor_forecast(std::vector<bool> computed) : computed_(std::move(computed)) {}

  template <class Denoiser>
  void operator()(const easycache::step_info& info, const vector& x, vector& v, Denoiser& denoiser) {
    branch& b = branches_[info.branch];
    if (computed_[info.index] || b.outputs == 0) {
      denoiser(x, v, info);
      b.previous = b.last;
      b.previous_step = b.last_step;
      b.last = v;
      b.last_step = info.index;
      ++b.outputs;
    } else if (b.outputs == 1) {
      v = b.last;
    } else {
      const float ahead = static_cast<float>(info.index - b.last_step) / static_cast<float>(b.last_step - b.previous_step);
      v = b.last + ahead * (b.last - b.previous);
    }
  }

 private:
  struct branch {
    vector last, previous;
    std::size_t last_step = 0, previous_step = 0, outputs = 0;
  };
  std::vector<bool> computed_;
  branch branches_[2];
};

struct method {
  std::string name;
  std::string note;  // how it was matched to the calls
  std::vector<double> psnr, ssim;
  double calls = 0;
};

using bench::format;

int run_bench(int argc, char** argv) {
  std::string model_path = EASYCACHE_MODEL_PATH, out_dir = "bench/results";
  std::size_t seeds = 2, steps = 50;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--model" && i + 1 < argc) {
      model_path = argv[++i];
    } else if (arg == "--out" && i + 1 < argc) {
      out_dir = argv[++i];
    } else if (arg == "--seeds" && i + 1 < argc) {
      seeds = std::max<std::size_t>(1, std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--steps" && i + 1 < argc) {
      steps = std::max<std::size_t>(20, std::strtoul(argv[++i], nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: quality_per_call [--model PATH] [--out DIR] [--seeds N] [--steps N]\n");
      return 2;
    }
  }
  dit::model model(model_path, model_path + ".sha256");
  const dit::dimensions& d = model.sizes();
  std::vector<sample> samples;
  for (std::size_t seed = 1; seed <= seeds; ++seed)
    for (std::size_t digit = 0; digit < d.classes; ++digit) samples.push_back({digit, seed});

  std::filesystem::create_directories(out_dir);
  std::ofstream runs_csv(out_dir + "/quality_per_call.csv");
  runs_csv << "solver,speedup,method,digit,seed,calls,psnr,ssim\n";
  std::ofstream errors_csv(out_dir + "/quality_per_call_errors.csv");
  errors_csv << "solver,method,step,action,accumulated_error,skip_error,trace_realized_error\n";
  std::ofstream table(out_dir + "/quality_per_call.md");
  table << "Trained video DiT (models/digits_dit.bin), " << samples.size() << " samples (" << d.classes
        << " digits × " << seeds << " seeds), " << steps << "-step schedules, shift 5, guidance 5, 2 calls a step. "
        << "PSNR / SSIM against the uncached " << steps << "-step clip of the same solver and sample. τ of the "
        << "adaptive rows: set, as a user sets it for a speed, so that the mean calls of the first seed's "
        << d.classes << " samples are the fixed schedules' calls (within 2 % where the rule can reach it), then "
        << "used on all; "
        << "calls: the mean all the samples really made (of " << 2 * steps << "), flagged when more than 5 % "
        << "off the target.\n";
  std::printf("quality_per_call: %zu samples, %zu steps, Euler and UniPC at 2x, 3x and 4x fewer calls\n",
              samples.size(), steps);
  const auto started = std::chrono::steady_clock::now();

  for (dit::solver solver : {dit::solver::euler, dit::solver::unipc}) {
    dit::sampler_settings settings;
    settings.steps = steps;
    settings.method = solver;
    dit::sampler sampler(model, settings);
    std::vector<vector> references;
    for (const sample& s : samples) references.push_back(sampler.run(s.digit, s.seed));
    const std::vector<double>& sigmas = sampler.sigmas();

    // The configurations with a τ, before it is set.
    struct adaptive {
      std::string name;
      easycache::config cfg;
    };
    std::vector<adaptive> adaptives;
    adaptives.push_back({"EasyCache, reference rule", easycache::config::wan21(steps)});
    easycache::config linear = easycache::config::wan21(steps);
    linear.predictor = easycache::skip_predictor::linear_in_timestep;
    adaptives.push_back({"EasyCache, linear predictor", linear});
    adaptives.push_back({"easycache quality mode (config::quality)", easycache::config::quality(steps)});
    easycache::config drift = easycache::config::quality(steps);
    drift.estimate = easycache::error_estimate::output_drift;
    adaptives.push_back({"↳ with the reference's ε (error_estimate::output_drift)", drift});
    easycache::config windowed = easycache::config::quality(steps);
    // Computed while sigma > 0.975 (the first 6 of 50 steps at shift 5) and at the last step.
    windowed.window = easycache::schedule_window{0.0, 1.0};
    windowed.window_sigma = easycache::sigma_window{easycache::sigma_map::given, 1.0, 0.975, sigmas[steps - 1] * 1.01};
    adaptives.push_back({"↳ with a window in sigma (0.975, σ_last] for the warm-up", windowed});

    std::vector<double> previous_tau(adaptives.size(), 0.0);
    // τ is searched on the first seed's samples (half the runs), then used on all.
    const std::size_t calibration = std::min(samples.size(), d.classes);
    for (std::size_t speedup : {std::size_t{2}, std::size_t{3}, std::size_t{4}}) {
      const std::size_t computed_steps = (steps + speedup / 2) / speedup;
      // The calls of the fixed-schedule methods (2 a computed step): 50, 34 and 26 of 100,
      // within 4 % of 2x, 3x and 4x; the adaptive rows are set to the same calls.
      const double target_calls = 2.0 * static_cast<double>(computed_steps);
      std::vector<method> methods;
      auto evaluate = [&](method m, const std::function<run(const sample&)>& generate) {
        for (std::size_t j = 0; j < samples.size(); ++j) {
          const run r = generate(samples[j]);
          const double p = dit::psnr(r.clip, references[j]);
          const double q = dit::ssim(r.clip, references[j], d.frames, d.height, d.width);
          m.psnr.push_back(p);
          m.ssim.push_back(q);
          m.calls += static_cast<double>(r.calls) / static_cast<double>(samples.size());
          runs_csv << dit::name_of(solver) << ',' << speedup << ",\"" << m.name << "\"," << samples[j].digit << ','
                   << samples[j].seed << ',' << r.calls << ',' << p << ',' << q << '\n';
        }
        methods.push_back(m);
      };

      dit::sampler_settings fewer = settings;
      fewer.steps = computed_steps;
      dit::sampler short_sampler(model, fewer);
      evaluate((method{"fewer steps (" + std::to_string(computed_steps) + ")", "", {}, {}, 0}),
               [&](const sample& s) {
                 vector clip = short_sampler.run(s.digit, s.seed);
                 return run{clip, short_sampler.calls()};
               });
      const std::vector<bool> schedule = even_schedule(steps, computed_steps);
      easycache::config fixed_cfg = easycache::config::wan21(steps);
      fixed_cfg.warmup_steps = 1;
      evaluate((method{"static cache", "", {}, {}, 0}), [&](const sample& s) {
        easycache::controller<vector, easycache::step_mask_policy> fixed(fixed_cfg,
                                                                          easycache::step_mask_policy(schedule));
        vector clip = sampler.run(s.digit, s.seed, fixed);
        return run{clip, sampler.calls()};
      });
      evaluate((method{"TaylorSeer-style (order 1)", "", {}, {}, 0}), [&](const sample& s) {
        taylor_forecast forecast(schedule);
        vector clip = sampler.run_custom(s.digit, s.seed, forecast);
        return run{clip, sampler.calls()};
      });

      for (std::size_t a_index = 0; a_index < adaptives.size(); ++a_index) {
        const adaptive& a = adaptives[a_index];
        // τ is the speed knob: set, as a user would, so that these samples' mean
        // calls are the target, then their quality read off the same runs.
        // Regula falsi (Illinois) on log τ, mean calls falling as τ grows, from a
        // bracket around the τ this method took at the previous speedup.
        struct attempt {
          double tau = 0, calls = 0;
          std::vector<run> runs;
        };
        auto attempt_at = [&](double log_tau) {
          attempt t;
          t.tau = std::exp(log_tau);
          easycache::config cfg = a.cfg;
          cfg.threshold = t.tau;
          for (std::size_t j = 0; j < calibration; ++j) {
            easycache::controller<vector> cache(cfg);
            vector clip = sampler.run(samples[j].digit, samples[j].seed, cache);
            t.runs.push_back(run{std::move(clip), sampler.calls()});
            t.calls += static_cast<double>(sampler.calls()) / static_cast<double>(calibration);
          }
          return t;
        };
        const double tolerance = 0.02 * target_calls;
        double low = previous_tau[a_index] > 0 ? std::log(previous_tau[a_index]) : std::log(1e-3);
        double high = low + std::log(1e3);
        attempt at_low = attempt_at(low), at_high = attempt_at(high), best = at_low;
        auto consider = [&](const attempt& t) {
          if (std::abs(t.calls - target_calls) < std::abs(best.calls - target_calls)) best = t;
        };
        consider(at_high);
        for (int widen = 0; widen < 4 && at_low.calls < target_calls; ++widen) {
          low -= std::log(1e2);
          at_low = attempt_at(low);
          consider(at_low);
        }
        double f_low = at_low.calls - target_calls, f_high = at_high.calls - target_calls;
        int side = 0;
        for (int iteration = 0; iteration < 12 && std::abs(best.calls - target_calls) > tolerance; ++iteration) {
          if (f_low * f_high > 0) break;  // the target is out of this method's reach
          const double middle = (low * f_high - high * f_low) / (f_high - f_low);
          attempt t = attempt_at(middle);
          consider(t);
          const double f = t.calls - target_calls;
          if (f > 0) {
            low = middle;
            f_low = f;
            if (side == -1) f_high /= 2;
            side = -1;
          } else {
            high = middle;
            f_high = f;
            if (side == 1) f_low /= 2;
            side = 1;
          }
        }
        previous_tau[a_index] = best.tau;
        easycache::config cfg = a.cfg;
        cfg.threshold = best.tau;
        std::size_t next = 0;
        evaluate((method{a.name, "τ " + format(best.tau, "%.3g"), {}, {}, 0}), [&](const sample& s) {
          if (next < best.runs.size()) return best.runs[next++];  // the calibration samples' runs at this τ
          easycache::controller<vector> cache(cfg);
          vector clip = sampler.run(s.digit, s.seed, cache);
          return run{clip, sampler.calls()};
        });
        // Predicted against realized, on the first sample at 3×: each step of the
        // cached run again, uncached, for what the model would have returned.
        if (speedup == 3 && (a.name.rfind("EasyCache, ref", 0) == 0 || a.name.rfind("easycache quality", 0) == 0)) {
          easycache::controller<vector> cache(cfg);
          std::vector<double> realized(steps, std::numeric_limits<double>::quiet_NaN());
          vector truth(references[0].size());
          sampler.run_custom(samples[0].digit, samples[0].seed,
                             [&](const easycache::step_info& info, const vector& x, vector& v, auto& denoiser) {
                               cache.step(x, v, info, denoiser);
                               if (info.branch != 0) return;
                               model.forward(x, static_cast<float>(info.timestep), samples[0].digit, truth);
                               realized[info.index] = (v - truth).cwiseAbs().mean() / truth.cwiseAbs().mean();
                             });
          for (const easycache::step_record& r : cache.trace()) {
            if (r.branch != 0) continue;
            errors_csv << dit::name_of(solver) << ",\"" << a.name << "\"," << r.step << ','
                       << (r.action == easycache::action::skip ? "skip" : "compute") << ',' << r.accumulated_error
                       << ',' << realized[r.step] << ',' << r.realized_error << '\n';
          }
        }
      }

      table << "\n**" << dit::name_of(solver) << ", " << speedup << "× fewer calls** (target " << format(target_calls, "%.0f")
            << " calls: " << format(2.0 * static_cast<double>(steps) / target_calls, "%.2f") << "×)\n\n| method | calls | PSNR mean (dB) | PSNR worst (dB) | SSIM mean | SSIM worst | matched by |\n"
            << "|---|---:|---:|---:|---:|---:|---|\n";
      std::printf("\n%s, %zux fewer calls (%.1f)\n", dit::name_of(solver), speedup, target_calls);
      for (const method& m : methods) {
        const double n = static_cast<double>(m.psnr.size());
        double psnr_mean = 0, ssim_mean = 0;
        for (double p : m.psnr) psnr_mean += p / n;
        for (double q : m.ssim) ssim_mean += q / n;
        const double psnr_worst = *std::min_element(m.psnr.begin(), m.psnr.end());
        const double ssim_worst = *std::min_element(m.ssim.begin(), m.ssim.end());
        const bool off = std::abs(m.calls - target_calls) > 0.05 * target_calls;
        table << "| " << m.name << " | " << format(m.calls, "%.1f") << (off ? " (off by > 5 %)" : "") << " | "
              << format(psnr_mean, "%.1f") << " | " << format(psnr_worst, "%.1f") << " | "
              << format(ssim_mean, "%.4f") << " | " << format(ssim_worst, "%.4f") << " | "
              << (m.note.empty() ? "its schedule" : m.note) << " |\n";
        std::printf("  %-58s %6.1f %7.1f %7.1f %8.4f %8.4f  %s\n", m.name.c_str(), m.calls, psnr_mean, psnr_worst,
                    ssim_mean, ssim_worst, m.note.c_str());
      }
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::printf("  (%.0f s so far)\n", elapsed);
      std::fflush(stdout);
    }
  }
  std::printf("\nwrote %s/quality_per_call.md, quality_per_call.csv, quality_per_call_errors.csv\n", out_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quality_per_call: %s\n", e.what());
    return 1;
  }
}
