// Fuzz target for the API around step(): random configurations, policies and
// trajectories drive begin_step/finish_step, extra evaluations, the
// linear-in-timestep predictor, the statistics reduction hook, every shipped
// policy (behind any_policy), batch_controller and recorded_trajectory (load of
// any byte string, save/load of corrupted files, replay()), and a model of the
// documented contract checks every call. step() itself on every backend, and
// the configuration's validation, are controller_fuzzer.cpp's.
//
// What the input decodes into, after a first choice of harness:
//  - controller (host_buffer of float or double): a valid configuration (both
//    predictors, both input-change references, a window, subsampling, with and
//    without a trace) and a policy: the reference rule, fixed_interval_policy
//    (interval 0 too), step_mask_policy (a mask of the wrong length too,
//    evenly_spaced with any counts), budget_policy (budget::calls of any count,
//    budget::speedup of any value, any smoothing); then a sequence of
//    operations: begin_step / finish_step and step() for the next evaluation of
//    a sampler (branches sometimes left out of a step) or a random one (out of
//    order, branch twice, past the end, another schedule length); generations
//    that start mid-schedule or with a schedule length of their own
//    (step_info::steps); branch 0 after a gap, at its last step again, at an
//    earlier step; batched guidance (every branch begun before branch 0
//    finishes, a branch finished first, branch 0 begun again in between);
//    pendings abandoned, begun twice, finished late (stale, after reset(), after
//    the next anchor step) or on another controller; finish_step with an input
//    of another size, an output of the wrong size, without memory or aliasing
//    the input; extra evaluations in and out of a generation; timesteps NaN,
//    ±∞, repeated, huge, 1e-300 apart; progress given or not; a denoiser that
//    throws (before or after writing); statistics reduction hooks that scale,
//    perturb, make a mean negative or the count 0, or throw; reset() and
//    reset(config) (refused ones too) mid-generation;
//  - batch_controller (host_buffer of float or double; 0 to 4 samples of
//    independent sizes): steps, begin_step without finish_step, a sample's bad
//    input or output, wrong counts, reset();
//  - recorded_trajectory: load() of the raw bytes; or a small valid recording
//    saved and then truncated, overwritten or extended and loaded again; or
//    dimensions whose product overflows; then replay() of what loaded.
//
// Invariants (a violation aborts with a message):
//  - only easycache::error, the denoiser's own and the hook's own exception
//    leave the library, and an easycache::error comes exactly when the model
//    says the call is invalid (a stale or foreign pending included; a branch's
//    pending begun on branch 0's unfinished evaluation waits for it to finish,
//    and is stale once branch 0 was begun again); a second evaluation of a step
//    is refused as "evaluated twice";
//  - the sequence model (include/easycache/detail/generation.hpp): branch 0
//    starts a generation (emptying statistics and trace, even where a mask or
//    budget then refuses its schedule length) when none is in progress or none
//    of its steps finished, with another schedule length, at an earlier step, or
//    after the schedule's last step (a repeat of that step refused); a later
//    step than the next is a gap and is computed; another branch needs branch 0
//    of its step begun, finished, or failed in step() (then it computes with
//    out_of_sequence);
//  - a refused call, a throwing denoiser (two-phase: an abandoned pending) and
//    a throwing hook change nothing: statistics, trace and every pending's
//    validity are as before (a call that starts a generation starts it when begun);
//  - statistics add up: evaluations = calls + skips, extra evaluations are
//    counted as calls, the reasons sum to the steps, the trace holds one record
//    per evaluation, and all equal the model's counts;
//  - forced steps (warm-up counted from the generation's first step, the
//    schedule's last step, outside the window) are computed, with their reason,
//    by the policies that honour them; a skip needs a cached vector (the anchor:
//    one computed step; two for the reference rule, whose skips come from
//    usable, non-negative statistics with E < τ); fixed_interval (counted from
//    the first step) and step_mask decisions are the ones their rule gives;
//    other branches follow the anchor, but compute (no_history, stale_branch)
//    rather than replay none or a vector older than the anchor's last compute;
//  - a skipped output is x + Δ_a exactly, or x + Δ_a + w·(Δ_a − Δ_b) with the
//    linear predictor after two computed steps at distinct timesteps and a
//    finite w; it is finite when every input and denoiser output of the
//    generation was finite and moderate (and |w| moderate); a computed output
//    is the denoiser's;
//  - budget_policy: a budget accepted by configure is feasible and is met
//    exactly when a generation of every step of config.steps from step 0
//    completes (progress not given); one refused is infeasible;
//  - step_mask_policy::from_trace of such a completed generation, replayed on
//    its inputs and outputs, gives the same decisions and bit-identical outputs;
//  - batch_controller behaves as one controller per sample, called in order,
//    stopping at the first error, and finish_step resumes at the failed sample;
//  - recorded_trajectory::load either throws easycache::error or returns a
//    recording whose save() is the bytes it read; a file cut short is refused;
//    replay() of it adds up and its skips' errors are 0 on computed steps.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <easycache/extras/batch.hpp>
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>
#include <easycache/extras/replay.hpp>

#include "fuzz_check.hpp"
#include "fuzz_input.hpp"

namespace {

using fuzz::context;

// What the inputs exercised, for the replay program's summary.
struct tally {
  std::size_t runs = 0, begins = 0, finishes = 0, computed = 0, skipped = 0, extra = 0, extrapolated = 0, refused = 0,
              stale_refused = 0, denoiser_threw = 0, hook_threw = 0, hook_calls = 0, policies_refused = 0,
              budgets_met = 0, mask_replays = 0, batch_steps = 0, batch_resumed = 0, loads = 0, loads_refused = 0,
              trajectory_replays = 0, starts = 0, mid_schedule_starts = 0, schedule_lengths = 0, schedules_refused = 0,
              gaps = 0, twice_refused = 0, stale_branches = 0, after_failure = 0, batched = 0, waiting_refused = 0, probes = 0;
} seen;

struct denoiser_failure {};  // what the fuzzed denoiser throws
struct hook_failure {};      // what the fuzzed statistics reduction throws

using easycache::action;
using easycache::reason;

template <class S>
bool moderate(S v) {
  return std::isfinite(v) && std::abs(v) <= S(1e6);
}

template <class S>
bool same_value(S a, S b) {
  return a == b || (std::isnan(a) && std::isnan(b));
}

template <class S>
S special_value(fuzz::input& in) {
  using limits = std::numeric_limits<S>;
  switch (in.choice(8)) {
    case 0: return limits::quiet_NaN();
    case 1: return limits::infinity();
    case 2: return -limits::infinity();
    case 3: return limits::max();
    case 4: return limits::lowest();
    case 5: return limits::denorm_min();
    case 6: return S(1e30);
    default: return S(0);
  }
}

double timestep_value(fuzz::input& in, std::size_t index, std::size_t steps, double previous) {
  const double schedule = 1.0 - static_cast<double>(index) / static_cast<double>(steps);
  switch (in.choice(24)) {
    case 0: return std::numeric_limits<double>::quiet_NaN();
    case 1: return std::numeric_limits<double>::infinity();
    case 2: return previous;  // the same timestep again
    case 3: return in.flag() ? 1e308 : -1e308;
    case 4: return schedule + 1e-300;
    case 5: return -schedule;
    default: return schedule;
  }
}

double progress_value(fuzz::input& in) {
  static const double values[] = {0.0, 0.1, 0.5, 0.99, 1.0, -1.0, 2.0, std::numeric_limits<double>::infinity()};
  return values[in.choice(8)];
}

easycache::config fuzz_config(fuzz::input& in) {
  easycache::config c;
  c.steps = in.integer<std::size_t>(1, 24);
  c.warmup_steps = in.integer<std::size_t>(0, c.steps);
  static const double thresholds[] = {0.0, 0.01, 0.05, 0.2, 0.5, 2.0, 1e300, std::numeric_limits<double>::infinity()};
  c.threshold = thresholds[in.choice(8)];
  c.branches = in.integer<std::size_t>(1, 3);
  if (in.flag()) c.input_change = easycache::input_change_reference::last_compute;
  if (in.choice(3) == 0) {
    // Bounds anywhere, or exactly on a step's position t / steps.
    auto bound = [&] {
      return in.flag() ? in.fraction() : static_cast<double>(in.integer<std::size_t>(0, c.steps)) / static_cast<double>(c.steps);
    };
    const double a = bound(), b = bound();
    c.window = easycache::schedule_window{std::min(a, b), std::max(a, b)};
  }
  if (in.choice(4) == 0) c.sampling.stride = in.integer<std::size_t>(2, 5);
  if (in.flag()) c.predictor = easycache::skip_predictor::linear_in_timestep;
  c.record_trace = in.choice(6) != 0;
  c.measure_forced_steps = in.choice(4) == 0;
  return c;
}

std::string describe(const easycache::config& c) {
  std::string d = "threshold " + std::to_string(c.threshold) + ", steps " + std::to_string(c.steps) + ", warmup " +
                  std::to_string(c.warmup_steps) + ", branches " + std::to_string(c.branches) +
                  (c.input_change == easycache::input_change_reference::last_compute ? ", last_compute" : "") +
                  (c.predictor == easycache::skip_predictor::linear_in_timestep ? ", linear" : "");
  if (c.window) d += ", window " + std::to_string(c.window->start) + ".." + std::to_string(c.window->end);
  d += ", stride " + std::to_string(c.sampling.stride);
  return d + (c.record_trace ? ", trace" : "") + (c.measure_forced_steps ? ", measure_forced" : "");
}

// The forced-compute rule of the policies that honour it, restated: in a
// generation that starts at step `first` of a schedule of `steps` steps, the
// warm-up counts from `first` and the schedule's last step is forced.
bool forced(const easycache::config& c, std::size_t index, double progress, std::size_t first, std::size_t steps) {
  if (c.window) return progress < c.window->start || progress >= c.window->end;
  return index - first < c.warmup_steps || index + 1 >= steps;
}
bool forced(const easycache::config& c, std::size_t index, double progress) {
  return forced(c, index, progress, 0, c.steps);
}

// The reason a forced step is computed with.
reason forced_reason(const easycache::config& c, std::size_t index, std::size_t first) {
  if (c.window) return reason::outside_window;
  return index - first < c.warmup_steps ? reason::warmup : reason::last_step;
}

double default_progress(std::size_t index, std::size_t steps) {
  return static_cast<double>(index) / static_cast<double>(steps);
}
double default_progress(const easycache::config& c, std::size_t index) { return default_progress(index, c.steps); }

// ---- policies ----

enum class policy_kind { reference, fixed_interval, mask, evenly_spaced, budget_calls, budget_speedup, count };

const char* name(policy_kind k) {
  static const char* names[] = {"reference", "fixed_interval", "mask", "evenly_spaced", "budget_calls",
                                "budget_speedup"};
  return names[static_cast<int>(k)];
}

struct policy_setup {
  policy_kind kind = policy_kind::reference;
  std::size_t interval = 1;
  std::vector<bool> mask;
  std::size_t mask_steps = 0, mask_warmup = 0, mask_calls = 0;  // evenly_spaced
  std::size_t calls = 0;
  double speedup = 1, smoothing = 0.25;

