// SPDX-License-Identifier: MIT
#pragma once

#include <type_traits>
#include <utility>

#include "../error.hpp"
#include "../types.hpp"
#include "format.hpp"

namespace easycache::detail {

inline constexpr int form_none = 0;
inline constexpr int form_out_info = 1;   // void(const T& x, T& out, const step_info&)
inline constexpr int form_out = 2;        // void(const T& x, T& out)
inline constexpr int form_return_info = 3;  // R(const T& x, const step_info&)
inline constexpr int form_return = 4;     // R(const T& x)

template <class F, class T, class... Args>
constexpr bool returns_assignable() {
  if constexpr (std::is_invocable_v<F&, const T&, Args...>) {
    using result = std::invoke_result_t<F&, const T&, Args...>;
    return !std::is_void_v<result> && std::is_assignable_v<T&, result>;
  } else {
    return false;
  }
}

// Which form a denoiser has; the first match wins.
template <class F, class T>
constexpr int denoiser_form() {
  using callable = std::remove_reference_t<F>;
  if constexpr (std::is_invocable_v<callable&, const T&, T&, const step_info&>) {
    return form_out_info;
  } else if constexpr (std::is_invocable_v<callable&, const T&, T&>) {
    return form_out;
  } else if constexpr (returns_assignable<callable, T, const step_info&>()) {
    return form_return_info;
  } else if constexpr (returns_assignable<callable, T>()) {
    return form_return;
  } else {
    return form_none;
  }
}

// What an (x, out) form returns: void, or bool for an engine's failure flag.
template <class F, class T>
using out_form_result = std::conditional_t<std::is_invocable_v<std::remove_reference_t<F>&, const T&, T&, const step_info&>,
                                           std::invoke_result<std::remove_reference_t<F>&, const T&, T&, const step_info&>,
                                           std::invoke_result<std::remove_reference_t<F>&, const T&, T&>>;

template <class F, class T>
constexpr bool out_form_result_usable() {
  using result = typename out_form_result<F, T>::type;
  return std::is_void_v<result> || std::is_same_v<std::remove_cv_t<std::remove_reference_t<result>>, bool>;
}

// Calls an (x, out) form; returns false when it returned false (a failure).
template <int Form, class F, class T>
bool invoke_denoiser(F& denoiser, const T& x, T& out, const step_info& info) {
  if constexpr (Form == form_out_info || Form == form_out) {
    using result = typename out_form_result<F, T>::type;
    if constexpr (std::is_void_v<result>) {
      if constexpr (Form == form_out_info) {
        denoiser(x, out, info);
      } else {
        denoiser(x, out);
      }
      return true;
    } else if constexpr (Form == form_out_info) {
      return static_cast<bool>(denoiser(x, out, info));
    } else {
      return static_cast<bool>(denoiser(x, out));
    }
  } else if constexpr (Form == form_return_info) {
    out = denoiser(x, info);
  } else if constexpr (Form == form_return) {
    out = denoiser(x);
  }
  return true;
}

/// Calls the denoiser for `x` into `out`, whatever its form: an (x, out) form
/// once `out` is prepared (Ops::prepare_output), a returning form through
/// Ops::assign_result. A false from an (x, out) form throws denoiser_failed.
template <class Ops, class F, class T>
void call_denoiser(F& denoiser, const T& x, T& out, const step_info& info) {
  constexpr int form = denoiser_form<F, T>();
  if constexpr (form == form_out_info || form == form_out) {
    static_assert(out_form_result_usable<F, T>(),
                  "easycache: a denoiser of the form (const T& x, T& out[, const step_info&]) returns void, "
                  "or bool (false: the call failed)");
    Ops::prepare_output(out, x);
    if (!invoke_denoiser<form>(denoiser, x, out, info))
      throw denoiser_failed(message("the denoiser returned false (failed) at step ", info.index, ", branch ",
                                    info.branch));
  } else if constexpr (form == form_return_info) {
    Ops::assign_result(x, out, denoiser(x, info), info);
  } else if constexpr (form == form_return) {
    Ops::assign_result(x, out, denoiser(x), info);
  }
}

template <class T>
inline constexpr bool always_true = true;

}  // namespace easycache::detail
