// Fuzz target: random configurations, trajectories and denoiser behaviours
// drive easycache::controller, and a model of its documented contract checks
// every call. Built with libFuzzer (EASYCACHE_BUILD_FUZZERS, clang) and, for
// replaying the committed corpus, as a plain program with any compiler.
//
// What the input decodes into: a backend (Eigen VectorXd / VectorXf, host_buffer
// of double / float); a configuration (steps, warm-up, τ including 0, tiny, huge,
// +inf, NaN, negative; branches 0–3; the variants; invalid ones too); then a
// sequence of operations: a sampler's steps in order, generations that start
// mid-schedule (img2img) or with a schedule length of their own
// (step_info::steps), steps left out (gaps), repeated, past the end, for missing
// or repeated branches, branches left out of steps; inputs of 0, 1 or more
// elements, changing size, with NaN, ±Inf, 0, huge, the largest finite and
// denormal values; outputs of the wrong size, without memory, or sharing memory
// with the input; NaN or infinite timesteps and progress; denoisers that work,
// throw, return the wrong size, NaN, Inf, huge or denormal values; reset(),
// reset(config) (valid or not), and decision callbacks that throw.
//
// The model of the step sequence (include/easycache/detail/generation.hpp):
// branch 0 starts a generation at any step when none is in progress, when none
// of its steps has finished, with another schedule length, at an earlier step,
// or once its last step has finished (except a repeat of that step when the
// generation took more than one); the step finished last again is refused; a
// later step is a gap. Another branch needs branch 0 of its step finished (or
// begun and not finished, or thrown by the denoiser), once per step.
//
// Invariants (a violation aborts with a message):
//  - only easycache::error, the denoiser's own exception and the callback's own
//    exception leave step(); an easycache::error comes exactly when the model
//    says the call is invalid, and then nothing changed; a repeat of branch 0's
//    last step and a second evaluation of a branch are refused as "evaluated twice";
//  - after the denoiser throws, nothing changed (a call that starts a generation
//    has started it: no steps counted yet); the other branches of that step are
//    computed (out_of_sequence);
//  - forced steps (warm-up counted from the generation's first step, the
//    schedule's last step, outside the window) and gaps call the denoiser, with
//    their reason;
//  - a skip needs two computed anchor steps (anchor) or a computed step of that
//    branch in the generation no older than the anchor's last computed step
//    (other branches: else no_history or stale_branch), follows the anchor's
//    decision, and returns exactly x + (v − x) of that branch's last computed
//    step; it is finite whenever the generation's inputs and denoiser outputs
//    were finite and not within a factor 4 of overflow;
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
#include <easycache/backends/eigen.hpp>
#include <easycache/backends/host_buffer.hpp>

#include "fuzz_check.hpp"
#include "fuzz_input.hpp"