  bool budget() const { return kind == policy_kind::budget_calls || kind == policy_kind::budget_speedup; }

  // Computed steps the budget asks for in a generation of `steps` (budget::calls_for, restated).
  std::size_t target(std::size_t steps) const {
    if (kind == policy_kind::budget_speedup)
      return static_cast<std::size_t>(std::ceil(static_cast<double>(steps) / speedup - 1e-9));
    return calls;
  }

  // Whether building the policy object itself throws.
  bool construction_refused() const {
    switch (kind) {
      case policy_kind::fixed_interval: return interval == 0;
      case policy_kind::evenly_spaced:
        return mask_steps == 0 || mask_calls > mask_steps || mask_calls < std::min(mask_steps - 1, mask_warmup) + 1;
      case policy_kind::budget_speedup: return !(speedup >= 1.0) || !std::isfinite(speedup) || !(smoothing > 0 && smoothing <= 1);
      case policy_kind::budget_calls: return !(smoothing > 0 && smoothing <= 1);
      default: return false;
    }
  }

  // Whether the policy accepts a configuration: a mask must have one entry per
  // step; a budget must be feasible: at least the forced steps, plus step 0 when
  // it is not forced (nothing is cached before it), and at least two computed
  // steps (min(2, steps)); at most every step.
  bool accepts(const easycache::config& c) const {
    if (kind == policy_kind::mask || kind == policy_kind::evenly_spaced)
      return (kind == policy_kind::mask ? mask.size() : mask_steps) == c.steps;
    if (!budget()) return true;
    std::size_t forced_steps = 0;
    for (std::size_t t = 0; t < c.steps; ++t) forced_steps += forced(c, t, default_progress(c, t));
    const bool first_free = !forced(c, 0, 0.0);
    const std::size_t minimum = std::max<std::size_t>(forced_steps + first_free, std::min<std::size_t>(2, c.steps));
    const std::size_t n = target(c.steps);
    return n >= minimum && n <= c.steps;
  }

  easycache::any_policy build() const {
    switch (kind) {
      case policy_kind::fixed_interval: return easycache::fixed_interval_policy(interval);
      case policy_kind::mask: return easycache::step_mask_policy(mask);
      case policy_kind::evenly_spaced:
        return easycache::step_mask_policy::evenly_spaced(mask_steps, mask_warmup, mask_calls);
      case policy_kind::budget_calls: return easycache::budget_policy(easycache::budget::calls(calls), smoothing);
      case policy_kind::budget_speedup:
        return easycache::budget_policy(easycache::budget::speedup(speedup), smoothing);
      default: return easycache::any_policy();
    }
  }

  // The decision of a rule that needs no statistics, before the controller's
  // "nothing cached yet" and "after a gap" overrides; nullopt for the reference
  // rule and budgets. The fixed interval counts from the generation's first step.
  std::optional<action> planned(const easycache::config& c, std::size_t index, double progress, std::size_t first,
                                std::size_t steps) const {
    if (kind == policy_kind::mask || kind == policy_kind::evenly_spaced) {
      const std::vector<bool>& m = kind == policy_kind::mask ? mask : evenly_spaced_mask();
      return index >= m.size() || m[index] ? action::compute : action::skip;
    }
    if (kind == policy_kind::fixed_interval) {
      if (forced(c, index, progress, first, steps)) return action::compute;
      const std::size_t position = index - first;
      const std::size_t since = position - std::min(position, c.warmup_steps);
      return since % interval == 0 ? action::compute : action::skip;
    }
    return std::nullopt;
  }

  // Masks and budgets are made for config.steps steps: they refuse (in plan())
  // a generation whose schedule has another length.
  bool fixed_schedule() const { return kind == policy_kind::mask || kind == policy_kind::evenly_spaced || budget(); }

  bool honours_forced_steps() const { return kind != policy_kind::mask && kind != policy_kind::evenly_spaced; }

  // evenly_spaced's mask, restated: the first warm-up steps and the last one,
  // the rest spread evenly over the steps in between.
  const std::vector<bool>& evenly_spaced_mask() const {
    if (spaced_.empty() && mask_steps > 0) {
      spaced_.assign(mask_steps, false);
      const std::size_t head = std::min(mask_warmup, mask_steps - 1);
      for (std::size_t t = 0; t < std::min(mask_warmup, mask_steps); ++t) spaced_[t] = true;
      spaced_[mask_steps - 1] = true;
      const std::size_t middle = mask_steps - 1 - head, spread = mask_calls - (head + 1);
      for (std::size_t j = 0; j < spread; ++j) spaced_[head + (j * middle) / spread] = true;
    }
    return spaced_;
  }

  std::string describe() const {
    std::string d = name(kind);
    if (kind == policy_kind::fixed_interval) d += " " + std::to_string(interval);
    if (kind == policy_kind::evenly_spaced)
      d += " " + std::to_string(mask_steps) + "/" + std::to_string(mask_warmup) + "/" + std::to_string(mask_calls);
    if (kind == policy_kind::budget_calls) d += " " + std::to_string(calls);
    if (kind == policy_kind::budget_speedup) d += " " + std::to_string(speedup);
    return d;
  }

 private:
  mutable std::vector<bool> spaced_;
};

policy_setup fuzz_policy(fuzz::input& in, const easycache::config& c) {
  policy_setup p;
  p.kind = static_cast<policy_kind>(in.choice(static_cast<std::size_t>(policy_kind::count)));
  switch (p.kind) {
    case policy_kind::fixed_interval: p.interval = in.integer<std::size_t>(0, 5); break;
    case policy_kind::mask: {
      const std::size_t n = in.choice(8) == 0 ? c.steps + 1 : c.steps;
      for (std::size_t t = 0; t < n; ++t) p.mask.push_back(in.flag());
      break;
    }
    case policy_kind::evenly_spaced:
      p.mask_steps = in.choice(8) == 0 ? c.steps + 1 : c.steps;
      p.mask_warmup = in.choice(8) == 0 ? std::numeric_limits<std::size_t>::max() : in.integer<std::size_t>(0, c.steps);
      p.mask_calls = in.integer<std::size_t>(0, c.steps + 1);
      break;
    case policy_kind::budget_calls: p.calls = in.integer<std::size_t>(0, c.steps + 1); break;
    case policy_kind::budget_speedup: {
      static const double values[] = {1.0, 1.5, 2.0, 3.3, 10.0, 1e300, 0.5, std::numeric_limits<double>::quiet_NaN(),
                                      std::numeric_limits<double>::infinity()};
      p.speedup = values[in.choice(9)];
      break;
    }
    default: break;
  }
  if (p.budget() && in.choice(8) == 0) {
    static const double values[] = {0.0, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN()};
    p.smoothing = values[in.choice(4)];
  }
  return p;
}

// ---- one controller, every API ----

enum class hook_mode { none, scale, perturb, negative, zero_count, throws, throws_sometimes, count };

template <class S>
class api_harness {
  using tensor = easycache::host_buffer<S>;
  using controller = easycache::controller<tensor, easycache::any_policy>;
  using pending = typename controller::pending;
  static constexpr std::size_t extra_key = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t no_step = std::numeric_limits<std::size_t>::max();

  struct holder {
    std::vector<S> storage;
    tensor view;
    holder() = default;
    holder(const holder&) = delete;
    holder& operator=(const holder&) = delete;
    void set(const std::vector<S>& values, bool null_data = false) {
      storage = values;
      view = tensor{null_data ? nullptr : storage.data(), values.size()};
    }
    void blank(std::size_t n) {
      storage.assign(n, std::numeric_limits<S>::quiet_NaN());
      view = tensor{storage.data(), n};
    }
  };

  struct branch_model {
    bool sized = false;
    std::size_t size = 0, computes = 0;
    std::size_t last_step = no_step;     // the step of its last finished evaluation
    std::size_t last_compute = no_step;  // the step its cached vector is from
    std::vector<S> delta, delta_prev;
    double t_last = 0, t_prev = 0;
  };

  // Which evaluation of branch 0 another branch's call follows.
  enum class follows { nothing, open, finished, failed };

  // What the model says about a call before it is made.
  struct call_plan {
    std::size_t steps = 0;   // its schedule length: step_info::steps, or config.steps
    bool refused = false;    // easycache::error
    bool starts = false;     // branch 0 begins a generation (also when the policy then refuses its schedule)
    bool gap = false;        // branch 0 after steps left out
    bool twice = false;      // refused as a second evaluation of the step
    follows after = follows::nothing;
  };

  struct issued {
    pending p;
    std::size_t key = 0;  // branch, or extra_key
    std::vector<S> x;     // the input it was begun with
    bool valid = true;    // the latest begin_step of its branch, not finished, not made stale since
    // Branch 0: its evaluation's number; another branch: the number of the
    // anchor evaluation whose verdict it took (0: none, after a failed one).
    std::uint64_t anchor = 0;
    follows after = follows::nothing;
    std::uint64_t handle = 0;  // the harness's name for it (its position in issued_ moves)
  };

  // A finished evaluation of the generation (extra ones aside), for the mask replay.
  struct logged {
    easycache::step_info info;
    std::vector<S> x, v, out;
    bool computed = false;
  };

 public:
  explicit api_harness(fuzz::input& in) : in_(in) {}

