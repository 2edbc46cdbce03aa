// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Keyed hooks: the controller's two phases as an engine's before/after calls
// around each condition's model call, keyed by the condition, the way
// stable-diffusion.cpp wires its cache. Includes no backend.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"
#include "controller.hpp"
#include "error.hpp"
#include "policy.hpp"
#include "types.hpp"
#include "detail/format.hpp"

namespace easycache {

/// Options of keyed_hooks.
struct hooks_options {
  /// For production loops: instead of throwing, a call that goes wrong (a
  /// misuse, or any exception from the controller or the backend) is
  /// reported (incident_count(), incidents(), the incident callback) and the
  /// evaluation is simply computed: before() returns false and the matching
  /// after() does nothing.
  bool never_throw = false;
  /// How many incidents incidents() keeps (the first ones since the last
  /// clear_incidents()); incident_count() counts them all.
  std::size_t incident_capacity = 64;
};

/// Which hook an incident happened in.
enum class hook_call : unsigned char { before, after };

/// The controller's begin_step / finish_step as an engine's hooks around each
/// condition's model call, keyed by the condition (a pointer to it, an id):
///
///   if (!hooks.before(condition, x, out, {step, sigma})) {  // true: `out` is served from the cache
///     model(x, out, condition);
///     hooks.after(condition, x, out);
///   }
///
/// Keys and branches: the first key of a generation is the anchor (branch 0,
/// which decides for all); the next distinct keys get branches 1, 2, ... in
/// the order they first appear, up to config.branches. Each step evaluates
/// the anchor first; the other keys may be begun before the anchor's after()
/// (both decisions before one batched model call) but are finished after it.
///
/// Generations start and end by themselves, by the controller's rules
/// (docs/design.md, "Generations and the schedule"), the adapter learning its
/// keys anew whenever one begins: a call at an earlier step than the anchor's
/// last, or with another schedule length (step_info::steps, else
/// config.steps), begins a new generation whose anchor is that call's key, as
/// does the anchor at a one-step schedule's only step again. So a new run, an
/// img2img run that starts mid-schedule and a changed step count need nothing.
/// A run abandoned midway and followed by one that starts at a later step is
/// the one case that needs reset() in between.
///
/// Each key has at most one evaluation outstanding: after() finishes the
/// latest before() of its key that returned false, with the same `x`; a
/// before() whose after() never comes (the model failed) is simply replaced
/// by the key's next one. Extra evaluations (step_info::extra_evaluation: the
/// second call of Heun or DPM2) of a key already evaluated in the generation
/// pass through: before() returns false, after() counts them; they are never
/// cached. The branch is the key's: leave step_info::branch 0.
///
/// Without never_throw, every misuse throws easycache::error (the adapter and
/// the controller unchanged, as the controller's own calls guarantee). No
/// allocation after a generation's first step (keys that allocate when copied
/// aside; incidents allocate their messages). Moving an adapter makes its
/// outstanding evaluations stale (they belong to the controller it holds).
///
/// \tparam Tensor  any type with a complete easycache::tensor_traits<Tensor>.
/// \tparam Key     copyable and equality-comparable: a condition pointer by default.
/// \tparam Policy  the controller's decision rule.
template <class Tensor, class Key = const void*, class Policy = easycache_policy>
class keyed_hooks {
 public:
  using controller_type = controller<Tensor, Policy>;
  using pending_type = typename controller_type::pending;
  using key_type = Key;

  /// A call that never_throw turned into a computed evaluation.
  struct incident {
    Key key;
    hook_call call;
    /// before(): the step_info as given; after(): that of the evaluation it
    /// finishes (a default one when the key had none outstanding).
    step_info info;
    /// What would have been thrown (the exception's what()).
    std::string message;
  };
  using incident_callback = std::function<void(const incident&)>;

  /// A controller for `cfg` (validated: throws easycache::error).
  explicit keyed_hooks(const config& cfg = config{}, hooks_options options = {})
      : keyed_hooks(controller_type(cfg), std::move(options)) {}

  /// Takes a ready controller (a policy of its own, callbacks set), between generations.
  explicit keyed_hooks(controller_type cache, hooks_options options = {})
      : cache_(std::move(cache)), options_(std::move(options)) {
    cache_.reset();
    keys_.reserve(cache_.configuration().branches);
  }

  /// Before the model call for `key`: true when `out` has been written from
  /// the cache (do not call the model, nor after()); false when the model must
  /// write its output for `x` into `out`, followed by after(key, x, out).
  /// Throws easycache::error for a misuse, or what the controller's
  /// begin_step / finish_step throw (unless never_throw): a key beyond
  /// config.branches, step_info::branch not 0, an extra evaluation of a key
  /// not evaluated in the generation, and the controller's refusals (the
  /// anchor twice at a step, another key at a step before the anchor's, ...).
  bool before(const Key& key, const Tensor& x, Tensor& out, const step_info& info) {
    if (!options_.never_throw) return begin(key, x, out, info);
    try {
      return begin(key, x, out, info);
    } catch (...) {
      compute_outside(key);
      report(key, hook_call::before, info, std::current_exception());
      return false;
    }
  }

