// The threading contract (docs/design.md, "Threads"): independent controllers
// run concurrently in independent threads, and give the results of the same
// runs done one after another; one controller that no thread mutates may be
// read from several at once. scripts/test.sh also builds this program alone
// under ThreadSanitizer, which fails on any data race between the threads.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>
#include <easycache/backends/host_buffer.hpp>

#include "helpers.hpp"

namespace {

// A latent of `size` elements that a controller can take as a Tensor.
template <class Tensor>
struct latent;

template <class S>
struct latent<Eigen::Matrix<S, Eigen::Dynamic, 1>> {
  explicit latent(std::size_t size) : value(static_cast<Eigen::Index>(size)) {}
  Eigen::Matrix<S, Eigen::Dynamic, 1>& tensor() { return value; }
  Eigen::Matrix<S, Eigen::Dynamic, 1> value;
};

template <class S>
struct latent<easycache::host_buffer<S>> {
  explicit latent(std::size_t size) : memory(size), view{memory.data(), size} {}
  // A copy would view the original's memory; a move keeps it (and the view).
  latent(const latent&) = delete;
  latent& operator=(const latent&) = delete;
  latent(latent&&) noexcept = default;
  latent& operator=(latent&&) noexcept = default;
  easycache::host_buffer<S>& tensor() { return view; }
  std::vector<S> memory;
  easycache::host_buffer<S> view;
};

// What a run leaves behind, compared bit for bit.
struct run_result {
  std::vector<double> final_latents;  // each generation's last latent
  std::vector<double> measured;       // each trace record's statistics, every generation
  std::string patterns;               // each generation's decisions, branch by branch
  std::size_t calls = 0;              // denoiser calls, every generation
};

// Whole generations of a two-branch sampler on one controller: x moves a fifth
// of the way to a guided combination of the branch outputs each step. The
// denoisers are smooth in x and the timestep, so that steps are skipped.
template <class Tensor>
run_result run_generations(const easycache::config& cfg, std::size_t size, std::size_t generations, double seed) {
  using traits = easycache::tensor_traits<Tensor>;
  using S = std::remove_cv_t<std::remove_pointer_t<decltype(traits::data(std::declval<Tensor&>()))>>;
  latent<Tensor> x(size);
  std::vector<latent<Tensor>> outs;
  outs.reserve(cfg.branches);
  for (std::size_t b = 0; b < cfg.branches; ++b) outs.emplace_back(size);
  easycache::controller<Tensor> cache(cfg);
  run_result result;
  for (std::size_t g = 0; g < generations; ++g) {
    S* xs = traits::data(x.tensor());
    for (std::size_t i = 0; i < size; ++i)
      xs[i] = static_cast<S>(std::sin(seed + 0.05 * double(i) + 0.7 * double(g)));
    for (std::size_t t = 0; t < cfg.steps; ++t) {
      const double timestep = 1.0 - double(t) / double(cfg.steps);
      for (std::size_t b = 0; b < cfg.branches; ++b)
        cache.step(x.tensor(), outs[b].tensor(), {t, timestep, b}, [&](const Tensor& in, Tensor& v) {
          const auto* from = traits::data(in);
          S* to = traits::data(v);
          for (std::size_t i = 0; i < size; ++i) {
            const double drift = std::cos(seed + 0.01 * double(i) + 0.3 * timestep);
            const double xi = double(from[i]);
            to[i] = static_cast<S>(b == 0 ? 0.8 * xi + drift : -0.5 * xi + 0.25 * drift);
          }
        });
      xs = traits::data(x.tensor());
      for (std::size_t i = 0; i < size; ++i) {
        double guided = 0;
        for (std::size_t b = 0; b < cfg.branches; ++b)
          guided += (b == 0 ? 1.0 : 0.3) * double(traits::data(outs[b].tensor())[i]);
        xs[i] = static_cast<S>(double(xs[i]) + 0.2 * (guided - double(xs[i])));
      }
    }
    result.final_latents.insert(result.final_latents.end(), xs, xs + size);
    for (const easycache::step_record& r : cache.trace())
      result.measured.insert(result.measured.end(),
                             {r.input_change, r.transformation_rate, r.output_norm, r.accumulated_error});
    for (std::size_t b = 0; b < cfg.branches; ++b) result.patterns += test::pattern(cache.trace(), b) + "/";
    result.calls += cache.stats().calls;
  }
  return result;
}

easycache::config base_config() {
  easycache::config cfg;
  cfg.steps = 24;
  cfg.warmup_steps = 3;
  cfg.threshold = 0.3;
  cfg.branches = 2;
  return cfg;
}

// Equal bit for bit (the NaN statistics of forced steps included).
bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

using job = std::function<run_result()>;

// Runs every job in a thread of its own, all released at once; an exception
// from a job is rethrown here after every thread has joined.
template <class Result>
std::vector<Result> run_concurrently(const std::vector<std::function<Result()>>& jobs) {
  std::vector<Result> results(jobs.size());
  std::vector<std::exception_ptr> failures(jobs.size());
  std::atomic<std::size_t> waiting{jobs.size()};
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < jobs.size(); ++k)
    threads.emplace_back([&, k] {
      // A start barrier, so that the generations overlap rather than run in turn.
      waiting.fetch_sub(1);
      while (waiting.load() != 0) std::this_thread::yield();
      try {
        results[k] = jobs[k]();
      } catch (...) {
        failures[k] = std::current_exception();
      }
    });
  for (std::thread& thread : threads) thread.join();
  for (const std::exception_ptr& failure : failures)
    if (failure) std::rethrow_exception(failure);
  return results;
}