  void run() {
    cfg_ = fuzz_config(in_);
    setup_ = fuzz_policy(in_, cfg_);
    context = "constructor with " + describe(cfg_) + ", policy " + setup_.describe();
    const bool refused = setup_.construction_refused() || !setup_.accepts(cfg_);
    try {
      cache_.emplace(cfg_, setup_.build());
      FUZZ_CHECK(!refused, "a policy the model refuses was accepted (an infeasible budget, a mask of another length)");
    } catch (const easycache::error& e) {
      ++seen.policies_refused;
      FUZZ_CHECK(refused, "a valid policy was refused");
      FUZZ_CHECK(std::string(e.what()).size() > 10, "an error without a message");
      return;
    }
    gen_records_ = cfg_.record_trace;
    for (int op = 0; op < 300 && !in_.empty(); ++op) {
      switch (in_.choice(16)) {
        case 0: reset(); break;
        case 1: reset_config(); break;
        case 2: set_hook(static_cast<hook_mode>(in_.choice(static_cast<std::size_t>(hook_mode::count)))); break;
        case 3: foreign(); break;
        case 4: finish_old(); break;
        case 5: evaluate(extra_call(), in_.flag()); break;
        case 6: evaluate(random_call(), false); break;
        case 7: evaluate(random_call(), true); break;
        case 8: abandon(); break;
        case 13: batched(); break;
        case 14: new_schedule(); break;
        case 15: evaluate(out_of_order_call(), in_.flag()); break;
        default: evaluate(next_call(), in_.flag()); break;
      }
      check_stats();
    }
  }

 private:
  // ---- calls a sampler makes ----

  std::size_t schedule() const { return schedule_ ? schedule_ : cfg_.steps; }
  // The schedule length of a call: step_info::steps, else the generation's for
  // other branches and extra evaluations, else config.steps.
  std::size_t schedule_of(const easycache::step_info& info) const {
    if (info.steps) return info.steps;
    return (info.branch != 0 || info.extra_evaluation) && in_gen_ ? gen_steps_ : cfg_.steps;
  }
  std::size_t last_or_zero() const { return in_gen_ && last_ != no_step ? last_ : 0; }

  easycache::step_info make_info(std::size_t index, std::size_t branch) {
    easycache::step_info info;
    info.index = index;
    info.branch = branch;
    info.steps = schedule_;
    info.timestep = timestep_value(in_, index, schedule(), last_timestep_);
    last_timestep_ = info.timestep;
    if (in_.choice(8) == 0) info.progress = progress_value(in_);
    return info;
  }

  // The missing branches of the current step (some left out: guidance on part
  // of the schedule), else the anchor of the next step (or the first step of a
  // new generation). After a failed anchor, sometimes its step's other branches.
  easycache::step_info next_call() {
    if (in_gen_ && failed_ != no_step) {
      for (std::size_t b = 1; b < branches_.size(); ++b)
        if (branches_[b].last_step != failed_ && in_.choice(4) == 0) return make_info(failed_, b);
    }
    if (in_gen_ && last_ != no_step) {
      for (std::size_t b = 1; b < branches_.size(); ++b)
        if (branches_[b].last_step != last_ && in_.choice(8) != 0) return make_info(last_, b);
    }
    return make_info(next_anchor_step(), 0);
  }

  std::size_t next_anchor_step() const {
    const bool continues = in_gen_ && last_ != no_step && last_ + 1 < gen_steps_ && gen_steps_ == schedule();
    return continues ? last_ + 1 : std::min(start_index_, schedule() - 1);
  }

  // Any step of any branch (out of range too), sometimes with another schedule length or none.
  easycache::step_info random_call() {
    easycache::step_info info =
        make_info(in_.integer<std::size_t>(0, schedule()), in_.integer<std::size_t>(0, cfg_.branches));
    if (in_.choice(4) == 0) info.steps = in_.choice(3) == 0 ? 0 : in_.integer<std::size_t>(1, schedule() + 2);
    return info;
  }

  easycache::step_info extra_call() {
    easycache::step_info info = make_info(last_or_zero(), in_.integer<std::size_t>(0, cfg_.branches - 1));
    info.extra_evaluation = true;
    return info;
  }

  // Branch 0 out of order: after a gap, the last step again, an earlier step.
  easycache::step_info out_of_order_call() {
    const std::size_t last = last_or_zero();
    switch (in_.choice(3)) {
      case 0: return make_info(last + in_.integer<std::size_t>(2, 4), 0);
      case 1: return make_info(last, 0);
      default: return make_info(last - std::min(last, in_.integer<std::size_t>(1, 3)), 0);
    }
  }

  std::size_t choose_size() {
    switch (in_.choice(8)) {
      case 0: return 0;
      case 1: return 1;
      case 2: return in_.integer<std::size_t>(1000, 1100);
      default: return in_.integer<std::size_t>(2, 40);
    }
  }

  // The anchor's trajectory: smooth motion, sometimes a new size (mostly where
  // a generation starts), rarely special values.
  std::vector<S> next_input(const easycache::step_info& info) {
    if (info.branch == 0 && !info.extra_evaluation) {
      const bool starting = classify(info.index, schedule_of(info)) == kind::start;
      if (trajectory_.empty() || (starting && in_.choice(4) == 0) || in_.choice(64) == 0) {
        trajectory_.assign(choose_size(), S(0));
        const S scale = S(in_.integer<int>(1, 400)) / S(100);
        for (std::size_t i = 0; i < trajectory_.size(); ++i)
          trajectory_[i] = scale * S(std::sin(0.37 * static_cast<double>(i) + 1.0));
      } else {
        static const double rates[] = {0.0, 1e-6, 1e-3, 0.01, 0.05, 0.2, 1.0};
        const S rate = S(rates[in_.choice(7)]);
        for (S& v : trajectory_) v = S(0.97) * v + rate * S(std::cos(static_cast<double>(v)));
      }
    }
    std::vector<S> x = trajectory_;
    if (info.branch != 0 && in_.choice(16) == 0) x.resize(choose_size(), S(0.5));
    if (!x.empty() && in_.choice(16) == 0) x[in_.integer<std::size_t>(0, x.size() - 1)] = special_value<S>(in_);
    return x;
  }

  // What the model (the denoiser) returns for x.
  std::vector<S> model_output(const std::vector<S>& x) {
    static const S alphas[] = {S(0.5), S(0.9), S(-0.5), S(1), S(0)};
    const S alpha = alphas[in_.choice(5)];
    const S beta = S(in_.integer<int>(-400, 400)) / S(100);
    std::vector<S> v(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) v[i] = alpha * x[i] + beta * S(std::sin(0.3 * static_cast<double>(i)));
    if (!v.empty() && in_.choice(16) == 0) v[in_.integer<std::size_t>(0, v.size() - 1)] = special_value<S>(in_);
    return v;
  }

  // ---- the model of the contract ----

  // How branch 0's call relates to the generation in progress: it starts one
  // when none is in progress, none of its steps has finished, the schedule
  // length differs, the step is earlier, or the last step has finished (but a
  // repeat of that step is refused when the generation took more than one).
  enum class kind { start, next, gap, repeat };
  kind classify(std::size_t index, std::size_t steps) const {
    if (!in_gen_ || last_ == no_step || steps != gen_steps_) return kind::start;
    if (last_ + 1 >= gen_steps_) return index == last_ && last_ != first_ ? kind::repeat : kind::start;
    if (index < last_) return kind::start;
    if (index == last_) return kind::repeat;
    return index == last_ + 1 ? kind::next : kind::gap;
  }

  // Another branch at `index` needs branch 0 of that step begun (and not
  // finished), finished last, or failed (its denoiser threw in step()).
  follows anchor_of(std::size_t index) const {
    if (!in_gen_) return follows::nothing;
    if (open_step_ == index) return follows::open;
    if (last_ == index) return follows::finished;
    if (failed_ == index) return follows::failed;
    return follows::nothing;
  }

  call_plan plan_call(const easycache::step_info& info, std::size_t n, bool null_data) const {
    call_plan c;
    c.steps = schedule_of(info);
    if (info.branch >= cfg_.branches || info.index >= c.steps ||
        (linear() && !info.extra_evaluation && !std::isfinite(info.timestep)) || (null_data && n != 0)) {
      c.refused = true;
      return c;
    }
    if (info.extra_evaluation) {
      c.refused = !in_gen_;
      return c;
    }
    if (info.branch == 0) {
      switch (classify(info.index, c.steps)) {
        case kind::start:
          c.starts = true;
          c.refused = setup_.fixed_schedule() && c.steps != cfg_.steps;
          break;
        case kind::repeat: c.refused = c.twice = true; break;
        case kind::gap:
          c.gap = true;
          c.refused = n != anchor_size_;
          break;
        default: c.refused = n != anchor_size_; break;
      }
      return c;
    }
    c.after = anchor_of(info.index);
    if (c.after == follows::nothing) {
      c.refused = true;
      return c;
    }
    const branch_model& b = branches_[info.branch];
    const bool other_schedule = info.steps != 0 && info.steps != gen_steps_;
    c.twice = !other_schedule && b.last_step == info.index;
    c.refused = other_schedule || c.twice || (b.sized && n != b.size);
    return c;
  }

  bool linear() const { return cfg_.predictor == easycache::skip_predictor::linear_in_timestep; }

  static std::size_t key_of(const easycache::step_info& info) {
    return info.extra_evaluation ? extra_key : info.branch;
  }

  // Branch 0 began a generation at this step: the previous one ended
  // (statistics and trace emptied: checked unless the step has finished too),
  // and every pending is stale.
  void start_generation(const easycache::step_info& info, std::size_t steps, std::size_t n, bool finished_too) {
    ++seen.starts;
    seen.mid_schedule_starts += info.index > 0;
    in_gen_ = true;
    gen_steps_ = steps;
    first_ = info.index;
    last_ = failed_ = open_step_ = anchor_last_compute_ = no_step;
    open_anchor_ = finished_anchor_ = 0;
    steps_done_ = 0;
    anchor_size_ = n;
    branches_.assign(cfg_.branches, branch_model{});
    branches_[0].sized = true;
    branches_[0].size = n;
    evaluations_ = calls_ = skips_ = extras_ = anchor_computes_ = 0;
    gen_records_ = cfg_.record_trace;
    gen_default_progress_ = true;
    gen_moderate_ = true;
    gen_replayable_ = true;
    log_.clear();
    for (issued& i : issued_) i.valid = false;
    if (!finished_too)
      FUZZ_CHECK(cache_->stats().evaluations == 0 && cache_->trace().empty(), "a new generation kept the previous statistics");
  }