  /// After the model wrote its output for `x` into `out`, when before()
  /// returned false for `key`: takes the output into the cache (or counts an
  /// extra evaluation). Throws easycache::error (unless never_throw) when the
  /// key has no evaluation outstanding, and what finish_step throws (a stale
  /// evaluation, another input size, an output of the wrong size); the
  /// evaluation can then still be finished.
  void after(const Key& key, const Tensor& x, Tensor& out) {
    if (!options_.never_throw) {
      finish(key, x, out);
      return;
    }
    step_info info{};
    if (const slot* s = find(key)) info = s->info;
    try {
      finish(key, x, out);
    } catch (...) {
      if (slot* s = find(key)) s->state = outstanding::none;
      report(key, hook_call::after, info, std::current_exception());
    }
  }

  /// Drops the generation in progress and the keys it learnt: the next call's
  /// key is the next generation's anchor. No-throw.
  void reset() noexcept {
    cache_.reset();
    forget_keys();
  }

  /// Takes a new configuration (validated first; strong) and resets.
  void reset(const config& cfg) {
    keys_.reserve(cfg.branches);
    cache_.reset(cfg);
    forget_keys();
  }

  /// The branch of `key` in the current generation, if it has one.
  std::optional<std::size_t> branch_of(const Key& key) const {
    if (const slot* s = find(key)) return static_cast<std::size_t>(s - keys_.data());
    return std::nullopt;
  }
  /// The keys of the current generation, by branch (the anchor first).
  std::vector<Key> keys() const {
    std::vector<Key> in_order;
    in_order.reserve(keys_.size());
    for (const slot& s : keys_) in_order.push_back(s.key);
    return in_order;
  }

  /// The controller: stats(), trace(), on_decision(), set_statistics_reduction().
  /// Stepping it directly bypasses the adapter: reset() the adapter afterwards.
  controller_type& cache() noexcept { return cache_; }
  const controller_type& cache() const noexcept { return cache_; }

  /// Calls that never_throw turned into computed evaluations, since construction.
  std::uint64_t incident_count() const noexcept { return incident_count_; }
  /// The first incident_capacity of them since the last clear_incidents().
  const std::vector<incident>& incidents() const noexcept { return incidents_; }
  void clear_incidents() noexcept { incidents_.clear(); }
  /// Called with each incident as it happens; its exceptions propagate. No-throw.
  void on_incident(incident_callback callback) noexcept { incident_callback_.swap(callback); }

  const hooks_options& options() const noexcept { return options_; }

 private:
  enum class outstanding : unsigned char {
    none,
    evaluation,  // before() returned false: `pending` waits for after()
    extra,       // an extra evaluation: begun and finished in after()
    outside,     // never_throw: computed outside the cache; after() does nothing
  };

  struct slot {
    Key key;
    outstanding state = outstanding::none;
    std::optional<pending_type> pending;
    step_info info{};
  };

  bool begin(const Key& key, const Tensor& x, Tensor& out, const step_info& given) {
    if (given.branch != 0)
      throw error(detail::message("keyed_hooks: step_info::branch is the key's; leave it 0 (got ", given.branch,
                                  " at step ", given.index, ")"));
    step_info info = given;
    if (info.extra_evaluation) {
      slot* s = find(key);
      if (!s)
        throw error(detail::message("keyed_hooks: extra evaluation at step ", info.index,
                                    " of a key not evaluated in this generation: evaluate the key without "
                                    "extra_evaluation first"));
      info.branch = index_of(*s);
      s->state = outstanding::extra;
      s->pending.reset();
      s->info = info;
      return false;
    }
    const std::size_t steps = info.steps ? info.steps : cache_.configuration().steps;
    const bool fresh = begins_generation(key, info.index, steps);
    const slot* known = fresh ? nullptr : find(key);
    if (fresh) {
      info.branch = 0;
    } else if (known) {
      info.branch = index_of(*known);
    } else {
      const std::size_t branches = cache_.configuration().branches;
      if (keys_.size() >= branches)
        throw error(detail::message("keyed_hooks: a new key at step ", info.index, ", but the generation has ",
                                    keys_.size(), " keys already and config.branches is ", branches,
                                    " (raise config.branches; after abandoning a run midway, call reset())"));
      info.branch = keys_.size();
    }
    // Nothing changes until the controller has accepted the call.
    pending_type p = cache_.begin_step(x, info);
    if (fresh) {
      forget_keys();
      in_generation_ = true;
      first_step_ = info.index;
      steps_ = steps;
    }
    if (info.branch == keys_.size()) keys_.push_back(slot{key, outstanding::none, std::nullopt, info});
    slot& s = keys_[info.branch];
    if (info.branch == 0) {
      anchor_step_ = info.index;
      anchor_finished_ = false;
    }
    s.info = info;
    s.pending = std::move(p);
    s.state = outstanding::evaluation;
    if (s.pending->compute()) return false;
    // Kept outstanding until it has finished, so that a refused finish can be begun again.
    cache_.finish_step(*s.pending, x, out);
    s.pending.reset();
    s.state = outstanding::none;
    if (info.branch == 0) anchor_finished_ = true;
    return true;
  }