void check_same_results(const std::vector<job>& jobs) {
  std::vector<run_result> sequential;
  for (const job& j : jobs) sequential.push_back(j());
  const std::vector<run_result> concurrent = run_concurrently(jobs);
  for (std::size_t k = 0; k < jobs.size(); ++k) {
    INFO("job " << k << ": " << sequential[k].patterns);
    // Skipped steps, or the cached passes would go untested.
    REQUIRE(sequential[k].patterns.find('S') != std::string::npos);
    CHECK(concurrent[k].patterns == sequential[k].patterns);
    CHECK(concurrent[k].calls == sequential[k].calls);
    CHECK(same_bits(concurrent[k].measured, sequential[k].measured));
    CHECK(same_bits(concurrent[k].final_latents, sequential[k].final_latents));
  }
}

constexpr std::size_t latent_size = 1031;  // a whole block of the host passes, and tails
constexpr std::size_t generations = 3;

}  // namespace

TEST_CASE("controllers over Eigen and host buffers in four threads give the sequential results", "[threads]") {
  easycache::config sampled = base_config();
  sampled.sampling.stride = 3;
  sampled.input_change = easycache::input_change_reference::last_compute;
  easycache::config linear = base_config();
  linear.predictor = easycache::skip_predictor::linear_in_timestep;
  easycache::config last_output = base_config();
  last_output.predictor = easycache::skip_predictor::last_output;
  check_same_results({
      [] { return run_generations<Eigen::VectorXf>(base_config(), latent_size, generations, 0.0); },
      [&] { return run_generations<Eigen::VectorXd>(sampled, latent_size, generations, 1.0); },
      [&] { return run_generations<easycache::host_buffer<float>>(linear, latent_size, generations, 2.0); },
      [&] { return run_generations<easycache::host_buffer<double>>(last_output, latent_size, generations, 3.0); },
  });
}

TEST_CASE("four controllers of one tensor type and configuration in four threads give the sequential results",
          "[threads]") {
  // The same instantiation everywhere: state shared by it (a static, a cache)
  // would be shared by the threads.
  std::vector<job> jobs;
  for (double seed : {0.0, 0.5, 1.0, 1.5})
    jobs.push_back([seed] { return run_generations<easycache::host_buffer<float>>(base_config(), latent_size,
                                                                                 generations, seed); });
  check_same_results(jobs);
}

TEST_CASE("one controller that no thread mutates is read from four threads at once", "[threads]") {
  using tensor = Eigen::VectorXf;
  easycache::controller<tensor> cache(base_config());
  tensor x = tensor::Constant(static_cast<Eigen::Index>(latent_size), 1.0f), out;
  for (std::size_t t = 0; t < base_config().steps; ++t) {
    for (std::size_t b = 0; b < base_config().branches; ++b)
      cache.step(x, out, {t, 0.0, b}, [](const tensor& in, tensor& v) { v = in * 0.8f + tensor::Ones(in.size()); });
    x = x + 0.2f * (out - x);
  }
  const std::string expected = test::pattern(cache.trace());
  const std::size_t expected_calls = cache.stats().calls;
  REQUIRE(expected.find('S') != std::string::npos);
  struct observed {
    std::string pattern;
    std::size_t calls = 0;
    double threshold = 0;
  };
  const easycache::controller<tensor>& shared = cache;
  const std::vector<std::function<observed()>> readers(4, [&shared] {
    observed seen;
    for (int pass = 0; pass < 50; ++pass) {
      seen.pattern = test::pattern(shared.trace());
      seen.calls = shared.stats().calls;
      seen.threshold = shared.configuration().threshold;
    }
    return seen;
  });
  for (const observed& seen : run_concurrently(readers)) {
    CHECK(seen.pattern == expected);
    CHECK(seen.calls == expected_calls);
    CHECK(seen.threshold == base_config().threshold);
  }
}