  // A begin_step the model accepted has taken effect (or, refused by the
  // policy, has started a generation): the branch's earlier pendings are stale;
  // branch 0's evaluation is open with its verdict (nullopt: not known).
  // Returns branch 0's evaluation number.
  std::uint64_t begun(const easycache::step_info& info, std::size_t n, const call_plan& c, std::optional<action> act,
                      std::optional<reason> why, bool finished_too = false) {
    if (c.starts) start_generation(info, c.steps, n, finished_too);
    if (c.refused) return 0;
    for (issued& i : issued_)
      if (i.key == key_of(info)) i.valid = false;
    if (info.extra_evaluation || info.branch != 0) return 0;
    open_step_ = info.index;
    open_action_ = act;
    open_reason_ = why;
    open_anchor_ = ++anchor_count_;
    return open_anchor_;
  }

  // Branch 0's decision where the policy's rule gives it without statistics.
  std::optional<action> predicted_anchor_action(const easycache::step_info& info, const call_plan& c) const {
    const std::size_t first = c.starts ? info.index : first_;
    const std::size_t computes = c.starts ? 0 : anchor_computes_;
    const double progress = std::isfinite(info.progress) ? info.progress : default_progress(info.index, c.steps);
    if ((setup_.honours_forced_steps() && forced(cfg_, info.index, progress, first, c.steps)) || c.gap || computes == 0 ||
        (setup_.kind == policy_kind::reference && computes < 2))
      return action::compute;
    return setup_.planned(cfg_, info.index, progress, first, c.steps);
  }

  // The anchor evaluation another branch's call follows (0: a failed one).
  std::uint64_t followed(const call_plan& c) const {
    return c.after == follows::open ? open_anchor_ : c.after == follows::finished ? finished_anchor_ : 0;
  }

  // The decision the contract allows at begin_step (`why`: nullopt where not observed).
  void check_decision(const easycache::step_info& info, const call_plan& c, action got, std::optional<reason> why) {
    if (info.extra_evaluation) {
      FUZZ_CHECK(got == action::compute, "an extra evaluation was not computed");
      if (why) FUZZ_CHECK(*why == reason::extra_evaluation, "an extra evaluation with another reason");
      return;
    }
    if (info.branch != 0) {
      const branch_model& b = branches_[info.branch];
      std::optional<action> expected;
      std::optional<reason> expected_reason;
      switch (c.after) {
        case follows::open:
          expected = open_action_;
          expected_reason = open_reason_;
          break;
        case follows::finished:
          expected = anchor_action_;
          expected_reason = anchor_reason_;
          break;
        default:
          expected = action::compute;
          expected_reason = reason::out_of_sequence;
          ++seen.after_failure;
          break;
      }
      if (expected == action::skip && b.computes == 0) {
        expected = action::compute;
        expected_reason = reason::no_history;
      } else if (expected == action::skip && b.last_compute < anchor_last_compute_) {
        expected = action::compute;
        expected_reason = reason::stale_branch;
        ++seen.stale_branches;
      }
      if (expected) FUZZ_CHECK(got == *expected, "another branch did not follow the anchor's decision");
      if (expected_reason && why)
        FUZZ_CHECK(*why == *expected_reason, "another branch's decision has another reason than the model's");
      if (got == action::skip)
        FUZZ_CHECK(b.computes > 0 && b.last_compute >= anchor_last_compute_,
                   "a skip replays a branch vector older than the anchor's last computed step, or none");
      return;
    }
    const std::size_t first = c.starts ? info.index : first_;
    const std::size_t computes = c.starts ? 0 : anchor_computes_;
    const double progress = std::isfinite(info.progress) ? info.progress : default_progress(info.index, c.steps);
    const bool is_forced = setup_.honours_forced_steps() && forced(cfg_, info.index, progress, first, c.steps);
    if (is_forced) {
      FUZZ_CHECK(got == action::compute, "a forced step (warm-up, last, outside the window) was skipped");
      if (why) FUZZ_CHECK(*why == forced_reason(cfg_, info.index, first), "a forced step with another reason");
    }
    if (c.gap) {
      ++seen.gaps;
      FUZZ_CHECK(got == action::compute, "a step after a gap was skipped");
    }
    if (got == action::skip) {
      FUZZ_CHECK(computes >= 1, "a skip with nothing cached");
      if (setup_.kind == policy_kind::reference)
        FUZZ_CHECK(computes >= 2, "a skip of the reference rule before two computed anchor steps");
    }
    if (const auto planned = setup_.planned(cfg_, info.index, progress, first, c.steps)) {
      const action expected = computes == 0 || c.gap ? action::compute : *planned;
      FUZZ_CHECK(got == expected, "a fixed-interval or mask decision is not the rule's");
      if (why && !is_forced) {
        const reason expected_reason = *planned == action::compute ? reason::policy
                                       : c.gap                     ? reason::out_of_sequence
                                       : computes == 0             ? reason::no_history
                                                                   : reason::policy;
        FUZZ_CHECK(*why == expected_reason, "a fixed-interval or mask decision with another reason");
      }
    }
    if (setup_.kind == policy_kind::reference && why && !is_forced) {
      FUZZ_CHECK((*why == reason::no_history) == (computes < 2), "no_history does not match the history");
      if (c.gap && computes >= 2)
        FUZZ_CHECK(*why == reason::out_of_sequence, "a step after a gap was computed with another reason");
    }
  }

  // x + Δ_a, or its extrapolation in the timestep, as the documentation defines it.
  std::vector<S> prediction(const branch_model& b, const std::vector<S>& x, double timestep, double& weight) const {
    std::vector<S> out(x.size());
    weight = 0;
    bool extrapolate = false;
    if (linear() && b.computes >= 2 && b.t_last != b.t_prev) {
      weight = (timestep - b.t_last) / (b.t_last - b.t_prev);
      extrapolate = std::isfinite(weight);
      if (!extrapolate) weight = 0;
    }
    const S w = static_cast<S>(weight);
    for (std::size_t i = 0; i < x.size(); ++i) {
      const S d = b.delta[i];
      out[i] = extrapolate ? x[i] + (d + w * (d - b.delta_prev[i])) : x[i] + d;
    }
    if (extrapolate) ++seen.extrapolated;
    return out;
  }

  // A finish_step (or step()) that succeeded: check what it wrote and update
  // the model. `anchor`: branch 0's evaluation number; `after`: what another
  // branch followed.
  void finished(const easycache::step_info& info, const std::vector<S>& x, action got, std::optional<reason> why,
                const std::vector<S>& v, const S* out, std::uint64_t anchor, follows after) {
    ++seen.finishes;
    const std::size_t n = x.size();
    std::vector<S> result(out, out + n);
    if (got == action::compute) {
      ++seen.computed;
      for (std::size_t i = 0; i < n; ++i)
        FUZZ_CHECK(same_value(result[i], v[i]), "a computed output is not the denoiser's");
    }
    ++evaluations_;
    if (got == action::compute) {
      ++calls_;
    } else {
      ++skips_;
    }
    if (info.extra_evaluation) {
      ++seen.extra;
      ++extras_;
      check_record(info, got, why, true);
      return;
    }
    for (S e : x) gen_moderate_ = gen_moderate_ && moderate(e);
    branch_model& b = branches_[info.branch];
    if (!b.sized) {
      b.sized = true;
      b.size = n;
    }
    if (got == action::compute) {
      for (S e : v) gen_moderate_ = gen_moderate_ && moderate(e);
      b.delta_prev = b.delta;
      b.delta.resize(n);
      for (std::size_t i = 0; i < n; ++i) b.delta[i] = v[i] - x[i];
      b.t_prev = b.t_last;
      b.t_last = info.timestep;
      ++b.computes;
      b.last_compute = info.index;
    } else {
      ++seen.skipped;
      FUZZ_CHECK(b.computes > 0 && b.delta.size() == n, "a skip without a cached vector of this size");
      double weight = 0;
      const std::vector<S> expected = prediction(b, x, info.timestep, weight);
      for (std::size_t i = 0; i < n; ++i)
        FUZZ_CHECK(same_value(result[i], expected[i]),
                   linear() ? "a skipped output is not x + Δa + w(Δa − Δb) (or x + Δa)" : "a skipped output is not x + Δa");
      if (gen_moderate_ && std::abs(weight) <= 1e6)
        for (S e : result) FUZZ_CHECK(std::isfinite(e), "a skipped output is not finite although every input and output was moderate");
    }
    b.last_step = info.index;
    check_record(info, got, why, false);
    logged entry;
    entry.info = info;
    entry.x = x;
    entry.v = got == action::compute ? v : std::vector<S>{};
    entry.out = result;
    entry.computed = got == action::compute;
    log_.push_back(std::move(entry));
    if (info.branch != 0) {
      // Evaluated before its anchor finished: a replay in finishing order could not do that.
      if (after == follows::failed) gen_replayable_ = false;
      return;
    }
    if (std::isfinite(info.progress)) gen_default_progress_ = false;
    anchor_action_ = got;
    anchor_reason_ = why;
    anchor_computes_ += got == action::compute;
    if (got == action::compute) anchor_last_compute_ = info.index;
    ++steps_done_;
    last_ = info.index;
    failed_ = open_step_ = no_step;
    open_anchor_ = 0;
    finished_anchor_ = anchor;
    // The pendings of other branches begun for another step are stale; those
    // of this step (begun before branch 0 finished) stay.
    for (issued& i : issued_)
      if (i.key != 0 && i.key != extra_key && i.p.info().index != info.index) i.valid = false;
    // The budget holds while the generation runs from step 0 of config.steps without gaps.
    const bool whole_so_far = first_ == 0 && gen_steps_ == cfg_.steps && steps_done_ == last_ + 1;
    if (setup_.budget() && gen_default_progress_ && whole_so_far)
      FUZZ_CHECK(anchor_computes_ <= setup_.target(cfg_.steps), "more computed steps than the budget");
    if (last_ + 1 >= gen_steps_) generation_completed();
  }