  void finish(const Key& key, const Tensor& x, Tensor& out) {
    slot* s = find(key);
    if (!s || s->state == outstanding::none) {
      if (!s && forget_outside(key)) return;
      throw error(detail::message("keyed_hooks: after() for a key with no evaluation outstanding: its before() ",
                                  "returned true (served from the cache), was not called, or was finished already"));
    }
    switch (s->state) {
      case outstanding::outside:
        s->state = outstanding::none;
        return;
      case outstanding::extra: {
        const pending_type p = cache_.begin_step(x, s->info);
        cache_.finish_step(p, x, out);
        s->state = outstanding::none;
        return;
      }
      case outstanding::evaluation:
        cache_.finish_step(*s->pending, x, out);
        s->pending.reset();
        s->state = outstanding::none;
        if (s == keys_.data()) anchor_finished_ = true;
        return;
      case outstanding::none:
        return;
    }
  }

  // The controller's rules for branch 0 beginning a generation, applied to the
  // first call of each step, whose key becomes the anchor.
  bool begins_generation(const Key& key, std::size_t index, std::size_t steps) const {
    if (!in_generation_ || keys_.empty() || steps != steps_ || index < anchor_step_) return true;
    // A one-step schedule run again (any other repeat of the anchor is refused by the controller).
    return index == anchor_step_ && anchor_finished_ && keys_[0].key == key && index == first_step_ &&
           index + 1 >= steps_;
  }

  slot* find(const Key& key) {
    for (slot& s : keys_)
      if (s.key == key) return &s;
    return nullptr;
  }
  const slot* find(const Key& key) const {
    for (const slot& s : keys_)
      if (s.key == key) return &s;
    return nullptr;
  }
  std::size_t index_of(const slot& s) const noexcept { return static_cast<std::size_t>(&s - keys_.data()); }

  void forget_keys() noexcept {
    keys_.clear();
    outside_keys_.clear();
    in_generation_ = false;
    anchor_finished_ = false;
    anchor_step_ = first_step_ = steps_ = 0;
  }

  // never_throw: the key's evaluation is computed outside the cache; its after() does nothing.
  void compute_outside(const Key& key) {
    if (slot* s = find(key)) {
      s->state = outstanding::outside;
      s->pending.reset();
    } else if (std::find(outside_keys_.begin(), outside_keys_.end(), key) == outside_keys_.end()) {
      try {
        outside_keys_.push_back(key);
      } catch (...) {
        // Out of memory: that key's after() will report an incident of its own.
      }
    }
  }
  bool forget_outside(const Key& key) {
    const auto it = std::find(outside_keys_.begin(), outside_keys_.end(), key);
    if (it == outside_keys_.end()) return false;
    outside_keys_.erase(it);
    return true;
  }

  void report(const Key& key, hook_call call, const step_info& info, const std::exception_ptr& failure) {
    ++incident_count_;
    // Out of memory for the message or the list: the counter and the callback still see the incident.
    incident happened{key, call, info, std::string{}};
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      try {
        happened.message = e.what();
      } catch (...) {
      }
    } catch (...) {
      try {
        happened.message = "an exception not derived from std::exception";
      } catch (...) {
      }
    }
    if (incidents_.size() < options_.incident_capacity) {
      try {
        incidents_.push_back(happened);
      } catch (...) {
      }
    }
    if (incident_callback_) incident_callback_(happened);
  }

  controller_type cache_;
  hooks_options options_;
  std::vector<slot> keys_;  // the generation's keys, by branch
  std::vector<Key> outside_keys_;  // never_throw: keys without a branch computed outside the cache
  std::vector<incident> incidents_;
  incident_callback incident_callback_;
  std::uint64_t incident_count_ = 0;
  std::size_t anchor_step_ = 0;  // the step the anchor was begun at last
  std::size_t first_step_ = 0;   // the generation's first step
  std::size_t steps_ = 0;        // the generation's schedule length
  bool in_generation_ = false;
  bool anchor_finished_ = false;  // the anchor's evaluation at anchor_step_ has finished
};

}  // namespace easycache
