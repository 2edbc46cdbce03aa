// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// What makes a type a policy (policy.hpp), and how the controller builds,
// configures and commits one, whichever of the optional members it has.
#pragma once

#include <optional>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../decision.hpp"

namespace easycache::detail {

// commit(ctx, verdict, measured): the policy is told the measurement its verdict came from.
template <class P, class = void>
struct has_measured_commit : std::false_type {};
template <class P>
struct has_measured_commit<P, std::void_t<decltype(std::declval<P&>().commit(
                                  std::declval<const step_context&>(), std::declval<const verdict&>(),
                                  std::declval<const std::optional<step_measurement>&>()))>> : std::true_type {};

template <class P, class = void>
struct has_plain_commit : std::false_type {};
template <class P>
struct has_plain_commit<P, std::void_t<decltype(std::declval<P&>().commit(std::declval<const step_context&>(),
                                                                          std::declval<const verdict&>()))>>
    : std::true_type {};

template <class P, class = void>
struct is_policy : std::false_type {};
template <class P>
struct is_policy<P, std::void_t<decltype(std::declval<const P&>().plan(std::declval<const step_context&>())),
                                decltype(std::declval<const P&>().decide(std::declval<const step_context&>(),
                                                                         std::declval<const step_measurement&>())),
                                decltype(std::declval<P&>().reset())>>
    : std::bool_constant<has_measured_commit<P>::value || has_plain_commit<P>::value> {};

/// Tells `policy` that the step was carried out as `v` says; `measured` is
/// the measurement decide() gave `v` from (nullopt: planned, or degenerate).
template <class P>
void commit_policy(P& policy, const step_context& ctx, const verdict& v,
                   const std::optional<step_measurement>& measured) noexcept {
  if constexpr (has_measured_commit<P>::value) {
    policy.commit(ctx, v, measured);
  } else {
    policy.commit(ctx, v);
  }
}

template <class P, class = void>
struct has_configure : std::false_type {};
template <class P>
struct has_configure<P, std::void_t<decltype(std::declval<P&>().configure(std::declval<const config&>()))>>
    : std::true_type {};

/// A policy built from a configuration: by its constructor from one, else
/// default-constructed and configure()d when it has configure(config).
template <class Policy>
Policy make_policy(const config& cfg) {
  if constexpr (std::is_constructible_v<Policy, const config&>) {
    return Policy(cfg);
  } else {
    static_assert(std::is_default_constructible_v<Policy>,
                  "easycache: this policy needs arguments: construct the controller with (config, policy)");
    Policy policy{};
    if constexpr (has_configure<Policy>::value) policy.configure(cfg);
    return policy;
  }
}

/// A new configuration reaches a policy through its configure(config) if it
/// has one (keeping its own parameters), else by rebuilding it from the config.
template <class Policy>
void configure_policy(Policy& policy, const config& cfg) {
  if constexpr (has_configure<Policy>::value) {
    policy.configure(cfg);
  } else if constexpr (std::is_constructible_v<Policy, const config&>) {
    policy = Policy(cfg);
  }
}

}  // namespace easycache::detail