  void check_record(const easycache::step_info& info, action got, std::optional<reason> why, bool extra) {
    if (!gen_records_) return;
    const auto& trace = cache_->trace();
    FUZZ_CHECK(!trace.empty(), "no trace record for an evaluation");
    const easycache::step_record& r = trace.back();
    FUZZ_CHECK(r.step == info.index && r.branch == info.branch && r.action == got, "the record names another evaluation");
    FUZZ_CHECK((r.reason == reason::extra_evaluation) == extra, "an extra evaluation's record has another reason");
    if (why) FUZZ_CHECK(r.reason == *why, "the record's reason is not the pending's");
    if (extra || info.branch != 0 || setup_.kind != policy_kind::reference) return;
    if (r.reason == reason::below_threshold || got == action::skip) {
      FUZZ_CHECK(r.reason == reason::below_threshold && got == action::skip, "a skip of the reference rule with another reason");
      FUZZ_CHECK(std::isfinite(r.input_change) && r.input_change >= 0 && std::isfinite(r.transformation_rate) &&
                     r.transformation_rate >= 0 && std::isfinite(r.output_norm) && r.output_norm > 0,
                 "a skip decided from unusable or negative statistics");
      FUZZ_CHECK(r.accumulated_error < cfg_.threshold && r.predicted_error >= 0, "a skip with E not below the threshold");
    }
  }

  // The generation's last step is done. When it ran every step of config.steps
  // from step 0: the budget is met, and its decisions replay through
  // step_mask_policy::from_trace.
  void generation_completed() {
    const bool whole = first_ == 0 && gen_steps_ == cfg_.steps && steps_done_ == gen_steps_;
    if (!whole) return;
    if (setup_.budget() && gen_default_progress_) {
      FUZZ_CHECK(anchor_computes_ == setup_.target(cfg_.steps), "a feasible budget was not met");
      ++seen.budgets_met;
    }
    if (!gen_records_ || !gen_replayable_) return;
    using replay_controller = easycache::controller<tensor, easycache::step_mask_policy>;
    replay_controller replayed(cfg_, easycache::step_mask_policy::from_trace(cache_->trace()));
    action decided = action::compute;
    replayed.on_decision([&](const easycache::step_record& r) { decided = r.action; });
    for (const logged& e : log_) {
      holder x, out;
      x.set(e.x);
      out.blank(e.x.size());
      replayed.step(x.view, out.view, e.info, [&](const tensor&, tensor& o) {
        FUZZ_CHECK(e.computed, "the replayed mask computes a step the run skipped");
        std::copy(e.v.begin(), e.v.end(), o.data);
      });
      FUZZ_CHECK(decided == (e.computed ? action::compute : action::skip), "the replayed mask decides otherwise");
      for (std::size_t i = 0; i < e.out.size(); ++i)
        FUZZ_CHECK(same_value(out.storage[i], e.out[i]), "the replayed mask gives another output");
    }
    ++seen.mask_replays;
  }

  // Everything a failed call must leave as it was.
  struct snapshot {
    easycache::statistics stats;
    std::size_t trace_size = 0;
  };
  snapshot take() const { return {cache_->stats(), cache_->trace().size()}; }
  void unchanged(const snapshot& s, const char* what) const {
    const easycache::statistics& now = cache_->stats();
    FUZZ_CHECK(now.steps == s.stats.steps && now.evaluations == s.stats.evaluations && now.calls == s.stats.calls &&
                   now.skips == s.stats.skips && now.extra_evaluations == s.stats.extra_evaluations &&
                   now.reasons == s.stats.reasons && cache_->trace().size() == s.trace_size,
               what);
  }
  void emptied(const char* what) const {
    FUZZ_CHECK(cache_->stats().evaluations == 0 && cache_->stats().steps == 0 && cache_->trace().empty(), what);
  }

  void check_refusal_message(const call_plan& c, const easycache::step_info& info, const std::string& message) {
    if (!c.twice) return;
    ++seen.twice_refused;
    FUZZ_CHECK(message.find("evaluated twice at step " + std::to_string(info.index)) != std::string::npos,
               "a second evaluation of a step was refused with another message");
  }

  // ---- operations ----

  // begin_step, then finish_step (possibly after bad attempts), or step().
  void evaluate(const easycache::step_info& info, bool two_phase) {
    const std::vector<S> xs = next_input(info);
    const bool null_data = in_.choice(16) == 0;
    describe_call(two_phase ? "begin_step" : "step", info, xs.size());
    seen.schedule_lengths += info.steps != 0;
    if (!two_phase) return step_call(info, xs, null_data);
    const std::optional<std::size_t> which = begin(info, xs, null_data);
    if (!which) return;
    if (in_.choice(8) == 0) return;  // abandoned
    finish(*which, true);
  }

  std::optional<std::size_t> begin(const easycache::step_info& info, const std::vector<S>& xs, bool null_data) {
    holder x;
    x.set(xs, null_data);
    const call_plan c = plan_call(info, xs.size(), null_data);
    const snapshot before = take();
    ++seen.begins;
    try {
      pending p = cache_->begin_step(x.view, info);
      FUZZ_CHECK(!c.refused, "begin_step accepted a call the model refuses");
      FUZZ_CHECK(p.info().index == info.index && p.info().branch == info.branch, "the pending names another call");
      check_decision(info, c, p.action(), p.reason());
      const std::uint64_t follows_anchor = followed(c);
      const std::uint64_t own = begun(info, xs.size(), c, p.action(), p.reason());
      if (issued_.size() >= 6) issued_.erase(issued_.begin());
      const bool anchor = info.branch == 0 && !info.extra_evaluation;
      issued_.push_back(issued{p, key_of(info), xs, true, anchor ? own : follows_anchor, c.after, ++handles_});
      // begin_step only decides: statistics and trace are untouched.
      if (!c.starts) unchanged(before, "begin_step changed the statistics");
      return issued_.size() - 1;
    } catch (const easycache::error& e) {
      ++seen.refused;
      context += std::string(", threw: ") + e.what();
      FUZZ_CHECK(c.refused, "begin_step refused a valid call");
      check_refusal_message(c, info, e.what());
      if (c.starts) {
        // The policy refused the schedule of the generation just started.
        ++seen.schedules_refused;
        begun(info, xs.size(), c, std::nullopt, std::nullopt);
        emptied("a generation refused by the policy kept the previous statistics");
        return std::nullopt;
      }
    } catch (const hook_failure&) {
      ++seen.hook_threw;
      FUZZ_CHECK(!c.refused && info.branch == 0 && !c.starts && !info.extra_evaluation,
                 "the hook ran where no decision is made");
    } catch (...) {
      FUZZ_CHECK(false, "begin_step threw something other than easycache::error or the hook's exception");
    }
    unchanged(before, "a failed begin_step changed the statistics");
    return std::nullopt;
  }

  // Finishes an issued pending; `retry`: after a refused attempt, try again properly.
  void finish(std::size_t which, bool retry) {
    const std::vector<S> xs = issued_[which].x;
    const std::size_t n = xs.size();
    const std::size_t mode = in_.choice(12);
    holder x, out;
    x.set(xs);
    bool bad = true;
    if (mode == 0) {
      std::vector<S> other = xs;
      other.push_back(S(1));
      x.set(other);  // an input of another size
    } else if (mode == 1) {
      out.blank(n + 1);  // an output of the wrong size
    } else if (mode == 2 && n > 0) {
      out.blank(n);
      out.view.data = nullptr;  // an output without memory
    } else if (mode == 3 && n > 0) {
      out.set(xs);
      out.view = x.view;  // the output is the input
    } else if (mode == 4 && n > 0) {
      x.view.data = nullptr;  // an input without memory
      out.blank(n);
    } else {
      out.blank(n);
      bad = false;
    }
    finish_with(which, x, out, bad);
    if (bad && retry && in_.flag()) {
      holder good_x, good_out;
      good_x.set(xs);
      good_out.blank(n);
      finish_with(which, good_x, good_out, false);
    }
  }

  void finish_with(std::size_t which, holder& x, holder& out, bool bad) {
    issued& it = issued_[which];
    const easycache::step_info info = it.p.info();
    // Another branch's pending that took the verdict of an anchor evaluation
    // waits for that evaluation to finish, and is stale once branch 0 was begun
    // again and finished instead.
    const bool other = it.key != 0 && it.key != extra_key;
    const bool waits = it.valid && other && it.anchor != 0 && it.anchor != finished_anchor_;
    const bool valid = it.valid && !waits;
    const bool compute = it.p.compute();
    const std::size_t n = it.x.size();
    std::vector<S> v;
    if (compute) {
      v = model_output(it.x);
      // The engine runs its model into `out` (as much of it as there is).
      if (out.view.data != nullptr && out.view.data != x.view.data)
        std::copy(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(std::min(n, out.view.size)), out.view.data);
    }
    const snapshot before = take();
    try {
      cache_->finish_step(it.p, x.view, out.view);
      FUZZ_CHECK(valid, "finish_step accepted a stale pending (finished, begun again, reset, of a past step, or "
                        "waiting for its anchor)");
      FUZZ_CHECK(!bad, "finish_step accepted an input of another size or a bad output");
      it.valid = false;
      finished(info, it.x, compute ? action::compute : action::skip, it.p.reason(), v, out.view.data, it.anchor,
               it.after);
    } catch (const easycache::error& e) {
      ++seen.refused;
      seen.stale_refused += !valid;
      context += std::string(", threw: ") + e.what();
      FUZZ_CHECK(!valid || bad, "finish_step refused a valid pending with good arguments");
      if (waits) {
        ++seen.waiting_refused;
        const bool open = it.anchor == open_anchor_;
        FUZZ_CHECK(std::string(e.what()).find(open ? "before branch 0 of that step has finished"
                                                   : "branch 0 of that step was begun again") != std::string::npos,
                   "a branch waiting for its anchor was refused with another message");
      }
      unchanged(before, "a refused finish_step changed the statistics");
    } catch (...) {
      FUZZ_CHECK(false, "finish_step threw something other than easycache::error");
    }
  }

