// Fuzz target: random configurations, trajectories and denoiser behaviours
// drive easycache::controller, and a model of its documented contract checks
// every call. Built with libFuzzer (EASYCACHE_BUILD_FUZZERS, clang) and, for
// replaying the committed corpus, as a plain program with any compiler.
//
// What the input decodes into: a backend (Eigen VectorXd / VectorXf, host_buffer
// of double / float); a configuration (steps, warm-up, τ including 0, tiny, huge,
// +inf, NaN, negative; branches 0–3; the variants; invalid ones too); then a
// sequence of operations: steps in order, out of order, past the end, for
// missing or repeated branches; inputs of 0, 1 or more elements, changing size,
// with NaN, ±Inf, 0, huge, the largest finite and denormal values; outputs of
// the wrong size, without memory, or sharing memory with the input; NaN or
// infinite timesteps and progress; denoisers that work, throw, return the wrong
// size, NaN, Inf, huge or denormal values; reset(), reset(config) (valid or
// not), and decision callbacks that throw.
//
// Invariants (a violation aborts with a message):
//  - only easycache::error, the denoiser's own exception and the callback's own
//    exception leave step(); an easycache::error comes exactly when the model
//    says the call is invalid, and then nothing changed;
//  - after the denoiser throws, nothing changed (at step 0 the new generation has
//    started: no steps counted yet);
//  - forced steps (warm-up, last step, outside the window) call the denoiser;
//  - a skip needs two computed anchor steps (anchor) or a computed step of that
//    branch in the generation (other branches), follows the anchor's decision,
//    and returns exactly x + (v − x) of that branch's last computed step; it is
//    finite whenever the generation's inputs and denoiser outputs were finite and
//    not within a factor 4 of overflow;
//  - the trace records agree with the decision (reason, E against τ, degenerate
//    statistics exactly when dx, k or ‖v‖ is unusable), and a decision's dx and
//    ‖v‖ are the means over the sampled elements (recomputed in double);
//  - statistics add up: evaluations = calls + skips = trace records, steps = the
//    anchor's records = the sum over reasons, and they equal the model's counts.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <easycache/easycache.hpp>
#include <easycache/eigen.hpp>
#include <easycache/host_buffer.hpp>

#include "fuzz_check.hpp"
#include "fuzz_input.hpp"

namespace {

using fuzz::context;

// What the inputs exercised, for the replay program's summary.
struct tally {
  std::size_t runs = 0, calls = 0, computed = 0, skipped = 0, forced = 0, refused = 0, denoiser_threw = 0,
              callback_threw = 0, configs_refused = 0, resets = 0, statistics_checked = 0;
} seen;

struct denoiser_failure {};  // what the fuzzed denoiser throws
struct callback_failure {};  // what the fuzzed decision callback throws

using easycache::action;
using easycache::reason;

// ---- tensors: the same harness drives owning Eigen vectors and host views ----

template <class Scalar>
struct eigen_backend {
  using scalar = Scalar;
  using tensor = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  static constexpr bool owning = true;

  struct holder {
    tensor t;
    std::vector<Scalar> storage;  // unused: Eigen owns its elements
  };
  static void make(holder& h, const std::vector<Scalar>& values, bool) {
    h.t.resize(static_cast<Eigen::Index>(values.size()));
    for (std::size_t i = 0; i < values.size(); ++i) h.t(static_cast<Eigen::Index>(i)) = values[i];
  }
  static void make_output(holder& h, std::size_t n) {
    h.t = tensor::Constant(static_cast<Eigen::Index>(n), std::numeric_limits<Scalar>::quiet_NaN());
  }
  static std::size_t size(const tensor& t) { return static_cast<std::size_t>(t.size()); }
  static Scalar get(const tensor& t, std::size_t i) { return t(static_cast<Eigen::Index>(i)); }
  static void set(tensor& t, std::size_t i, Scalar v) { t(static_cast<Eigen::Index>(i)) = v; }
  // The denoiser makes its output `n` elements long (the controller sized it already).
  static void resize(tensor& t, std::size_t n) { t.conservativeResize(static_cast<Eigen::Index>(n)); }
};

template <class Scalar>
struct host_backend {
  using scalar = Scalar;
  using tensor = easycache::host_buffer<Scalar>;
  static constexpr bool owning = false;