namespace {

using fuzz::context;

// What the inputs exercised, for the replay program's summary.
struct tally {
  std::size_t runs = 0, calls = 0, computed = 0, skipped = 0, forced = 0, refused = 0, denoiser_threw = 0,
              callback_threw = 0, configs_refused = 0, resets = 0, statistics_checked = 0, starts = 0,
              mid_schedule_starts = 0, schedule_lengths = 0, gaps = 0, repeats_refused = 0, stale_branches = 0,
              after_failure = 0, on_unfinished_anchor = 0, probes = 0;
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
        case 0: random_step(); break;
        case 1: reset(); break;
        case 2: reset_config(); break;
        case 3: set_callback(in_.choice(3)); break;
        case 4: step_at(0, 0); break;
        case 13: new_schedule(); break;
        case 14: out_of_order(); break;
        default: next_step(); break;
      }
      check_stats();
    }
  }

 private:
  static constexpr std::size_t no_step = std::numeric_limits<std::size_t>::max();

  struct branch_model {
    bool allocated = false;
    bool has_delta = false;
    std::size_t size = 0;
    std::size_t last_step = no_step;     // the step of its last finished evaluation
    std::size_t last_compute = no_step;  // the step its cached vector is from
    std::vector<Scalar> delta;           // v − x of the last computed step, in Scalar arithmetic
  };

  // How branch 0's call relates to the generation in progress.
  enum class anchor_kind { start, next, gap, repeat };

  // Which evaluation of branch 0 another branch's call follows.
  enum class follows { nothing, unfinished, finished, failed };

  std::size_t schedule() const { return schedule_ ? schedule_ : cfg_.steps; }

  anchor_kind classify(std::size_t index, std::size_t steps) const {
    if (!in_generation_ || last_ == no_step || steps != gen_steps_) return anchor_kind::start;
    if (last_ + 1 >= gen_steps_) return index == last_ && last_ != first_ ? anchor_kind::repeat : anchor_kind::start;
    if (index < last_) return anchor_kind::start;
    if (index == last_) return anchor_kind::repeat;
    return index == last_ + 1 ? anchor_kind::next : anchor_kind::gap;
  }

  follows anchor_of(std::size_t index) const {
    if (!in_generation_) return follows::nothing;
    if (unfinished_step_ == index) return follows::unfinished;
    if (last_ == index) return follows::finished;
    if (failed_step_ == index) return follows::failed;
    return follows::nothing;
  }

  // The next call of a well-behaved sampler: the missing branches of the
  // current step, else the anchor of the next step (or the first step of a
  // new generation). After a denoiser failure it retries the step, or logs it
  // and goes on: the other branches of the failed step, then the next step.
  void next_step() {
    // A loop that logs a failed step() of branch 0 (its output refused) and goes on with the other branches.
    if (in_generation_ && unfinished_step_ != no_step && branches_.size() > 1 && in_.choice(4) == 0)
      return step_at(unfinished_step_, in_.integer<std::size_t>(1, branches_.size() - 1));
    if (in_generation_ && failed_step_ != no_step && in_.flag()) {
      for (std::size_t b = 1; b < branches_.size(); ++b)
        if (branches_[b].last_step != failed_step_) return step_at(failed_step_, b);
      if (failed_step_ + 1 < gen_steps_) return step_at(failed_step_ + 1, 0);
    }
    if (in_generation_ && last_ != no_step) {
      for (std::size_t b = 1; b < branches_.size(); ++b)
        if (branches_[b].last_step != last_) return step_at(last_, b);
    }
    const bool continues = in_generation_ && last_ != no_step && last_ + 1 < gen_steps_ && gen_steps_ == schedule();
    step_at(continues ? last_ + 1 : std::min(start_index_, schedule() - 1), 0);
  }

  // Any step of any branch (out of range too), with the sampler's schedule length,
  // none or another one.
  void random_step() {
    const std::size_t index = in_.integer<std::size_t>(0, schedule() + 1), branch = in_.integer<std::size_t>(0, 3);
    std::size_t steps = schedule_;
    switch (in_.choice(4)) {
      case 0: steps = 0; break;
      case 1: steps = in_.integer<std::size_t>(1, std::min<std::size_t>(schedule(), 60) + 2); break;
      default: break;
    }
    step_at(index, branch, steps);
  }

  // The sampler changes: a schedule of config.steps (given or not) or of another
  // length, starting at step 0 or mid-schedule (img2img); then its first step.
  void new_schedule() {
    switch (in_.choice(4)) {
      case 0: schedule_ = 0; break;
      case 1: schedule_ = cfg_.steps; break;
      default: schedule_ = in_.integer<std::size_t>(1, std::min<std::size_t>(cfg_.steps, 60) + 8); break;
    }
    start_index_ = in_.flag() ? 0 : in_.integer<std::size_t>(0, schedule() - 1);
    step_at(start_index_, 0);
  }

  // Branch 0 out of order: a step left out (a gap), the last step again, an
  // earlier one, or the next one with the other branches left out of this one
  // (guidance on part of the schedule).
  void out_of_order() {
    const std::size_t last = in_generation_ && last_ != no_step ? last_ : 0;
    switch (in_.choice(4)) {
      case 0: step_at(last + in_.integer<std::size_t>(2, 4), 0); break;
      case 1: step_at(last, 0); break;
      case 2: step_at(last - std::min(last, in_.integer<std::size_t>(1, 3)), 0); break;
      default: step_at(in_generation_ && last_ != no_step ? last_ + 1 : 0, 0); break;
    }
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

  // The anchor's trajectory: smooth motion, sometimes a new size (mostly where a
  // generation starts), sometimes special values in a few elements.
  std::vector<Scalar> next_input(std::size_t branch, bool starting) {
    if (branch == 0) {
      const bool resize = (starting && in_.choice(4) == 0) || in_.choice(64) == 0;
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

  void step_at(std::size_t index, std::size_t branch) { step_at(index, branch, schedule_); }

  // One step() call; `steps`: its step_info::steps (0: config.steps).
  void step_at(std::size_t index, std::size_t branch, std::size_t steps) {
    // Other branches without a length of their own are of the generation's schedule.
    const std::size_t schedule_steps = steps ? steps : branch != 0 && in_generation_ ? gen_steps_ : cfg_.steps;
    const std::vector<Scalar> xs =
        next_input(branch, branch == 0 && classify(index, schedule_steps) == anchor_kind::start);
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
    if (steps != 0) info.of(steps);
    seen.schedule_lengths += steps != 0;
    static const double timesteps[] = {0.0, 1.0, -1.0, 999.0, std::numeric_limits<double>::infinity(),
                                       std::numeric_limits<double>::quiet_NaN(), 1e308};
    info.timestep = timesteps[in_.choice(7)];
    if (in_.choice(4) == 0) {
      static const double progress[] = {0.0, 0.1, 0.5, 0.99, 1.0, -1.0, 2.0, std::numeric_limits<double>::infinity(),
                                        std::numeric_limits<double>::quiet_NaN()};
      info.progress = progress[in_.choice(9)];
    }

    context = "step " + std::to_string(index) + " branch " + std::to_string(branch) + " of " +
              std::to_string(steps) + " steps, " + std::to_string(n) + " elements, behaviour " +
              std::to_string(static_cast<int>(how)) + ", config: " + describe(cfg_) + ", model: " + describe_model();

    // What the documented contract says about this call before it runs.
    const bool null_input = null_data && n != 0;
    const bool aliasing = aliased && !returning;
    bool invalid = aliasing || overlapping || null_output || branch >= cfg_.branches || index >= schedule_steps ||
                   null_input;
    anchor_kind kind = anchor_kind::next;
    follows after = follows::nothing;
    bool twice = false;  // refused as a second evaluation of the step
    if (!invalid) {
      if (branch == 0) {
        kind = classify(index, schedule_steps);
        if (kind == anchor_kind::repeat) {
          invalid = twice = true;
        } else if (kind == anchor_kind::start) {
          const auto& s = cfg_.sampling;
          invalid = s.height != 0 && n % (s.height * s.width) != 0;
        } else {
          invalid = n != anchor_size_;
        }
      } else {
        after = anchor_of(index);
        if (after == follows::nothing) {
          invalid = true;
        } else {
          const branch_model& b = branches_[branch];
          const bool other_schedule = info.steps != 0 && info.steps != gen_steps_;
          twice = !other_schedule && b.last_step == index;
          invalid = other_schedule || twice || (b.allocated && n != b.size);
        }
      }
    }
    const bool starts = !invalid && branch == 0 && kind == anchor_kind::start;
    const bool gap = !invalid && branch == 0 && kind == anchor_kind::gap;
    const std::size_t first = starts ? index : first_;

    // Another branch: the verdict of the anchor evaluation it follows, then the
    // branch's own history (no cached vector, or one older than the anchor's).
    std::optional<action> expected_action;
    std::optional<reason> expected_reason;
    if (!invalid && branch != 0) {
      switch (after) {
        case follows::unfinished:
          expected_action = unfinished_action_;
          break;
        case follows::finished:
          expected_action = anchor_action_;
          expected_reason = anchor_reason_;
          break;
        default:
          expected_action = action::compute;
          expected_reason = reason::out_of_sequence;
          break;
      }
      const branch_model& b = branches_[branch];
      if (expected_action == action::skip && !b.has_delta) {
        expected_action = action::compute;
        expected_reason = reason::no_history;
      } else if (expected_action == action::skip && b.last_compute < anchor_last_compute_) {
        expected_action = action::compute;
        expected_reason = reason::stale_branch;
      }
    }

    const easycache::statistics stats_before = cache_->stats();
    const std::size_t trace_before = cache_->trace().size();
    const std::size_t callbacks_before = callbacks_;
    const std::size_t calls_before = denoiser_calls_;
    produced_.clear();
    const std::size_t computes_before = starts ? 0 : anchor_computes_;
    const bool forced = !invalid && branch == 0 && forced_step(info, first, schedule_steps);

    enum class outcome { ok, error, denoiser_threw, callback_threw } result = outcome::ok;
    std::string message;
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
      message = e.what();
      context += ", threw: " + message;
      FUZZ_CHECK(message.size() > 10, "an error without a message");
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
      if (twice)
        FUZZ_CHECK(message.find("evaluated twice at step " + std::to_string(index)) != std::string::npos,
                   "a second evaluation of a step was refused with another message");
      seen.repeats_refused += twice && branch == 0;
      unchanged(stats_before, trace_before, callbacks_before);
      return;
    }
    if (starts) start_generation(n, index, schedule_steps);
    seen.gaps += gap;
    // A host output of the wrong size is refused before the denoiser or the cache touch it.
    const bool output_refused = !Backend::owning && out_size != n && !aliasing;
    const bool succeeded = result == outcome::ok || result == outcome::callback_threw;
    const bool throws = how == behaviour::throws || how == behaviour::throws_after_writing;
    // Branch 0 of this step was begun by a step() that failed after its begin_step
    // (an output refused): that evaluation can never finish, so this branch's
    // finish_step is refused, after its denoiser ran on a compute.
    const bool on_unfinished = branch != 0 && after == follows::unfinished;
    if (output_refused) {
      FUZZ_CHECK(result == outcome::error && !called, "a host output of the wrong size was not refused");
    } else if (on_unfinished) {
      ++seen.on_unfinished_anchor;
      FUZZ_CHECK(result == outcome::error || (called && throws && result == outcome::denoiser_threw),
                 "a branch whose anchor evaluation never finished was not refused");
      if (expected_action)
        FUZZ_CHECK(called == (*expected_action == action::compute),
                   "a branch did not follow the unfinished anchor evaluation's decision");
    } else if (called) {
      if (throws) {
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
      if (branch == 0) {
        // The anchor's begin_step took effect: a start has ended the previous
        // generation. step() marks every failure after its begin_step as a failed step: the
        // other branches of that step and the next step compute.
        failed_step_ = index;
        unfinished_step_ = no_step;
      }
      if (starts) {
        FUZZ_CHECK(same_stats(cache_->stats(), easycache::statistics{}), "a failed start left old statistics");
        FUZZ_CHECK(cache_->trace().empty(), "a failed start left an old trace");
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
    branch_model& b = branches_[branch];
    if (branch == 0) {
      check_anchor_decision(record, called, forced, gap, computes_before, info, first);
      if (record && !forced && !gap && computes_before >= 2) check_statistics(*record, xs);
      previous_input_ = xs;
      if (called) {
        last_computed_input_ = xs;
        last_computed_output_ = produced_;
        ++anchor_computes_;
        anchor_last_compute_ = index;
      }
      ++steps_done_;
      last_ = index;
      failed_step_ = unfinished_step_ = no_step;
      anchor_action_ = called ? action::compute : action::skip;
    } else {
      FUZZ_CHECK(expected_action.has_value() && called == (*expected_action == action::compute),
                 "another branch did not follow the anchor's decision (or skipped without a vector as recent as "
                 "the anchor's)");
      if (record && expected_reason) FUZZ_CHECK(record->reason == *expected_reason, "a branch's record has another reason");
      if (!called)
        FUZZ_CHECK(b.last_compute != no_step && b.last_compute >= anchor_last_compute_,
                   "a skip replays a branch vector older than the anchor's last computed step");
      seen.stale_branches += expected_reason == reason::stale_branch;
      seen.after_failure += after == follows::failed;
    }
    if (!b.allocated) {
      b.allocated = true;
      b.size = n;
    }
    b.last_step = index;
    for (std::size_t i = 0; i < n; ++i) inputs_bounded_ = inputs_bounded_ && bounded(xs[i]);
    if (called) {
      b.last_compute = index;
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

  // Forced computes: warm-up steps counted from the generation's first step and
  // the schedule's last step, or the steps outside the window.
  bool forced_step(const easycache::step_info& info, std::size_t first, std::size_t steps) const {
    if (cfg_.window) {
      const double p = std::isfinite(info.progress) ? info.progress
                                                    : static_cast<double>(info.index) / static_cast<double>(steps);
      return p < cfg_.window->start || p >= cfg_.window->end;
    }
    return info.index - first < cfg_.warmup_steps || info.index + 1 >= steps;
  }

  void check_anchor_decision(const std::optional<easycache::step_record>& record, bool called, bool forced, bool gap,
                             std::size_t computes_before, const easycache::step_info& info, std::size_t first) {
    if (forced) FUZZ_CHECK(called, "a forced step (warm-up, last, outside the window) was skipped");
    if (gap) FUZZ_CHECK(called, "a step after a gap was skipped");
    if (!called) FUZZ_CHECK(computes_before >= 2, "a skip before two computed anchor steps");
    if (!record) return;
    const reason r = record->reason;
    if (forced) {
      const reason expected = cfg_.window                               ? reason::outside_window
                              : info.index - first < cfg_.warmup_steps ? reason::warmup
                                                                       : reason::last_step;
      FUZZ_CHECK(r == expected, "a forced step with another reason");
      return;
    }
    FUZZ_CHECK((r == reason::no_history) == (computes_before < 2), "no_history does not match the history");
    if (r == reason::no_history) return;
    if (gap) {
      FUZZ_CHECK(r == reason::out_of_sequence, "a step after a gap was computed with another reason");
      return;
    }
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
    // With subsampled statistics a non-finite output anywhere makes the norm
    // NaN (it is never cached): only outputs finite everywhere are compared.
    if (s.stride > 1)
      for (const Scalar v : last_computed_output_)
        if (!std::isfinite(v)) return;
    change /= static_cast<double>(count);
    norm /= static_cast<double>(count);
    // fp32 lane sums over blocks of 1024: a relative error of about 1e-5 at most.
    auto close = [](double got, double expected) { return std::abs(got - expected) <= 1e-4 * expected + 1e-44; };
    FUZZ_CHECK(close(r.input_change, change), "dx is not the mean |x - reference| over the sampled elements");
    FUZZ_CHECK(close(r.output_norm, norm), "the output norm is not the mean |v| over the sampled elements");
    ++seen.statistics_checked;
  }

  void start_generation(std::size_t n, std::size_t first, std::size_t steps) {
    ++seen.starts;
    seen.mid_schedule_starts += first > 0;
    in_generation_ = true;
    gen_steps_ = steps;
    first_ = first;
    last_ = failed_step_ = unfinished_step_ = anchor_last_compute_ = no_step;
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

  std::string describe_model() const {
    if (!in_generation_) return "no generation";
    auto step = [](std::size_t s) { return s == no_step ? std::string("none") : std::to_string(s); };
    return "generation of " + std::to_string(gen_steps_) + " steps from step " + std::to_string(first_) +
           ", last step " + step(last_) + ", failed " + step(failed_step_) + ", unfinished " +
           step(unfinished_step_) + ", anchor's last compute " + step(anchor_last_compute_) + ", " +
           std::to_string(steps_done_) + " steps done, " + std::to_string(anchor_computes_) + " anchor computes";
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
  // The sampler: its schedule length (0: none given) and where its generations start.
  std::size_t schedule_ = 0, start_index_ = 0;
  // The model of the generation.
  bool in_generation_ = false;
  std::size_t gen_steps_ = 0, first_ = 0;
  std::size_t last_ = no_step;              // the anchor's step finished last
  std::size_t failed_step_ = no_step;       // the anchor's denoiser threw here (since its last finished step)
  std::size_t unfinished_step_ = no_step;   // the anchor was begun here by a step() that failed after begin_step
  std::optional<action> unfinished_action_;  // ... with this decision, when the model knows it
  std::size_t anchor_last_compute_ = no_step;
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
              "%zu decision statistics recomputed; %zu generations (%zu from mid-schedule), %zu calls with "
              "step_info::steps, %zu gaps, %zu repeats of branch 0 refused, %zu stale branches computed, %zu branches "
              "after a failed anchor, %zu on an unfinished anchor (%zu probes)\n",
              seen.runs, seen.calls, seen.computed, seen.skipped, seen.forced, seen.refused, seen.denoiser_threw,
              seen.callback_threw, seen.configs_refused, seen.resets, seen.statistics_checked, seen.starts,
              seen.mid_schedule_starts, seen.schedule_lengths, seen.gaps, seen.repeats_refused, seen.stale_branches,
              seen.after_failure, seen.on_unfinished_anchor, seen.probes);
}