  // step() with a denoiser that may throw (before or after writing its output).
  void step_call(const easycache::step_info& info, const std::vector<S>& xs, bool null_data) {
    const std::size_t n = xs.size();
    holder x, out;
    x.set(xs, null_data);
    const bool wrong_output = in_.choice(16) == 0;
    out.blank(wrong_output ? n + 1 : n);
    const std::size_t throws = in_.choice(8);  // 0: before writing, 1: after, else: no
    const std::vector<S> v = model_output(xs);
    const call_plan c = plan_call(info, n, null_data);
    // Another branch that follows branch 0's evaluation begun by a step() that
    // failed after it: that evaluation can never finish, so finish_step refuses.
    const bool waits = !c.refused && c.after == follows::open;
    const snapshot before = take();
    bool called = false;
    action got = action::compute;
    std::optional<reason> why;
    cache_->on_decision([&](const easycache::step_record& r) {
      got = r.action;
      why = r.reason;
    });
    const std::uint64_t follows_anchor = followed(c);
    try {
      cache_->step(x.view, out.view, info, [&](const tensor& input, tensor& o) {
        FUZZ_CHECK(input.size == n && o.size == n, "the denoiser got tensors of another size");
        called = true;
        if (throws == 0) throw denoiser_failure{};
        std::copy(v.begin(), v.end(), o.data);
        if (throws == 1) throw denoiser_failure{};
      });
      cache_->on_decision({});
      FUZZ_CHECK(!c.refused && !wrong_output && !waits, "step() accepted a call the model refuses");
      check_decision(info, c, got, why);
      const std::uint64_t own = begun(info, n, c, got, why, true);
      FUZZ_CHECK(called == (got == action::compute), "the denoiser ran on a skip or not on a compute");
      finished(info, xs, got, why, v, out.storage.data(), info.branch == 0 ? own : follows_anchor, c.after);
      return;
    } catch (const easycache::error& e) {
      ++seen.refused;
      context += std::string(", threw: ") + e.what();
      FUZZ_CHECK(c.refused || wrong_output || waits, "step() refused a valid call");
      check_refusal_message(c, info, e.what());
      if (c.refused) {
        FUZZ_CHECK(!called, "a refused step() called the denoiser");
        if (c.starts) {
          ++seen.schedules_refused;
          begun(info, n, c, std::nullopt, std::nullopt);
          emptied("a generation refused by the policy kept the previous statistics");
        }
      } else {
        // Refused after begin_step took effect: an output of the wrong size
        // (found before the denoiser runs), or a branch waiting for its anchor
        // (found after the denoiser ran on a compute).
        if (wrong_output) FUZZ_CHECK(!called, "the denoiser ran into an output of the wrong size");
        if (waits && !wrong_output) {
          ++seen.waiting_refused;
          check_decision(info, c, called ? action::compute : action::skip, std::nullopt);
        }
        const bool anchor = info.branch == 0 && !info.extra_evaluation;
        const std::optional<action> predicted = anchor ? predicted_anchor_action(info, c) : std::nullopt;
        begun(info, n, c, called ? std::optional<action>(action::compute) : predicted, std::nullopt);
        // Branch 0's output refused: step() marks every failure after its
        // begin_step as a failed step (the other branches compute).
        if (anchor && wrong_output) {
          failed_ = info.index;
          open_step_ = no_step;
          open_anchor_ = 0;
        }
      }
    } catch (const denoiser_failure&) {
      ++seen.denoiser_threw;
      FUZZ_CHECK(called && !c.refused && !wrong_output, "the denoiser's exception came from a call it should not have had");
      begun(info, n, c, action::compute, std::nullopt);  // an abandoned pending
      if (info.branch == 0 && !info.extra_evaluation) {
        // The loop may log the failure and go on: the other branches of this step compute.
        failed_ = info.index;
        open_step_ = no_step;
        open_anchor_ = 0;
      }
    } catch (const hook_failure&) {
      ++seen.hook_threw;
      FUZZ_CHECK(!c.refused && info.branch == 0 && !c.starts && !info.extra_evaluation,
                 "the hook ran where no decision is made");
    } catch (...) {
      FUZZ_CHECK(false, "step() threw something other than easycache::error or the denoiser's or hook's exception");
    }
    cache_->on_decision({});
    if (c.starts) {
      emptied("a failed step() that started a generation kept the previous statistics");
    } else {
      unchanged(before, "a failed step() changed the statistics");
    }
  }

  void abandon() {
    const easycache::step_info info = next_call();
    const std::vector<S> xs = next_input(info);
    describe_call("abandoned begin_step", info, xs.size());
    begin(info, xs, false);
  }

  // Batched guidance: branch 0 and then the other branches begun before any
  // finishes (one model call for all), then finished: branch 0 first, or a
  // branch first (refused while branch 0 has not finished), or branch 0 begun
  // again in between (the branches' pendings go stale).
  void batched() {
    const easycache::step_info anchor_info = make_info(next_anchor_step(), 0);
    const std::vector<S> anchor_x = next_input(anchor_info);
    describe_call("batched begin_step", anchor_info, anchor_x.size());
    const std::optional<std::size_t> anchor = begin(anchor_info, anchor_x, false);
    if (!anchor) return;
    std::vector<std::uint64_t> handles{issued_[*anchor].handle};
    for (std::size_t b = 1; b < cfg_.branches; ++b) {
      const easycache::step_info info = make_info(anchor_info.index, b);
      const std::vector<S> xs = next_input(info);
      describe_call("batched begin_step", info, xs.size());
      if (const std::optional<std::size_t> which = begin(info, xs, false)) handles.push_back(issued_[*which].handle);
    }
    ++seen.batched;
    switch (in_.choice(4)) {
      case 0:
        // A branch first: it waits for branch 0.
        if (handles.size() > 1) finish_handle(handles[1], "finish_step before branch 0", false);
        break;
      case 1:
        // Branch 0 begun again and finished: the branches begun on the first one are stale.
        describe_call("batched begin_step of branch 0 again", anchor_info, anchor_x.size());
        if (const std::optional<std::size_t> again = begin(anchor_info, anchor_x, false))
          finish_handle(issued_[*again].handle, "finish_step of branch 0 begun again", true);
        break;
      default: break;
    }
    for (const std::uint64_t h : handles) finish_handle(h, "batched finish_step", true);
  }

  void finish_handle(std::uint64_t handle, const char* what, bool retry) {
    for (std::size_t k = 0; k < issued_.size(); ++k) {
      if (issued_[k].handle != handle) continue;
      describe_call(what, issued_[k].p.info(), issued_[k].x.size());
      finish(k, retry);
      return;
    }
  }

  // The sampler changes: a schedule of config.steps (given or not) or of
  // another length, starting at step 0 or mid-schedule (img2img).
  void new_schedule() {
    switch (in_.choice(4)) {
      case 0: schedule_ = 0; break;
      case 1: schedule_ = cfg_.steps; break;
      default: schedule_ = in_.integer<std::size_t>(1, cfg_.steps + 6); break;
    }
    start_index_ = in_.flag() ? 0 : in_.integer<std::size_t>(0, schedule() - 1);
    evaluate(make_info(start_index_, 0), in_.flag());
  }

  void finish_old() {
    if (issued_.empty()) return;
    const std::size_t which = in_.integer<std::size_t>(0, issued_.size() - 1);
    describe_call(issued_[which].valid ? "late finish_step" : "stale finish_step", issued_[which].p.info(),
                  issued_[which].x.size());
    finish(which, true);
  }

  // A pending of another controller, finished on this one: refused, whatever its number.
  void foreign() {
    easycache::config c = cfg_;
    if (!other_) {
      try {
        other_.emplace(c, setup_.build());
      } catch (const easycache::error&) {
        return;
      }
    }
    const std::vector<S> xs(3, S(0.25));
    holder x, out;
    x.set(xs);
    out.blank(3);
    std::optional<pending> p;
    easycache::step_info info;
    info.timestep = 1.0;
    try {
      for (std::size_t k = in_.integer<std::size_t>(1, 40); k > 0; --k) p = other_->begin_step(x.view, info);
    } catch (const easycache::error&) {
      return;  // the other controller's configuration changed since
    }
    context = "a foreign pending, config: " + describe(cfg_);
    const snapshot before = take();
    try {
      cache_->finish_step(*p, x.view, out.view);
      FUZZ_CHECK(false, "finish_step accepted another controller's pending");
    } catch (const easycache::error&) {
      ++seen.stale_refused;
    }
    unchanged(before, "a foreign pending changed the statistics");
  }

  void reset() {
    cache_->reset();
    in_gen_ = false;
    for (issued& i : issued_) i.valid = false;
  }

  void reset_config() {
    easycache::config next = fuzz_config(in_);
    if (in_.choice(8) == 0) next.steps = 0;  // invalid
    if (in_.flag()) next.steps = cfg_.steps;  // masks and budgets keep fitting
    next.warmup_steps = std::min(next.warmup_steps, next.steps);
    context = "reset(config) with " + describe(next) + ", policy " + setup_.describe();
    const bool accepted = next.steps != 0 && setup_.accepts(next);
    try {
      cache_->reset(next);
      FUZZ_CHECK(accepted, "reset(config) accepted a configuration the policy or validate() refuses");
      cfg_ = next;
      in_gen_ = false;
      for (issued& i : issued_) i.valid = false;
    } catch (const easycache::error&) {
      ++seen.policies_refused;
      FUZZ_CHECK(!accepted, "reset(config) refused an acceptable configuration");
      FUZZ_CHECK(cache_->configuration().steps == cfg_.steps, "a refused reset(config) changed the configuration");
    }
  }

  void set_hook(hook_mode mode) {
    if (mode == hook_mode::none) {
      cache_->set_statistics_reduction({});
      return;
    }
    const double amount = static_cast<double>(in_.integer<int>(0, 100)) / 10.0;
    cache_->set_statistics_reduction([this, mode, amount](double* values, std::size_t count) {
      ++seen.hook_calls;
      FUZZ_CHECK(count == easycache::statistic_slot_count + 1, "the hook got another count of values");
      const std::size_t stride = cfg_.sampling.stride;
      const std::size_t sampled = stride <= 1 ? anchor_size_ : (anchor_size_ + stride - 1) / stride;
      FUZZ_CHECK(values[count - 1] == static_cast<double>(sampled), "the hook got another element count");
      for (std::size_t i = 0; i + 1 < count; ++i)
        FUZZ_CHECK(!(values[i] < 0), "the hook got a negative sum of absolute values");
      const auto dx = static_cast<std::size_t>(easycache::statistic_slot::input_change);
      const auto output_change = static_cast<std::size_t>(easycache::statistic_slot::output_change);
      switch (mode) {
        case hook_mode::scale:
          for (std::size_t i = 0; i < count; ++i) values[i] *= 2;
          break;
        case hook_mode::perturb: values[dx] += amount; break;
        case hook_mode::negative: values[amount > 5 ? dx : output_change] = -1 - amount; break;
        case hook_mode::zero_count: values[count - 1] = 0; break;
        case hook_mode::throws: throw hook_failure{};
        case hook_mode::throws_sometimes:
          if (++hook_throw_counter_ % 2 == 0) throw hook_failure{};
          break;
        default: break;
      }
    });
  }