  struct holder {
    tensor t;
    std::vector<Scalar> storage;
  };
  static void make(holder& h, const std::vector<Scalar>& values, bool null_data) {
    h.storage = values;
    h.t = tensor{null_data ? nullptr : h.storage.data(), values.size()};
  }
  static void make_output(holder& h, std::size_t n) {
    h.storage.assign(n, std::numeric_limits<Scalar>::quiet_NaN());
    h.t = tensor{h.storage.data(), n};
  }
  // An output without memory, or one that overlaps x's elements from `offset` on
  // (x's storage grows so that the view stays inside it).
  static void null_output(holder& h, std::size_t n) { h.t = tensor{nullptr, n}; }
  static void overlapping_output(holder& x, holder& h, std::size_t offset) {
    const std::size_t n = x.t.size;
    x.storage.resize(2 * n + 1, Scalar(0));
    x.t.data = x.storage.data();
    h.t = tensor{x.storage.data() + offset, n};
  }
  static std::size_t size(const tensor& t) { return t.size; }
  static Scalar get(const tensor& t, std::size_t i) { return t.data[i]; }
  static void set(tensor& t, std::size_t i, Scalar v) { t.data[i] = v; }
  // A view cannot grow: it claims another size, which the controller must refuse.
  static void resize(tensor& t, std::size_t n) { t.size = n; }
};

// ---- values ----

template <class Scalar>
constexpr Scalar huge() {
  return std::is_same_v<Scalar, float> ? Scalar(1e38f) : Scalar(5e307);
}

// Below this magnitude x + (v − x_c) cannot overflow (|x|, |v|, |x_c| ≤ bound).
template <class Scalar>
bool bounded(Scalar v) {
  return std::abs(v) <= std::numeric_limits<Scalar>::max() / 4;
}

template <class Scalar>
Scalar special_value(fuzz::input& in) {
  using limits = std::numeric_limits<Scalar>;
  switch (in.choice(12)) {
    case 0: return Scalar(0);
    case 1: return -Scalar(0);
    case 2: return limits::quiet_NaN();
    case 3: return limits::infinity();
    case 4: return -limits::infinity();
    case 5: return huge<Scalar>();
    case 6: return -huge<Scalar>();
    case 7: return limits::denorm_min() * Scalar(in.integer<int>(1, 1000));
    case 8: return -limits::denorm_min();
    case 9: return limits::min();  // smallest normal
    case 10: return in.flag() ? limits::max() : limits::lowest();
    default: return Scalar(in.integer<int>(-4000, 4000)) / Scalar(1000);
  }
}

double threshold_value(fuzz::input& in) {
  switch (in.choice(12)) {
    case 0: return 0.0;
    case 1: return std::numeric_limits<double>::denorm_min();
    case 2: return 1e-30;
    case 3: return 0.025;
    case 4: return 0.05;
    case 5: return 0.2;
    case 6: return 1e300;
    case 7: return std::numeric_limits<double>::infinity();
    case 8: return std::numeric_limits<double>::quiet_NaN();
    case 9: return in.flag() ? -0.1 : -0.0;
    case 10: return -std::numeric_limits<double>::infinity();
    default: return in.fraction() * 2.0;
  }
}

double window_bound(fuzz::input& in) {
  switch (in.choice(9)) {
    case 0: return 0.0;
    case 1: return 0.15;
    case 2: return 0.95;
    case 3: return 1.0;
    case 4: return std::numeric_limits<double>::quiet_NaN();
    case 5: return -0.1;
    case 6: return 1.5;
    case 7: return std::numeric_limits<double>::infinity();
    default: return in.fraction();
  }
}

std::size_t sampling_extent(fuzz::input& in) {
  switch (in.choice(8)) {
    case 0: return 0;
    case 1: return std::size_t{1} << 33;
    case 2: return std::size_t{1} << 63;
    case 3: return std::numeric_limits<std::size_t>::max();
    default: return in.integer<std::size_t>(1, 9);
  }
}

std::size_t stride_value(fuzz::input& in) {
  switch (in.choice(8)) {
    case 0: return 0;
    case 1: return 1;
    case 2: return std::size_t{1} << 54;
    case 3: return std::numeric_limits<std::size_t>::max();
    default: return in.integer<std::size_t>(1, 12);
  }
}

easycache::config fuzz_config(fuzz::input& in) {
  easycache::config c;
  switch (in.choice(6)) {
    case 0: c.steps = 0; break;
    case 1: c.steps = in.integer<std::size_t>(1, 3); break;
    case 2: c.steps = in.integer<std::size_t>(1, 100000); break;
    default: c.steps = in.integer<std::size_t>(1, 40); break;
  }
  c.warmup_steps = in.integer<std::size_t>(0, c.steps > 38 ? 40 : c.steps + 2);
  c.threshold = threshold_value(in);
  c.branches = in.integer<std::size_t>(0, 3);
  if (in.flag()) c.input_change = easycache::input_change_reference::last_compute;
  if (in.choice(3) == 0) c.window = easycache::schedule_window{window_bound(in), window_bound(in)};
  if (in.choice(3) == 0) c.sampling = easycache::statistics_sampling{stride_value(in), sampling_extent(in),
                                                                     sampling_extent(in)};
  c.record_trace = in.choice(4) != 0;
  c.measure_forced_steps = in.flag();
  return c;
}

std::string describe(const easycache::config& c) {
  std::string d = "threshold " + std::to_string(c.threshold) + ", steps " + std::to_string(c.steps) + ", warmup " +
                  std::to_string(c.warmup_steps) + ", branches " + std::to_string(c.branches) +
                  (c.input_change == easycache::input_change_reference::last_compute ? ", last_compute" : "");
  if (c.window) d += ", window " + std::to_string(c.window->start) + ".." + std::to_string(c.window->end);
  d += ", sampling " + std::to_string(c.sampling.stride) + "/" + std::to_string(c.sampling.height) + "x" +
       std::to_string(c.sampling.width);
  return d + (c.record_trace ? ", trace" : "") + (c.measure_forced_steps ? ", measure_forced" : "");
}

// The documented rules of config::validate(), restated.
bool valid(const easycache::config& c) {
  if (std::isnan(c.threshold) || c.threshold < 0) return false;
  if (c.steps == 0 || c.warmup_steps > c.steps || c.branches == 0) return false;
  if (c.window) {
    const double s = c.window->start, e = c.window->end;
    if (!(s >= 0 && s <= 1 && e >= 0 && e <= 1 && s <= e)) return false;
  }
  if (c.sampling.stride == 0) return false;
  if ((c.sampling.height == 0) != (c.sampling.width == 0)) return false;
  if (c.sampling.height != 0 && c.sampling.height > std::numeric_limits<std::size_t>::max() / c.sampling.width)
    return false;
  return true;
}

bool same_config(const easycache::config& a, const easycache::config& b) {
  auto same = [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); };
  if (!same(a.threshold, b.threshold) || a.warmup_steps != b.warmup_steps || a.steps != b.steps ||
      a.branches != b.branches || a.input_change != b.input_change || a.record_trace != b.record_trace ||
      a.measure_forced_steps != b.measure_forced_steps || a.window.has_value() != b.window.has_value() ||
      a.sampling.stride != b.sampling.stride || a.sampling.height != b.sampling.height ||
      a.sampling.width != b.sampling.width)
    return false;
  return !a.window || (same(a.window->start, b.window->start) && same(a.window->end, b.window->end));
}

