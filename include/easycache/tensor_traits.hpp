// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The customization point: easycache::tensor_traits<T>. The controller touches a
// tensor only through it, so any tensor type (CPU or GPU) plugs in by
// specializing it, in the manner of fmt::formatter<T> or nlohmann::adl_serializer<T>.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include "sampling.hpp"
#include "detail/macros.hpp"

namespace easycache {

template <class Scalar>
struct host_buffer;  // easycache/backends/host_buffer.hpp; named here by the diagnostics only

/// The customization point. Not specialized: the type is not a tensor for easycache.
///
/// A specialization provides (see docs/custom-tensor.md for a worked example):
///
///   using buffer_type;     // owning storage for one tensor's worth of state
///   using workspace_type;  // reduction scratch, one per controller
///   static std::size_t size(const T&);                         // element count
///   static void allocate(buffer_type&, const T& like);         // once per generation
///   static void prepare(workspace_type&, const T& like);       // once per generation
///   static void reduce_abs_diff(workspace_type&, statistic_slot, const T& x,
///                               const buffer_type& ref, const statistics_sampling&);
///   static void apply_delta(const T& x, const buffer_type& delta, T& out,
///                           buffer_type* input_copy);            // out = x + delta
///   static void commit(workspace_type&, const T& x, const T& v, buffer_type& x_last,
///                      buffer_type& delta, bool measure_change, const statistics_sampling&);
///   static void store_delta(const T& x, const T& v, buffer_type& delta);
///   static void read(workspace_type&, double (&sums)[statistic_slot_count]);
///
/// Optional members, used when present:
///
///   static void check(const T&);                     // throw easycache::error on unusable input
///   static void resize_output(T& out, const T& like); // let the controller size `out`
///   static bool same_storage(const T&, const T&);     // refuse an `out` that aliases `x`
///   // for skip_predictor::linear_in_timestep:
///   static void copy(const T& x, const buffer_type& from, buffer_type& to);
///       // to = from; x is the step's input (a GPU backend queues the copy on its stream)
///   static void apply_delta_extrapolated(const T& x, const buffer_type& delta,
///       const buffer_type& delta_prev, double weight, T& out, buffer_type* input_copy);
///       // out = x + delta + weight·(delta − delta_prev)
///   // for skip_predictor::last_output:
///   static void save_input(const T& x, buffer_type& to);   // to = x
///   static void apply_saved_output(const T& x, const buffer_type& x_saved, const buffer_type& delta,
///       T& out, buffer_type* input_copy);    // out = x_saved + delta (the saved output); *input_copy = x
///   // for the peer variants' statistics (statistics_scope; the host backends have them):
///   static void reduce_abs_diff_scoped(workspace_type&, statistic_slot, const T& x,
///       const buffer_type& ref, const statistics_scope&);    // Σ|x − ref| over the sampled elements
///   static void commit_scoped(workspace_type&, const T& x, const T& v, buffer_type& x_last,
///       buffer_type& delta, buffer_type& v_last, bool measure_change, const statistics_scope&);
///       // the sums: Σ|v − v_last| and Σ|x − x_last| over the sampled elements (when
///       // measure_change), Σ|v| (every element, or the sampled ones); then x_last = x,
///       // delta = v − x, and v_last = v at the sampled elements
///   static void check_compatible(const T&, const buffer_type& state);
///       // throw easycache::error when a tensor cannot be used with a buffer of the
///       // generation (its element type or device changed since step 0); called
///       // before anything changes, on inputs and on the denoiser's outputs
///   // for step_record::realized_error (the host backends have them):
///   static void commit_predicting(workspace_type&, const T& x, const T& v, buffer_type& x_last,
///       buffer_type& delta, bool measure_change, const statistics_sampling&,
///       const commit_prediction<buffer_type>&);
///       // commit(), and when measure_change also Σ|v − p| over the sampled elements, p what
///       // a skip would have returned (see commit_prediction); replaces copy + commit
///   static double skip_error(const workspace_type&);  // that sum, readable without a sync
///
/// Host types with contiguous memory need only data() and size(): derive the
/// specialization from easycache::host_tensor_traits<T, Scalar> (host_buffer.hpp).
/// What a skip would have returned at a computed anchor step, for the optional
/// commit_predicting member: p = x + delta, or p = x + delta + weight·(delta −
/// *delta_prev) when `extrapolate` (skip_predictor::linear_in_timestep). When
/// `delta_prev` is set (the linear predictor), the pass also sets *delta_prev
/// to the old delta, the copy the predictor needs before delta is overwritten.
template <class Buffer>
struct commit_prediction {
  Buffer* delta_prev = nullptr;
  bool extrapolate = false;
  double weight = 0;
};

template <class T, class Enable = void>
struct tensor_traits {
  /// Marks the primary template: no backend knows T.
  using easycache_unspecialized = void;
};

namespace detail {

template <class T, class = void>
struct has_traits : std::true_type {};
template <class T>
struct has_traits<T, std::void_t<typename tensor_traits<T>::easycache_unspecialized>> : std::false_type {};

// One detector per required member, so that a diagnostic can name the one
// that is missing (traits_diagnostics below); complete_traits is all of them.
template <class T>
using traits_buffer_t = typename tensor_traits<T>::buffer_type;
template <class T>
using traits_workspace_t = typename tensor_traits<T>::workspace_type;

template <class T, class = void>
struct has_buffer_type : std::false_type {};
template <class T>
struct has_buffer_type<T, std::void_t<traits_buffer_t<T>>> : std::true_type {};

template <class T, class = void>
struct has_workspace_type : std::false_type {};
template <class T>
struct has_workspace_type<T, std::void_t<traits_workspace_t<T>>> : std::true_type {};

// The required members, once: name, the member types its signature needs
// (none, buffer, workspace, both), its signature as the diagnostics and the
// docs table (docs/custom-tensor.md, checked by a test) state it, and the call
// that detects it. The detectors, the diagnostics, complete_traits, the
// placeholder and required_members are all made from this list.
#define EASYCACHE_DETAIL_REQUIRED_MEMBERS(X)                                                                        \
  X(size, none, "static std::size_t size(const T&)",                                                               \
    std::size_t{tensor_traits<T>::size(std::declval<const T&>())})                                                 \
  X(allocate, buffer, "static void allocate(buffer_type&, const T& like)",                                         \
    tensor_traits<T>::allocate(std::declval<traits_buffer_t<T>&>(), std::declval<const T&>()))                     \
  X(prepare, workspace, "static void prepare(workspace_type&, const T& like)",                                     \
    tensor_traits<T>::prepare(std::declval<traits_workspace_t<T>&>(), std::declval<const T&>()))                   \
  X(reduce_abs_diff, both,                                                                                         \
    "static void reduce_abs_diff(workspace_type&, statistic_slot, const T& x, const buffer_type& ref, "            \
    "const statistics_sampling&)",                                                                                 \
    tensor_traits<T>::reduce_abs_diff(std::declval<traits_workspace_t<T>&>(), statistic_slot::input_change,       \
                                      std::declval<const T&>(), std::declval<const traits_buffer_t<T>&>(),         \
                                      std::declval<const statistics_sampling&>()))                                 \
  X(apply_delta, buffer,                                                                                           \
    "static void apply_delta(const T& x, const buffer_type& delta, T& out, buffer_type* input_copy)",               \
    tensor_traits<T>::apply_delta(std::declval<const T&>(), std::declval<const traits_buffer_t<T>&>(),             \
                                  std::declval<T&>(), std::declval<traits_buffer_t<T>*>()))                        \
  X(commit, both,                                                                                                  \
    "static void commit(workspace_type&, const T& x, const T& v, buffer_type& x_last, buffer_type& delta, "        \
    "bool measure_change, const statistics_sampling&)",                                                            \
    tensor_traits<T>::commit(std::declval<traits_workspace_t<T>&>(), std::declval<const T&>(),                     \
                             std::declval<const T&>(), std::declval<traits_buffer_t<T>&>(),                        \
                             std::declval<traits_buffer_t<T>&>(), true, std::declval<const statistics_sampling&>())) \
  X(store_delta, buffer, "static void store_delta(const T& x, const T& v, buffer_type& delta)",                    \
    tensor_traits<T>::store_delta(std::declval<const T&>(), std::declval<const T&>(),                              \
                                  std::declval<traits_buffer_t<T>&>()))                                            \
  X(read, workspace, "static void read(workspace_type&, double (&sums)[statistic_slot_count])",                    \
    tensor_traits<T>::read(std::declval<traits_workspace_t<T>&>(), std::declval<double (&)[statistic_slot_count]>()))

#define EASYCACHE_DETAIL_DETECTOR(name, needs, signature, ...)                            \
  template <class T, class = void>                                                         \
  struct has_##name : std::false_type {};                                                  \
  template <class T>                                                                       \
  struct has_##name<T, std::void_t<decltype(__VA_ARGS__)>> : std::true_type {};
EASYCACHE_DETAIL_REQUIRED_MEMBERS(EASYCACHE_DETAIL_DETECTOR)
#undef EASYCACHE_DETAIL_DETECTOR

#define EASYCACHE_DETAIL_DETECTED(name, needs, signature, ...) , has_##name<T>
template <class T>
struct complete_traits
    : std::conjunction<has_buffer_type<T>, has_workspace_type<T> EASYCACHE_DETAIL_REQUIRED_MEMBERS(
          EASYCACHE_DETAIL_DETECTED)> {};
#undef EASYCACHE_DETAIL_DETECTED

/// A required member of the contract, as docs/custom-tensor.md lists it.
struct required_member {
  const char* name;
  const char* signature;
};
#define EASYCACHE_DETAIL_LISTED(name, needs, signature, ...) required_member{#name, signature},
inline constexpr required_member required_members[] = {EASYCACHE_DETAIL_REQUIRED_MEMBERS(EASYCACHE_DETAIL_LISTED)};
#undef EASYCACHE_DETAIL_LISTED

template <class T, class = void>
struct has_check : std::false_type {};
template <class T>
struct has_check<T, std::void_t<decltype(tensor_traits<T>::check(std::declval<const T&>()))>> : std::true_type {};

template <class T, class = void>
struct has_same_storage : std::false_type {};
template <class T>
struct has_same_storage<
    T, std::void_t<decltype(bool(tensor_traits<T>::same_storage(std::declval<const T&>(), std::declval<const T&>())))>>
    : std::true_type {};

template <class T, class = void>
struct has_extrapolation : std::false_type {};
template <class T>
struct has_extrapolation<
    T, std::void_t<decltype(tensor_traits<T>::copy(std::declval<const T&>(),
                                                   std::declval<const typename tensor_traits<T>::buffer_type&>(),
                                                   std::declval<typename tensor_traits<T>::buffer_type&>())),
                   decltype(tensor_traits<T>::apply_delta_extrapolated(
                       std::declval<const T&>(), std::declval<const typename tensor_traits<T>::buffer_type&>(),
                       std::declval<const typename tensor_traits<T>::buffer_type&>(), 0.0, std::declval<T&>(),
                       std::declval<typename tensor_traits<T>::buffer_type*>()))>> : std::true_type {};

template <class T, class = void>
struct has_output_reuse : std::false_type {};
template <class T>
struct has_output_reuse<
    T, std::void_t<decltype(tensor_traits<T>::save_input(std::declval<const T&>(),
                                                         std::declval<typename tensor_traits<T>::buffer_type&>())),
                   decltype(tensor_traits<T>::apply_saved_output(
                       std::declval<const T&>(), std::declval<const typename tensor_traits<T>::buffer_type&>(),
                       std::declval<const typename tensor_traits<T>::buffer_type&>(), std::declval<T&>(),
                       std::declval<typename tensor_traits<T>::buffer_type*>()))>> : std::true_type {};

template <class T, class = void>
struct has_scoped_statistics : std::false_type {};
template <class T>
struct has_scoped_statistics<
    T, std::void_t<decltype(tensor_traits<T>::reduce_abs_diff_scoped(
                       std::declval<typename tensor_traits<T>::workspace_type&>(), statistic_slot::input_change,
                       std::declval<const T&>(), std::declval<const typename tensor_traits<T>::buffer_type&>(),
                       std::declval<const statistics_scope&>())),
                   decltype(tensor_traits<T>::commit_scoped(
                       std::declval<typename tensor_traits<T>::workspace_type&>(), std::declval<const T&>(),
                       std::declval<const T&>(), std::declval<typename tensor_traits<T>::buffer_type&>(),
                       std::declval<typename tensor_traits<T>::buffer_type&>(),
                       std::declval<typename tensor_traits<T>::buffer_type&>(), true,
                       std::declval<const statistics_scope&>()))>> : std::true_type {};

template <class T, class = void>
struct has_check_compatible : std::false_type {};
template <class T>
struct has_check_compatible<
    T, std::void_t<decltype(tensor_traits<T>::check_compatible(
           std::declval<const T&>(), std::declval<const typename tensor_traits<T>::buffer_type&>()))>>
    : std::true_type {};

template <class T, class = void>
struct has_commit_predicting : std::false_type {};
template <class T>
struct has_commit_predicting<
    T, std::void_t<decltype(tensor_traits<T>::commit_predicting(
                       std::declval<traits_workspace_t<T>&>(), std::declval<const T&>(), std::declval<const T&>(),
                       std::declval<traits_buffer_t<T>&>(), std::declval<traits_buffer_t<T>&>(), true,
                       std::declval<const statistics_sampling&>(),
                       std::declval<const commit_prediction<traits_buffer_t<T>>&>())),
                   decltype(tensor_traits<T>::skip_error(std::declval<const traits_workspace_t<T>&>()))>>
    : std::true_type {};

// commit_predicting is used only when it extends the commit the traits have:
// a traits class that declares predicting_commit() (the commit it extends,
// host_tensor_traits does) and then a commit of its own (a derived
// specialization that overrides it) gets that commit called instead.
template <class T, class = void>
struct declares_predicting_commit : std::false_type {};
template <class T>
struct declares_predicting_commit<T, std::void_t<decltype(tensor_traits<T>::predicting_commit())>> : std::true_type {};

template <class T>
bool commit_predicting_applies() noexcept {
  if constexpr (declares_predicting_commit<T>::value) {
    using commit_type = void (*)(traits_workspace_t<T>&, const T&, const T&, traits_buffer_t<T>&, traits_buffer_t<T>&,
                                 bool, const statistics_sampling&);
    return tensor_traits<T>::predicting_commit() == static_cast<commit_type>(&tensor_traits<T>::commit);
  } else {
    return true;
  }
}

template <class T, class = void>
struct has_resize_output : std::false_type {};
template <class T>
struct has_resize_output<
    T, std::void_t<decltype(tensor_traits<T>::resize_output(std::declval<T&>(), std::declval<const T&>()))>>
    : std::true_type {};

// Stands in for tensor_traits<T> when T is unsupported, so that the one
// static_assert in controller is the only diagnostic the user sees: every
// required member, taking anything.
#define EASYCACHE_DETAIL_PLACEHOLDER(name, needs, signature, ...) \
  template <class... Args>                                        \
  static std::size_t name(Args&&...) noexcept {                   \
    return 0;                                                     \
  }
template <class T>
struct placeholder_traits {
  using buffer_type = int;
  using workspace_type = int;
  EASYCACHE_DETAIL_REQUIRED_MEMBERS(EASYCACHE_DETAIL_PLACEHOLDER)
};
#undef EASYCACHE_DETAIL_PLACEHOLDER

template <class T>
inline constexpr bool dependent_false = false;

// The diagnostics of tensor_traits_check. Each check is a class of its own, so
// that every failing one is reported (a compiler may stop at the first failing
// static_assert of one class), and each is instantiated with whether it holds.
template <class T>
struct missing_traits_diagnostic {
  static_assert(dependent_false<T>,
                "easycache: no easycache::tensor_traits for this tensor type. Include the backend header for it "
                "(easycache/backends/eigen.hpp, easycache/backends/host_buffer.hpp, easycache/backends/cuda.cuh, easycache/backends/torch.hpp) or "
                "specialize easycache::tensor_traits<YourTensor> (see docs/custom-tensor.md).");
};
template <class Scalar>
struct missing_traits_diagnostic<host_buffer<Scalar>> {
  static_assert(dependent_false<Scalar>,
                "easycache: no easycache::tensor_traits for this host_buffer<Scalar>: host buffers hold float, "
                "double, easycache::float16 or easycache::bfloat16 elements (include "
                "easycache/backends/host_buffer.hpp for those; easycache::host_view for a type known at run time)");
};

template <bool Present>
struct requires_buffer_type {
  static_assert(Present,
                "easycache: easycache::tensor_traits<YourTensor> is specialized but lacks a required member: "
                "using buffer_type = ...; (owning storage for one tensor's worth of state)");
};
template <bool Present>
struct requires_workspace_type {
  static_assert(Present,
                "easycache: easycache::tensor_traits<YourTensor> is specialized but lacks a required member: "
                "using workspace_type = ...; (scratch for the per-step sums)");
};
#define EASYCACHE_DETAIL_DIAGNOSTIC(name, needs, signature, ...)                                               \
  template <bool Present>                                                                                      \
  struct requires_##name {                                                                                     \
    static_assert(Present,                                                                                     \
                  "easycache: easycache::tensor_traits<YourTensor> is specialized but lacks a required member: " \
                  signature " (missing, or declared so that this call does not compile)");                       \
  };
EASYCACHE_DETAIL_REQUIRED_MEMBERS(EASYCACHE_DETAIL_DIAGNOSTIC)
#undef EASYCACHE_DETAIL_DIAGNOSTIC

// Whether a member's diagnostic applies: one whose signature needs a missing
// buffer_type or workspace_type is left to that type's message.
enum class member_needs { none, buffer, workspace, both };
template <class T>
constexpr bool can_check(member_needs needs) {
  const bool buffer = has_buffer_type<T>::value, workspace = has_workspace_type<T>::value;
  switch (needs) {
    case member_needs::none: return true;
    case member_needs::buffer: return buffer;
    case member_needs::workspace: return workspace;
    case member_needs::both: return buffer && workspace;
  }
  return true;
}

#define EASYCACHE_DETAIL_DIAGNOSED(name, needs, signature, ...) \
  , requires_##name<!can_check<T>(member_needs::needs) || has_##name<T>::value>
template <class T, bool Specialized = has_traits<T>::value>
struct traits_diagnostics : requires_buffer_type<has_buffer_type<T>::value>,
                            requires_workspace_type<has_workspace_type<T>::value> EASYCACHE_DETAIL_REQUIRED_MEMBERS(
                                EASYCACHE_DETAIL_DIAGNOSED) {};
#undef EASYCACHE_DETAIL_DIAGNOSED
template <class T>
struct traits_diagnostics<T, false> : missing_traits_diagnostic<T> {};

}  // namespace detail