  void describe_call(const char* what, const easycache::step_info& info, std::size_t n) {
    auto step = [](std::size_t s) { return s == no_step ? std::string("none") : std::to_string(s); };
    context = std::string(what) + " step " + std::to_string(info.index) + " branch " + std::to_string(info.branch) +
              (info.extra_evaluation ? " (extra)" : "") + " of " + std::to_string(info.steps) + " steps, timestep " +
              std::to_string(info.timestep) + ", " + std::to_string(n) + " elements, config: " + describe(cfg_) +
              ", policy " + setup_.describe() + ", model: " +
              (in_gen_ ? "generation of " + std::to_string(gen_steps_) + " steps from step " + std::to_string(first_) +
                             ", last step " + step(last_) + ", open " + step(open_step_) + ", failed " +
                             step(failed_) + ", anchor's last compute " + step(anchor_last_compute_) + ", "
                       : std::string("no generation, ")) +
              std::to_string(steps_done_) + " steps done, " + std::to_string(anchor_computes_) + " anchor computes";
  }

  void check_stats() {
    const easycache::statistics& s = cache_->stats();
    FUZZ_CHECK(s.evaluations == s.calls + s.skips, "evaluations != calls + skips");
    FUZZ_CHECK(s.extra_evaluations <= s.calls, "extra evaluations not counted as calls");
    std::size_t by_reason = 0;
    for (std::size_t count : s.reasons) by_reason += count;
    FUZZ_CHECK(by_reason == s.steps, "the reasons do not sum to the steps");
    FUZZ_CHECK(s.steps == steps_done_ && s.evaluations == evaluations_ && s.calls == calls_ && s.skips == skips_ &&
                   s.extra_evaluations == extras_,
               "the statistics differ from the model's count");
    if (gen_records_) {
      const auto& trace = cache_->trace();
      FUZZ_CHECK(trace.size() == s.evaluations, "trace records != evaluations");
      std::size_t anchors = 0, extras = 0, skipped = 0;
      for (const auto& r : trace) {
        extras += r.reason == reason::extra_evaluation;
        anchors += r.branch == 0 && r.reason != reason::extra_evaluation;
        skipped += r.action == action::skip;
      }
      FUZZ_CHECK(anchors == s.steps && extras == s.extra_evaluations && skipped == s.skips,
                 "the trace does not add up to the statistics");
    }
  }

  fuzz::input& in_;
  easycache::config cfg_;
  policy_setup setup_;
  std::optional<controller> cache_, other_;
  // The sampler: its schedule length (0: none given) and where its generations start.
  std::size_t schedule_ = 0, start_index_ = 0;
  // The model of the generation.
  bool in_gen_ = false;
  std::size_t gen_steps_ = 0, first_ = 0;
  std::size_t last_ = no_step;                // branch 0's step finished last
  std::size_t failed_ = no_step;              // branch 0's denoiser threw here in step() (since its last finish)
  std::size_t open_step_ = no_step;           // branch 0 begun here and not finished
  std::optional<action> open_action_;         // ... with this verdict (nullopt: not known)
  std::optional<reason> open_reason_;
  std::uint64_t anchor_count_ = 0;            // numbers branch 0's evaluations
  std::uint64_t open_anchor_ = 0, finished_anchor_ = 0;
  std::size_t anchor_last_compute_ = no_step;
  std::size_t steps_done_ = 0, anchor_size_ = 0, anchor_computes_ = 0;
  std::size_t evaluations_ = 0, calls_ = 0, skips_ = 0, extras_ = 0;
  bool gen_records_ = true, gen_default_progress_ = true, gen_moderate_ = true, gen_replayable_ = true;
  action anchor_action_ = action::compute;
  std::optional<reason> anchor_reason_;
  std::vector<branch_model> branches_;
  std::vector<logged> log_;
  std::vector<issued> issued_;
  std::uint64_t handles_ = 0;
  std::vector<S> trajectory_;
  double last_timestep_ = 1.0;
  std::size_t hook_throw_counter_ = 0;
};

// ---- batch_controller against one controller per sample ----

template <class S>
class batch_harness {
  using view = easycache::host_buffer<S>;
  using controller = easycache::controller<view, easycache::any_policy>;
  using batch = easycache::batch_controller<view, easycache::any_policy>;
  using pending = typename controller::pending;

 public:
  explicit batch_harness(fuzz::input& in) : in_(in) {}

  void run() {
    cfg_ = fuzz_config(in_);
    cfg_.branches = 1;
    const std::size_t samples = in_.integer<std::size_t>(0, 4);
    const std::size_t interval = in_.choice(3);  // 0: the reference rule
    auto policy = [&]() -> easycache::any_policy {
      if (interval == 0) return easycache::any_policy();
      return easycache::fixed_interval_policy(interval);
    };
    context = "batch of " + std::to_string(samples) + ", config: " + describe(cfg_);
    try {
      batch_.emplace(cfg_, samples, policy());
      FUZZ_CHECK(samples > 0, "a batch of 0 samples was accepted");
    } catch (const easycache::error&) {
      FUZZ_CHECK(samples == 0, "a batch was refused");
      return;
    }
    for (std::size_t s = 0; s < samples; ++s) {
      twins_.emplace_back(cfg_, policy());
      trajectories_.emplace_back(in_.integer<std::size_t>(0, 24), S(0));
      for (std::size_t i = 0; i < trajectories_[s].size(); ++i)
        trajectories_[s][i] = S(std::sin(0.3 * static_cast<double>(i + 7 * s)));
    }
    for (int op = 0; op < 120 && !in_.empty(); ++op) {
      switch (in_.choice(10)) {
        case 0:
          batch_->reset();
          for (controller& t : twins_) t.reset();
          have_pending_ = false;
          next_index_ = 0;
          break;
        case 1: begin(in_.flag()); break;
        case 2: finish(); break;
        default:
          if (begin(false)) finish();
          break;
      }
      compare();
    }
  }

 private:
  struct tensors {
    std::vector<std::vector<S>> storage;
    std::vector<view> views;
  };

  void build_inputs(bool bad_sample) {
    for (std::size_t s = 0; s < trajectories_.size(); ++s)
      for (S& v : trajectories_[s]) v = S(0.95) * v + S(in_.integer<int>(0, 20)) / S(1000);
    inputs_ = {trajectories_, {}};
    for (auto& x : inputs_.storage) inputs_.views.push_back(view{x.data(), x.size()});
    if (bad_sample) {
      const std::size_t s = in_.integer<std::size_t>(0, inputs_.views.size() - 1);
      if (inputs_.views[s].size > 0) inputs_.views[s].data = nullptr;
    }
    if (in_.choice(16) == 0) inputs_.views.pop_back();  // a wrong count
  }

  // begin_step on the batch, and on the twins sample by sample until one refuses.
  bool begin(bool bad_sample) {
    build_inputs(bad_sample);
    easycache::step_info info;
    info.index = in_.choice(12) == 0 ? in_.integer<std::size_t>(0, cfg_.steps) : next_index_;
    info.timestep = 1.0 - default_progress(cfg_, std::min(info.index, cfg_.steps));
    context = "batch begin_step " + std::to_string(info.index) + ", config: " + describe(cfg_);
    std::optional<std::vector<bool>> mask;
    try {
      mask = batch_->begin_step(inputs_.views, info);
    } catch (const easycache::error&) {
    } catch (...) {
      FUZZ_CHECK(false, "batch begin_step threw something other than easycache::error");
    }
    bool refused = inputs_.views.size() != twins_.size();
    std::vector<pending> next;
    for (std::size_t s = 0; s < twins_.size() && !refused; ++s) {
      try {
        next.push_back(twins_[s].begin_step(inputs_.views[s], info));
      } catch (const easycache::error&) {
        refused = true;
      }
    }
    FUZZ_CHECK(refused == !mask.has_value(), "batch begin_step and its samples disagree on refusing");
    if (refused) return false;
    for (std::size_t s = 0; s < twins_.size(); ++s)
      FUZZ_CHECK((*mask)[s] == next[s].compute(), "the mask is not the samples' decisions");
    pending_ = std::move(next);
    mask_ = *mask;
    have_pending_ = true;
    finished_ = 0;
    begun_index_ = info.index;
    return true;
  }

  // The engine runs the model on the masked samples (into both copies of the
  // outputs), then finish_step on the batch, and on the twins from the first
  // unfinished sample until one refuses.
  void finish() {
    const std::size_t n = twins_.size();
    if (inputs_.storage.size() != n) build_inputs(false);  // nothing begun yet
    std::vector<std::vector<S>> batch_out(n), twin_out(n);
    std::vector<view> batch_views, twin_views;
    const bool bad_output = in_.choice(4) == 0;
    const std::size_t bad = in_.integer<std::size_t>(0, n - 1);
    for (std::size_t s = 0; s < n; ++s) {
      const std::size_t size = inputs_.storage[s].size() + (bad_output && s == bad ? 1 : 0);
      batch_out[s].assign(size, std::numeric_limits<S>::quiet_NaN());
      if (have_pending_ && s < mask_.size() && mask_[s])
        for (std::size_t i = 0; i < size; ++i)
          batch_out[s][i] = S(0.5) * (i < inputs_.storage[s].size() ? inputs_.storage[s][i] : S(0)) + S(0.01) * S(s + 1);
      twin_out[s] = batch_out[s];
      batch_views.push_back(view{batch_out[s].data(), size});
      twin_views.push_back(view{twin_out[s].data(), size});
    }
    context = "batch finish_step, config: " + describe(cfg_) + (bad_output ? ", a bad output" : "");
    bool batch_refused = false;
    try {
      batch_->finish_step(inputs_.views, batch_views);
    } catch (const easycache::error&) {
      batch_refused = true;
    } catch (...) {
      FUZZ_CHECK(false, "batch finish_step threw something other than easycache::error");
    }
    bool refused = !have_pending_ || inputs_.views.size() != n;
    const std::size_t first = finished_;
    for (std::size_t s = finished_; s < n && !refused; ++s) {
      try {
        twins_[s].finish_step(pending_[s], inputs_.views[s], twin_views[s]);
        ++finished_;
      } catch (const easycache::error&) {
        refused = true;
      }
    }
    FUZZ_CHECK(refused == batch_refused, "batch finish_step and its samples disagree on refusing");
    seen.batch_resumed += !refused && first > 0;
    if (!refused) {
      have_pending_ = false;
      ++seen.batch_steps;
      next_index_ = begun_index_ + 1 < cfg_.steps ? begun_index_ + 1 : 0;
    }
    for (std::size_t s = 0; s < n; ++s)
      for (std::size_t i = 0; i < batch_out[s].size(); ++i)
        FUZZ_CHECK(same_value(batch_out[s][i], twin_out[s][i]), "a sample's output differs from its own controller's");
  }