bool same_stats(const easycache::statistics& a, const easycache::statistics& b) {
  return a.steps == b.steps && a.evaluations == b.evaluations && a.calls == b.calls && a.skips == b.skips &&
         a.reasons == b.reasons;
}

enum class behaviour { normal, throws, throws_after_writing, wrong_size, nan, infinite, huge, zero, denormal, count };

template <class Backend>
class harness {
  using Scalar = typename Backend::scalar;
  using Tensor = typename Backend::tensor;
  using holder = typename Backend::holder;
  using controller = easycache::controller<Tensor>;

 public:
  explicit harness(fuzz::input& in) : in_(in) {}

  void run() {
    easycache::config first = fuzz_config(in_);
    context = "constructor with " + describe(first);
    try {
      cache_.emplace(first);
      FUZZ_CHECK(valid(first), "the constructor accepted an invalid configuration");
    } catch (const easycache::error& e) {
      ++seen.configs_refused;
      FUZZ_CHECK(!valid(first), "the constructor refused a valid configuration");
      FUZZ_CHECK(std::string(e.what()).size() > 10, "an error without a message");
      first = easycache::config{};
      first.steps = 12;
      first.warmup_steps = 2;
      first.threshold = 0.3;
      cache_.emplace(first);
    }
    cfg_ = first;
    set_callback(1);
    for (int op = 0; op < 400 && !in_.empty(); ++op) {
      switch (in_.choice(16)) {
        case 0: step_at(in_.integer<std::size_t>(0, cfg_.steps + 1), in_.integer<std::size_t>(0, 3)); break;
        case 1: reset(); break;
        case 2: reset_config(); break;
        case 3: set_callback(in_.choice(3)); break;
        case 4: step_at(0, 0); break;
        default: next_step(); break;
      }
      check_stats();
    }
  }

 private:
  struct branch_model {
    bool allocated = false;
    bool has_delta = false;
    bool done = false;
    std::size_t size = 0;
    std::vector<Scalar> delta;  // v − x of the last computed step, in Scalar arithmetic
  };

  // The next call of a well-behaved sampler: the missing branches of the
  // current step, else the anchor of the next step (or step 0).
  void next_step() {
    if (in_generation_ && steps_done_ > 0) {
      for (std::size_t b = 1; b < branches_.size(); ++b)
        if (!branches_[b].done) return step_at(steps_done_ - 1, b);
    }
    step_at(in_generation_ && steps_done_ < cfg_.steps ? steps_done_ : 0, 0);
  }