/// True when tensor_traits<T> is specialized with every required member.
template <class T>
inline constexpr bool is_tensor_v = detail::complete_traits<std::remove_cv_t<T>>::value;

/// True when the controller may size the output itself (owning tensor types),
/// which enables the `Tensor step(x, info, denoiser)` overload.
template <class T>
inline constexpr bool is_resizable_tensor_v = is_tensor_v<T>&& detail::has_resize_output<T>::value;

/// Checks T against the tensor_traits contract at compile time, with one
/// diagnostic (static_assert) per problem, each naming it: no specialization
/// (with the headers to include), a host_buffer of an unsupported element type
/// (with the supported ones), each missing or uncallable required member (one
/// whose signature needs a missing type is left to that type's message).
/// Instantiating it runs the checks; next to a specialization:
///
///   static_assert(sizeof(easycache::tensor_traits_check<my::tensor>) != 0);
template <class T>
struct tensor_traits_check : detail::traits_diagnostics<std::remove_cv_t<T>> {};

#if EASYCACHE_HAS_CONCEPTS
/// A type easycache can cache: tensor_traits<T> is specialized and complete.
template <class T>
concept tensor = is_tensor_v<T>;
#endif

}  // namespace easycache

#undef EASYCACHE_DETAIL_REQUIRED_MEMBERS