  void compare() {
    easycache::statistics sum;
    for (std::size_t s = 0; s < twins_.size(); ++s) {
      const easycache::statistics& a = batch_->sample(s).stats();
      const easycache::statistics& b = twins_[s].stats();
      FUZZ_CHECK(a.steps == b.steps && a.evaluations == b.evaluations && a.calls == b.calls && a.skips == b.skips &&
                     a.reasons == b.reasons,
                 "a sample's statistics differ from its own controller's");
      sum.steps = std::max(sum.steps, b.steps);
      sum.evaluations += b.evaluations;
      sum.calls += b.calls;
      sum.skips += b.skips;
    }
    const easycache::statistics total = batch_->stats();
    FUZZ_CHECK(total.steps == sum.steps && total.evaluations == sum.evaluations && total.calls == sum.calls &&
                   total.skips == sum.skips && total.evaluations == total.calls + total.skips,
               "the batch's statistics are not the sum over its samples");
  }

  fuzz::input& in_;
  easycache::config cfg_;
  std::optional<batch> batch_;
  std::vector<controller> twins_;
  std::vector<std::vector<S>> trajectories_;
  tensors inputs_;
  std::vector<pending> pending_;
  std::vector<bool> mask_;
  bool have_pending_ = false;
  std::size_t finished_ = 0, next_index_ = 0, begun_index_ = 0;
};

// ---- recorded trajectories ----

constexpr std::size_t header_bytes = 8 + 3 * 8;

std::string saved(const easycache::recorded_trajectory& t) {
  std::ostringstream out;
  t.save(out);
  return out.str();
}

std::size_t file_bytes(std::uint64_t steps, std::uint64_t branches, std::uint64_t size) {
  return header_bytes + steps * 8 + 2 * steps * branches * size * sizeof(float);
}

// replay() of a loaded recording with a random configuration and policy.
void replay_recording(fuzz::input& in, const easycache::recorded_trajectory& t) {
  if (t.steps() * t.branches() > 4096) return;  // keep one input fast
  easycache::config c;
  c.steps = t.steps();
  c.branches = t.branches();
  c.warmup_steps = in.integer<std::size_t>(0, c.steps);
  static const double thresholds[] = {0.0, 0.05, 0.5, std::numeric_limits<double>::infinity()};
  c.threshold = thresholds[in.choice(4)];
  if (in.flag()) c.predictor = easycache::skip_predictor::linear_in_timestep;
  policy_setup setup;
  if (in.flag()) {
    setup.kind = policy_kind::budget_calls;
    setup.calls = in.integer<std::size_t>(0, c.steps);
  }
  bool finite_timesteps = true;
  for (std::size_t s = 0; s < t.steps(); ++s) finite_timesteps = finite_timesteps && std::isfinite(t.timestep(s));
  const bool refused = !setup.accepts(c) ||
                       (c.predictor == easycache::skip_predictor::linear_in_timestep && !finite_timesteps);
  context = "replay of a " + std::to_string(t.steps()) + "x" + std::to_string(t.branches()) + "x" +
            std::to_string(t.size()) + " recording, config: " + describe(c) + ", policy " + setup.describe();
  try {
    const easycache::replay_result r = easycache::replay(t, c, setup.build());
    FUZZ_CHECK(!refused, "replay accepted what it should refuse");
    const std::size_t evaluations = t.steps() * t.branches();
    FUZZ_CHECK(r.stats.evaluations == evaluations && r.stats.calls + r.stats.skips == evaluations &&
                   r.trace.size() == evaluations && r.output_error.size() == evaluations,
               "replay's statistics do not add up");
    std::size_t anchor_calls = 0;
    for (std::size_t i = 0; i < evaluations; ++i) {
      if (r.trace[i].action == action::compute) FUZZ_CHECK(r.output_error[i] == 0, "a computed step with an error");
      anchor_calls += r.trace[i].branch == 0 && r.trace[i].action == action::compute;
    }
    if (setup.budget()) FUZZ_CHECK(anchor_calls == setup.target(c.steps), "replay missed a feasible budget");
    ++seen.trajectory_replays;
  } catch (const easycache::error&) {
    FUZZ_CHECK(refused, "replay refused a valid recording and configuration");
  } catch (...) {
    FUZZ_CHECK(false, "replay threw something other than easycache::error");
  }
}

void check_loaded(fuzz::input& in, const easycache::recorded_trajectory& t, const std::string& bytes) {
  FUZZ_CHECK(t.steps() > 0 && t.branches() > 0 && t.complete(), "load gave an empty or incomplete recording");
  const std::string again = saved(t);
  FUZZ_CHECK(again.size() == file_bytes(t.steps(), t.branches(), t.size()) && again.size() <= bytes.size() &&
                 std::memcmp(again.data(), bytes.data(), again.size()) == 0,
             "save() of a loaded recording is not the bytes it was loaded from");
  replay_recording(in, t);
}

void load_case(fuzz::input& in) {
  ++seen.loads;
  std::string bytes;
  bool cut_short = false;
  switch (in.choice(3)) {
    case 0: {
      // Dimensions whose product overflows: refused before anything is allocated.
      const std::size_t big = std::size_t{1} << in.integer<int>(32, 62);
      const std::size_t steps = in.integer<std::size_t>(1, 16);
      context = "recorded_trajectory(" + std::to_string(steps) + ", " + std::to_string(big) + ", " +
                std::to_string(big) + ")";
      try {
        easycache::recorded_trajectory t(steps, big, big);
        FUZZ_CHECK(false, "recorded_trajectory accepted dimensions whose product overflows");
      } catch (const easycache::error&) {
        ++seen.loads_refused;
      }
      return;
    }
    case 1: {
      // A small valid recording, saved, then damaged.
      const std::size_t steps = in.integer<std::size_t>(1, 6), branches = in.integer<std::size_t>(1, 2),
                        size = in.integer<std::size_t>(0, 8);
      easycache::recorded_trajectory t(steps, branches, size);
      std::vector<float> x(size), v(size);
      for (std::size_t s = 0; s < steps; ++s)
        for (std::size_t b = 0; b < branches; ++b) {
          for (std::size_t i = 0; i < size; ++i) {
            x[i] = in.choice(16) == 0 ? special_value<float>(in) : float(in.integer<int>(-100, 100)) / 50.0f;
            v[i] = in.choice(16) == 0 ? special_value<float>(in) : float(in.integer<int>(-100, 100)) / 50.0f;
          }
          const double timestep = in.choice(16) == 0 ? std::numeric_limits<double>::quiet_NaN()
                                                     : 1.0 - double(s) / double(steps);
          t.record(s, b, timestep, x.data(), v.data());
        }
      bytes = saved(t);
      FUZZ_CHECK(bytes.size() == file_bytes(steps, branches, size), "save() wrote another length");
      switch (in.choice(4)) {
        case 0:
          bytes.resize(in.integer<std::size_t>(0, bytes.size() - 1));
          cut_short = true;
          break;
        case 1: bytes[in.integer<std::size_t>(0, bytes.size() - 1)] = static_cast<char>(in.integer<int>(0, 255)); break;
        case 2: {
          std::uint64_t field = in.integer<std::uint64_t>(0, std::numeric_limits<std::uint64_t>::max());
          std::memcpy(&bytes[8 + 8 * in.choice(3)], &field, sizeof field);
          break;
        }
        default: bytes += in.rest(); break;
      }
      break;
    }
    default: bytes = in.rest(); break;
  }
  context = "recorded_trajectory::load of " + std::to_string(bytes.size()) + " bytes";
  std::istringstream stream(bytes);
  try {
    const easycache::recorded_trajectory t = easycache::recorded_trajectory::load(stream);
    FUZZ_CHECK(!cut_short, "load accepted a file cut short");
    check_loaded(in, t, bytes);
  } catch (const easycache::error& e) {
    ++seen.loads_refused;
    FUZZ_CHECK(std::string(e.what()).size() > 10, "an error without a message");
  } catch (...) {
    FUZZ_CHECK(false, "load threw something other than easycache::error");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::input in(data, size);
  ++seen.runs;
  switch (in.choice(6)) {
    case 0: api_harness<double>(in).run(); break;
    case 1: api_harness<float>(in).run(); break;
    case 2: api_harness<float>(in).run(); break;
    case 3: batch_harness<float>(in).run(); break;
    case 4: batch_harness<double>(in).run(); break;
    default: load_case(in); break;
  }
  return 0;
}

// Called by the replay program: what the corpus exercised.
extern "C" void easycache_fuzz_summary() {
  std::printf("%zu inputs: %zu begin_step, %zu finished (%zu computed, %zu skipped, %zu extra, %zu extrapolated), "
              "%zu refused (%zu stale or foreign pendings), %zu denoiser and %zu hook exceptions, %zu hook calls, "
              "%zu policies refused, %zu budgets met, %zu mask replays, %zu batch steps (%zu resumed), "
              "%zu loads (%zu refused), %zu recording replays; %zu generations (%zu from mid-schedule), %zu calls "
              "with step_info::steps (%zu schedules refused by the policy), %zu gaps, %zu second evaluations refused, "
              "%zu stale branches computed, %zu branches after a failed anchor, %zu batched steps, %zu branches "
              "refused waiting for their anchor, %zu probes\n",
              seen.runs, seen.begins, seen.finishes, seen.computed, seen.skipped, seen.extra, seen.extrapolated,
              seen.refused, seen.stale_refused, seen.denoiser_threw, seen.hook_threw, seen.hook_calls,
              seen.policies_refused, seen.budgets_met, seen.mask_replays, seen.batch_steps, seen.batch_resumed,
              seen.loads, seen.loads_refused, seen.trajectory_replays, seen.starts, seen.mid_schedule_starts,
              seen.schedule_lengths, seen.schedules_refused, seen.gaps, seen.twice_refused, seen.stale_branches,
              seen.after_failure, seen.batched, seen.waiting_refused, seen.probes);
}