  void reset() {
    ++seen.resets;
    cache_->reset();
    in_generation_ = false;
  }

  void reset_config() {
    const easycache::config next = fuzz_config(in_);
    const easycache::config before = cache_->configuration();
    context = "reset(config) with " + describe(next);
    try {
      cache_->reset(next);
      FUZZ_CHECK(valid(next), "reset(config) accepted an invalid configuration");
      FUZZ_CHECK(same_config(cache_->configuration(), next), "reset(config) did not take the configuration");
      cfg_ = next;
      in_generation_ = false;
    } catch (const easycache::error& e) {
      ++seen.configs_refused;
      FUZZ_CHECK(!valid(next), "reset(config) refused a valid configuration");
      FUZZ_CHECK(std::string(e.what()).size() > 10, "an error without a message");
      FUZZ_CHECK(same_config(cache_->configuration(), before), "a refused reset(config) changed the configuration");
    }
  }

  // 0: none, 1: records, 2: records and throws.
  void set_callback(std::size_t mode) {
    callback_mode_ = mode;
    if (mode == 0) {
      cache_->on_decision({});
      return;
    }
    cache_->on_decision([this](const easycache::step_record& r) {
      last_record_ = r;
      ++callbacks_;
      if (callback_mode_ == 2) throw callback_failure{};
    });
  }

  std::size_t choose_size() {
    switch (in_.choice(8)) {
      case 0: return 0;
      case 1: return 1;
      case 2: return in_.integer<std::size_t>(2, 17);
      case 3: return in_.integer<std::size_t>(1000, 2100);  // several lanes blocks
      default: return in_.integer<std::size_t>(2, 160);
    }
  }

  // The anchor's trajectory: smooth motion, sometimes a new size, sometimes
  // special values in a few elements.
  std::vector<Scalar> next_input(std::size_t index, std::size_t branch) {
    if (branch == 0) {
      const bool resize = (index == 0 && in_.choice(4) == 0) || in_.choice(64) == 0;
      if (resize || !trajectory_started_) {
        trajectory_started_ = true;
        trajectory_.assign(choose_size(), Scalar(0));
        const Scalar scale = Scalar(in_.integer<int>(1, 400)) / Scalar(100);
        for (std::size_t i = 0; i < trajectory_.size(); ++i)
          trajectory_[i] = scale * Scalar(std::sin(0.37 * static_cast<double>(i) + 1.0));
      } else {
        static const double rates[] = {0.0, 1e-6, 1e-3, 0.01, 0.05, 0.2, 1.0};
        const Scalar rate = Scalar(rates[in_.choice(7)]);
        for (std::size_t i = 0; i < trajectory_.size(); ++i) {
          const Scalar next = trajectory_[i] * Scalar(0.97) + rate * Scalar(std::cos(0.11 * static_cast<double>(i)));
          trajectory_[i] = std::isfinite(next) ? next : Scalar(0);
        }
      }
    }
    std::vector<Scalar> x = trajectory_;
    if (branch != 0 && in_.choice(16) == 0) x.resize(choose_size(), Scalar(0.5));
    if (!x.empty()) {
      for (std::size_t k = in_.choice(4) == 0 ? in_.integer<std::size_t>(1, 3) : 0; k > 0; --k)
        x[in_.integer<std::size_t>(0, x.size() - 1)] = special_value<Scalar>(in_);
    }
    return x;
  }

  // Fills the denoiser's output for input x (n elements), or throws.
  template <class Out>
  void denoise(const Tensor& x, Out& out, behaviour how, Scalar alpha, Scalar beta, Scalar special) {
    const std::size_t n = Backend::size(x);
    ++denoiser_calls_;
    if (how == behaviour::throws) throw denoiser_failure{};
    for (std::size_t i = 0; i < n; ++i) {
      Scalar v = alpha * Backend::get(x, i) + beta * Scalar(std::sin(0.5 * static_cast<double>(i)));
      switch (how) {
        case behaviour::nan: v = i % 3 == 0 ? std::numeric_limits<Scalar>::quiet_NaN() : v; break;
        case behaviour::infinite: v = i % 2 == 0 ? std::numeric_limits<Scalar>::infinity() : v; break;
        case behaviour::huge: v = i % 2 == 0 ? huge<Scalar>() : -huge<Scalar>(); break;
        case behaviour::zero: v = Scalar(0); break;
        case behaviour::denormal: v = special; break;
        default: break;
      }
      Backend::set(out, i, v);
    }
    produced_.resize(n);
    for (std::size_t i = 0; i < n; ++i) produced_[i] = Backend::get(out, i);
    if (how == behaviour::throws_after_writing) throw denoiser_failure{};
    if (how == behaviour::wrong_size) Backend::resize(out, n == 0 ? 1 : (in_.flag() ? n + 1 : n - 1));
  }

  void step_at(std::size_t index, std::size_t branch) {
    const std::vector<Scalar> xs = next_input(index, branch);
    const std::size_t n = xs.size();
    holder x, out;
    const bool null_data = !Backend::owning && in_.choice(8) == 0;
    Backend::make(x, xs, null_data);
    std::size_t out_size = Backend::owning ? in_.integer<std::size_t>(0, 3) * n / 2
                                                 : (in_.choice(12) == 0 ? n + 1 : n);
    Backend::make_output(out, out_size);
    bool overlapping = false, null_output = false;
    if constexpr (!Backend::owning) {
      const std::size_t mode = in_.choice(16);
      if (mode == 0 && !null_data) {
        Backend::overlapping_output(x, out, n == 0 ? 0 : in_.integer<std::size_t>(0, n - 1));
        overlapping = n != 0;
        out_size = n;
      } else if (mode == 1) {
        Backend::null_output(out, out_size);
        null_output = out_size != 0;
      }
    }
    const bool aliased = in_.choice(24) == 0;
    const bool returning = Backend::owning && in_.flag();  // Tensor step(x, info, f)
    const behaviour how = in_.choice(3) == 0 ? static_cast<behaviour>(in_.choice(static_cast<std::size_t>(behaviour::count)))
                                             : behaviour::normal;
    static const Scalar alphas[] = {Scalar(0.5), Scalar(0.9), Scalar(-0.5), Scalar(1), Scalar(0)};
    const Scalar alpha = alphas[in_.choice(5)];
    const Scalar beta = Scalar(in_.integer<int>(-400, 400)) / Scalar(100);
    const Scalar special = std::numeric_limits<Scalar>::denorm_min() * Scalar(in_.integer<int>(0, 100));
    easycache::step_info info;
    info.index = index;
    info.branch = branch;
    static const double timesteps[] = {0.0, 1.0, -1.0, 999.0, std::numeric_limits<double>::infinity(),
                                       std::numeric_limits<double>::quiet_NaN(), 1e308};
    info.timestep = timesteps[in_.choice(7)];
    if (in_.choice(4) == 0) {
      static const double progress[] = {0.0, 0.1, 0.5, 0.99, 1.0, -1.0, 2.0, std::numeric_limits<double>::infinity(),
                                        std::numeric_limits<double>::quiet_NaN()};
      info.progress = progress[in_.choice(9)];
    }

    context = "step " + std::to_string(index) + " branch " + std::to_string(branch) + ", " + std::to_string(n) +
              " elements, behaviour " + std::to_string(static_cast<int>(how)) + ", config: " + describe(cfg_) +
              ", model: " + (in_generation_ ? "in generation, " : "no generation, ") + std::to_string(steps_done_) +
              " steps done, " + std::to_string(anchor_computes_) + " anchor computes";

    // What the documented contract says about this call before it runs.
    const bool null_input = null_data && n != 0;
    const bool aliasing = aliased && !returning;
    bool invalid = aliasing || overlapping || null_output || branch >= cfg_.branches || index >= cfg_.steps ||
                   null_input;
    bool starts = false;
    if (!invalid) {
      if (branch == 0) {
        if (index != 0) {
          invalid = !in_generation_ || index != steps_done_ || n != anchor_size_;
        } else {
          const auto& s = cfg_.sampling;
          if (s.height != 0 && n % (s.height * s.width) != 0) {
            invalid = true;
          } else {
            starts = true;
          }
        }
      } else {
        invalid = !in_generation_ || steps_done_ == 0 || index + 1 != steps_done_ || branches_[branch].done ||
                  (branches_[branch].allocated && n != branches_[branch].size);
      }
    }

    const easycache::statistics stats_before = cache_->stats();
    const std::size_t trace_before = cache_->trace().size();
    const std::size_t callbacks_before = callbacks_;
    const std::size_t calls_before = denoiser_calls_;
    produced_.clear();
    const std::size_t computes_before = starts ? 0 : anchor_computes_;
    const bool forced = !invalid && branch == 0 && forced_step(info);

    enum class outcome { ok, error, denoiser_threw, callback_threw } result = outcome::ok;
    try {
      if constexpr (Backend::owning) {
        if (returning)
          out.t = cache_->step(x.t, info, [&](const Tensor& input) {
            Tensor produced = Tensor::Zero(input.size());
            denoise(input, produced, how, alpha, beta, special);
            return produced;
          });
      }
      if (!returning) {
        Tensor& target = aliasing ? x.t : out.t;
        cache_->step(x.t, target, info, [&](const Tensor& input, Tensor& output, const easycache::step_info& i) {
          FUZZ_CHECK(i.index == index && i.branch == branch, "the denoiser got another step_info");
          FUZZ_CHECK(Backend::size(output) == Backend::size(input), "the denoiser got an output of another size");
          denoise(input, output, how, alpha, beta, special);
        });
      }
    } catch (const easycache::error& e) {
      result = outcome::error;
      context += std::string(", threw: ") + e.what();
      FUZZ_CHECK(std::string(e.what()).size() > 10, "an error without a message");
    } catch (const denoiser_failure&) {
      result = outcome::denoiser_threw;
    } catch (const callback_failure&) {
      result = outcome::callback_threw;
    } catch (...) {
      FUZZ_CHECK(false, "an exception other than easycache::error or the denoiser's or callback's own");
    }
    const bool called = denoiser_calls_ != calls_before;
    ++seen.calls;
    seen.refused += result == outcome::error;
    seen.denoiser_threw += result == outcome::denoiser_threw;
    seen.callback_threw += result == outcome::callback_threw;

    if (invalid) {
      FUZZ_CHECK(result == outcome::error, "an invalid call was not refused with easycache::error");
      FUZZ_CHECK(!called, "an invalid call reached the denoiser");
      unchanged(stats_before, trace_before, callbacks_before);
      return;
    }
    if (starts) start_generation(n);
    // A host output of the wrong size is refused before the denoiser or the cache touch it.
    const bool output_refused = !Backend::owning && out_size != n && !aliasing;
    const bool succeeded = result == outcome::ok || result == outcome::callback_threw;
    if (output_refused) {
      FUZZ_CHECK(result == outcome::error && !called, "a host output of the wrong size was not refused");
    } else if (called) {
      if (how == behaviour::throws || how == behaviour::throws_after_writing) {
        FUZZ_CHECK(result == outcome::denoiser_threw, "the denoiser's exception did not propagate");
      } else if (how == behaviour::wrong_size) {
        FUZZ_CHECK(result == outcome::error, "a denoiser output of the wrong size was not refused");
      } else {
        FUZZ_CHECK(succeeded, "a computed step failed");
      }
    } else {
      FUZZ_CHECK(succeeded, "a skipped step failed");
    }
    FUZZ_CHECK((result == outcome::callback_threw) == (succeeded && callback_mode_ == 2),
               "the callback's exception did not propagate");
    if (!succeeded) {
      if (starts) {
        FUZZ_CHECK(same_stats(cache_->stats(), easycache::statistics{}), "a failed step 0 left old statistics");
        FUZZ_CHECK(cache_->trace().empty(), "a failed step 0 left an old trace");
        FUZZ_CHECK(callbacks_ == callbacks_before, "a failed step called the callback");
      } else {
        unchanged(stats_before, trace_before, callbacks_before);
      }
      return;
    }

    // The call took effect: check the decision, then update the model.
    std::optional<easycache::step_record> record;
    if (callback_mode_ != 0) {
      FUZZ_CHECK(callbacks_ == callbacks_before + 1, "the callback was not called once per evaluation");
      record = last_record_;
    } else if (gen_records_) {
      FUZZ_CHECK(!cache_->trace().empty(), "no trace record for an evaluation");
      record = cache_->trace().back();
    }
    if (record) {
      FUZZ_CHECK(record->step == index && record->branch == branch, "the record names another evaluation");
      FUZZ_CHECK((record->action == action::compute) == called, "the record's action is not what happened");
    }
    const Tensor& result_tensor = aliasing ? x.t : out.t;
    // Tensor step(x, info, f) loses its result when the callback throws (documented).
    const bool output_lost = returning && result == outcome::callback_threw;
    if (!output_lost) FUZZ_CHECK(Backend::size(result_tensor) == n, "the output has another size than the input");
    seen.computed += called;
    seen.skipped += !called;
    seen.forced += forced;
    if (branch == 0) {
      check_anchor_decision(record, called, forced, computes_before, info);
      if (record && !forced && computes_before >= 2) check_statistics(*record, xs);
      previous_input_ = xs;
      if (called) {
        last_computed_input_ = xs;
        last_computed_output_ = produced_;
      }
      if (called) ++anchor_computes_;
      ++steps_done_;
      anchor_action_ = called ? action::compute : action::skip;
      for (branch_model& b : branches_) b.done = false;
    } else {
      const bool expect_compute = anchor_action_ == action::compute || !branches_[branch].has_delta;
      FUZZ_CHECK(called == expect_compute, "another branch did not follow the anchor's decision");
      if (record && !called && anchor_reason_)
        FUZZ_CHECK(record->reason == *anchor_reason_, "a branch's record has another reason");
    }
    branch_model& b = branches_[branch];
    if (!b.allocated) {
      b.allocated = true;
      b.size = n;
    }
    b.done = true;
    for (std::size_t i = 0; i < n; ++i) inputs_bounded_ = inputs_bounded_ && bounded(xs[i]);
    if (called) {
      b.delta.resize(n);
      FUZZ_CHECK(produced_.size() == n, "a computed step without a denoiser output");
      for (std::size_t i = 0; i < n; ++i) {
        const Scalar v = produced_[i];
        if (!output_lost) {
          const Scalar got = Backend::get(result_tensor, i);
          FUZZ_CHECK(got == v || (std::isnan(got) && std::isnan(v)), "a computed output is not the denoiser's");
        }
        outputs_bounded_ = outputs_bounded_ && bounded(v);
        b.delta[i] = v - xs[i];
      }
      b.has_delta = true;
      ++calls_;
    } else {
      FUZZ_CHECK(b.has_delta && b.delta.size() == n, "a skip without a cached vector of this size");
      for (std::size_t i = 0; i < n && !output_lost; ++i) {
        const Scalar expected = xs[i] + b.delta[i];
        const Scalar got = Backend::get(result_tensor, i);
        FUZZ_CHECK(got == expected || (std::isnan(got) && std::isnan(expected)),
                   "a skipped output is not x + the cached transformation vector");
        if (inputs_bounded_ && outputs_bounded_)
          FUZZ_CHECK(std::isfinite(got), "a skipped output is not finite although every input and output was");
      }
      ++skips_;
    }
    if (branch == 0) anchor_reason_ = record ? std::optional<reason>(record->reason) : std::nullopt;
    ++evaluations_;
  }

  bool forced_step(const easycache::step_info& info) const {
    if (cfg_.window) {
      const double p = std::isfinite(info.progress) ? info.progress
                                                    : static_cast<double>(info.index) / static_cast<double>(cfg_.steps);
      return p < cfg_.window->start || p >= cfg_.window->end;
    }
    return info.index < cfg_.warmup_steps || info.index + 1 >= cfg_.steps;
  }

  void check_anchor_decision(const std::optional<easycache::step_record>& record, bool called, bool forced,
                             std::size_t computes_before, const easycache::step_info& info) {
    if (forced) FUZZ_CHECK(called, "a forced step (warm-up, last, outside the window) was skipped");
    if (!called) FUZZ_CHECK(computes_before >= 2, "a skip before two computed anchor steps");
    if (!record) return;
    const reason r = record->reason;
    if (forced) {
      const reason expected = cfg_.window                       ? reason::outside_window
                              : info.index < cfg_.warmup_steps ? reason::warmup
                                                               : reason::last_step;
      FUZZ_CHECK(r == expected, "a forced step with another reason");
      return;
    }
    FUZZ_CHECK((r == reason::no_history) == (computes_before < 2), "no_history does not match the history");
    if (r == reason::no_history) return;
    const double dx = record->input_change, k = record->transformation_rate, norm = record->output_norm;
    const bool usable = std::isfinite(dx) && std::isfinite(k) && std::isfinite(norm) && norm > 0;
    FUZZ_CHECK((r == reason::degenerate_statistics) == !usable, "degenerate statistics not flagged as such");
    if (!usable) return;
    FUZZ_CHECK(dx >= 0 && k >= 0, "a negative statistic");
    const double e = record->accumulated_error;
    if (!called) {
      FUZZ_CHECK(r == reason::below_threshold && e < cfg_.threshold, "a skip with E not below the threshold");
      FUZZ_CHECK(std::isfinite(record->predicted_error) && record->predicted_error >= 0, "a skip with a bad epsilon");
    } else {
      FUZZ_CHECK(r == reason::above_threshold && !(e < cfg_.threshold), "a compute with E below the threshold");
    }
  }

  // dx and ‖v_last‖ of a decision step, recomputed in double over the sampled
  // elements as the documentation defines them (a stride beyond the tensor
  // samples its first element only), when no sum can overflow.
  void check_statistics(const easycache::step_record& r, const std::vector<Scalar>& x) {
    const bool from_last = cfg_.input_change == easycache::input_change_reference::last_compute;
    const std::vector<Scalar>& reference = from_last ? last_computed_input_ : previous_input_;
    const auto& s = cfg_.sampling;
    auto sampled = [&](std::size_t i) {
      if (s.stride <= 1) return true;
      if (s.height == 0) return i % s.stride == 0;
      return ((i / s.width) % s.height) % s.stride == 0 && (i % s.width) % s.stride == 0;
    };
    auto moderate = [](Scalar v) { return std::isfinite(v) && std::abs(v) <= Scalar(1e30); };
    double change = 0, norm = 0;
    std::size_t count = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!sampled(i)) continue;
      if (!moderate(x[i]) || !moderate(reference[i]) || !moderate(last_computed_output_[i])) return;
      change += std::abs(static_cast<double>(x[i]) - static_cast<double>(reference[i]));
      norm += std::abs(static_cast<double>(last_computed_output_[i]));
      ++count;
    }
    if (count == 0) return;
    change /= static_cast<double>(count);
    norm /= static_cast<double>(count);
    // fp32 lane sums over blocks of 1024: a relative error of about 1e-5 at most.
    auto close = [](double got, double expected) { return std::abs(got - expected) <= 1e-4 * expected + 1e-44; };
    FUZZ_CHECK(close(r.input_change, change), "dx is not the mean |x - reference| over the sampled elements");
    FUZZ_CHECK(close(r.output_norm, norm), "the output norm is not the mean |v| over the sampled elements");
    ++seen.statistics_checked;
  }

  void start_generation(std::size_t n) {
    in_generation_ = true;
    steps_done_ = 0;
    anchor_computes_ = 0;
    anchor_size_ = n;
    branches_.assign(cfg_.branches, branch_model{});
    branches_[0].allocated = true;
    branches_[0].size = n;
    gen_records_ = cfg_.record_trace;
    inputs_bounded_ = true;
    outputs_bounded_ = true;
    evaluations_ = calls_ = skips_ = 0;
  }

  void unchanged(const easycache::statistics& stats, std::size_t trace_size, std::size_t callbacks) {
    FUZZ_CHECK(same_stats(cache_->stats(), stats), "a failed call changed the statistics");
    FUZZ_CHECK(cache_->trace().size() == trace_size, "a failed call changed the trace");
    FUZZ_CHECK(callbacks_ == callbacks, "a failed call called the callback");
  }

  void check_stats() {
    const easycache::statistics& s = cache_->stats();
    FUZZ_CHECK(s.evaluations == s.calls + s.skips, "evaluations != calls + skips");
    std::size_t by_reason = 0;
    for (std::size_t count : s.reasons) by_reason += count;
    FUZZ_CHECK(by_reason == s.steps, "the reasons do not sum to the steps");
    FUZZ_CHECK(s.steps == steps_done_ && s.evaluations == evaluations_ && s.calls == calls_ && s.skips == skips_,
               "the statistics differ from the model's count");
    if (gen_records_) {
      const auto& trace = cache_->trace();
      FUZZ_CHECK(trace.size() == s.evaluations, "trace records != evaluations");
      std::size_t anchors = 0, skipped = 0;
      for (const auto& r : trace) {
        anchors += r.branch == 0;
        skipped += r.action == action::skip;
      }
      FUZZ_CHECK(anchors == s.steps && skipped == s.skips, "the trace does not add up to the statistics");
    }
    FUZZ_CHECK(s.speedup_in_calls() >= 1.0 || s.calls == 0, "fewer evaluations than calls");
  }

  fuzz::input& in_;
  std::optional<controller> cache_;
  easycache::config cfg_;
  // The model of the generation.
  bool in_generation_ = false;
  std::size_t steps_done_ = 0, anchor_computes_ = 0, anchor_size_ = 0;
  std::size_t evaluations_ = 0, calls_ = 0, skips_ = 0;
  bool gen_records_ = true;
  bool inputs_bounded_ = true, outputs_bounded_ = true;
  action anchor_action_ = action::compute;
  std::optional<reason> anchor_reason_;
  std::vector<branch_model> branches_;
  std::vector<Scalar> previous_input_, last_computed_input_, last_computed_output_;  // the anchor's
  std::vector<Scalar> trajectory_;
  bool trajectory_started_ = false;
  // Observations.
  std::size_t callback_mode_ = 0, callbacks_ = 0, denoiser_calls_ = 0;
  std::vector<Scalar> produced_;  // the last output the denoiser wrote
  easycache::step_record last_record_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::input in(data, size);
  ++seen.runs;
  switch (in.choice(4)) {
    case 0: harness<eigen_backend<double>>(in).run(); break;
    case 1: harness<eigen_backend<float>>(in).run(); break;
    case 2: harness<host_backend<double>>(in).run(); break;
    default: harness<host_backend<float>>(in).run(); break;
  }
  return 0;
}

// Called by the replay program: what the corpus exercised.
extern "C" void easycache_fuzz_summary() {
  std::printf("%zu inputs: %zu step calls, %zu computed, %zu skipped, %zu forced, %zu refused with easycache::error, "
              "%zu denoiser exceptions, %zu callback exceptions, %zu configurations refused, %zu resets, "
              "%zu decision statistics recomputed\n",
              seen.runs, seen.calls, seen.computed, seen.skipped, seen.forced, seen.refused, seen.denoiser_threw,
              seen.callback_threw, seen.configs_refused, seen.resets, seen.statistics_checked);
}
