// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Host-memory backend: raw buffers (pointer + element count, as ggml and
// stable-diffusion.cpp hold host tensors) of float, double, float16 or
// bfloat16; host_view, whose element type is a run-time value; and
// host_tensor_traits, the base that makes any contiguous host tensor type
// usable with two or three functions.
#pragma once

#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <type_traits>

#include "../error.hpp"
#include "../half.hpp"
#include "../tensor_traits.hpp"
#include "../detail/format.hpp"
#include "../detail/host_kernels.hpp"
#include "../detail/mixed_kernels.hpp"
#include "../detail/scoped_kernels.hpp"

namespace easycache {

/// A non-owning view of `size` contiguous elements of host memory.
/// `Scalar` is float, double, float16 or bfloat16 (half.hpp; 16-bit elements
/// are computed in float). The caller keeps the memory alive. `data` may be at
/// any byte address, aligned for `Scalar` or not (a tensor inside a packed
/// buffer): the host passes read and write elements as bytes.
template <class Scalar>
struct host_buffer {
  Scalar* data = nullptr;
  std::size_t size = 0;
};

namespace detail {

// Owning host storage for the controller's state; uninitialized on allocation
// (every element is written before it is read).
template <class Scalar>
class host_storage {
 public:
  void resize(std::size_t n) {
    if (n != size_ || !values_) {
      values_.reset();
      size_ = 0;
      values_ = std::unique_ptr<Scalar[]>(new Scalar[n ? n : 1]);
      size_ = n;
    }
  }
  Scalar* data() noexcept { return values_.get(); }
  const Scalar* data() const noexcept { return values_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  std::unique_ptr<Scalar[]> values_;
  std::size_t size_ = 0;
};

struct host_workspace {
  double sums[statistic_slot_count] = {};
  double skip_error = 0;  // Σ|v − p| of the last commit_predicting

  // A commit's three sums (host::commit_sums or scoped::commit_sums) into their slots.
  template <class Sums>
  void store_commit(const Sums& commit) noexcept {
    sums[static_cast<std::size_t>(statistic_slot::output_change)] = commit.output_change;
    sums[static_cast<std::size_t>(statistic_slot::input_change_since_compute)] = commit.input_change;
    sums[static_cast<std::size_t>(statistic_slot::output_norm)] = commit.output_norm;
  }
};

// commit_predicting of the host traits: the commit pass with the prediction's
// error, NaN where there was nothing to compare with (no previous compute).
template <class E, class B, class Buffer>
void commit_predicting_into(host_workspace& workspace, const E* x, const E* v, B* x_last, B* delta, std::size_t n,
                            bool measure_change, const statistics_sampling& sampling,
                            const commit_prediction<Buffer>& prediction) {
  const auto sums = host::mixed::commit(
      x, v, x_last, delta, n, measure_change, sampling,
      host::mixed::prediction_for(prediction.delta_prev ? prediction.delta_prev->data() : nullptr,
                                  prediction.extrapolate, prediction.weight));
  workspace.store_commit(sums);
  workspace.skip_error = measure_change ? sums.skip_error : std::numeric_limits<double>::quiet_NaN();
}

template <class Scalar>
inline constexpr bool is_host_scalar = std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double> ||
                                       std::is_same_v<Scalar, float16> || std::is_same_v<Scalar, bfloat16>;

// The cached vectors of a host tensor: its own element type, except float for
// the 16-bit types (docs/performance.md measures both).
template <class Scalar>
using default_cached_t = std::conditional_t<half_convert::is_16bit<Scalar>, float, Scalar>;

}  // namespace detail

/// Base for tensor_traits of any tensor type whose elements are contiguous in
/// host memory, at any address (see host_buffer). The specialization derives
/// from it and adds:
///
///   static const Scalar* data(const T&);   // first element
///   static Scalar* data(T&);               // (may be one function for view types)
///   static std::size_t size(const T&);     // element count
///
/// and may add check(const T&) and resize_output(T&, const T&).
///
/// `Scalar` is float, double, float16 or bfloat16; `Cached` is the element
/// type of the controller's cached vectors (the last input, Δ, ...): Scalar
/// for float and double; float by default for the 16-bit types, or Scalar
/// itself (half the memory, Δ rounded to 16 bits). 16-bit elements are
/// converted to float inside each fused pass, with no extra pass.
template <class Tensor, class Scalar, class Cached = detail::default_cached_t<Scalar>>
struct host_tensor_traits {
  static_assert(detail::is_host_scalar<Scalar>,
                "easycache: host tensors must hold float, double, easycache::float16 or easycache::bfloat16 "
                "elements");
  static_assert(std::is_same_v<Cached, Scalar> || (detail::half_convert::is_16bit<Scalar> && std::is_same_v<Cached, float>),
                "easycache: host_tensor_traits<T, Scalar, Cached>: Cached is Scalar, or float for 16-bit Scalar");

  using buffer_type = detail::host_storage<Cached>;
  using workspace_type = detail::host_workspace;

  static void allocate(buffer_type& buffer, const Tensor& like) { buffer.resize(self::size(like)); }

  static void prepare(workspace_type& workspace, const Tensor&) noexcept { workspace = workspace_type{}; }

  static void reduce_abs_diff(workspace_type& workspace, statistic_slot slot, const Tensor& x, const buffer_type& ref,
                              const statistics_sampling& sampling) {
    workspace.sums[static_cast<std::size_t>(slot)] =
        detail::host::mixed::sum_abs_diff(self::data(x), ref.data(), self::size(x), sampling);
  }

  static void apply_delta(const Tensor& x, const buffer_type& delta, Tensor& out, buffer_type* input_copy) {
    detail::host::mixed::add(self::data(x), delta.data(), self::data(out), input_copy ? input_copy->data() : nullptr,
                 self::size(x));
  }

  static void commit(workspace_type& workspace, const Tensor& x, const Tensor& v, buffer_type& x_last,
                     buffer_type& delta, bool measure_change, const statistics_sampling& sampling) {
    workspace.store_commit(detail::host::mixed::commit(self::data(x), self::data(v), x_last.data(), delta.data(),
                                                       self::size(x), measure_change, sampling));
  }

  /// commit() that also measures what a skip would have returned (step_record::realized_error).
  static void commit_predicting(workspace_type& workspace, const Tensor& x, const Tensor& v, buffer_type& x_last,
                                buffer_type& delta, bool measure_change, const statistics_sampling& sampling,
                                const commit_prediction<buffer_type>& prediction) {
    detail::commit_predicting_into(workspace, self::data(x), self::data(v), x_last.data(), delta.data(), self::size(x),
                                   measure_change, sampling, prediction);
  }

  static double skip_error(const workspace_type& workspace) noexcept { return workspace.skip_error; }
  /// The commit that commit_predicting extends: a specialization that declares
  /// its own commit (a pass of its own, a hook) hides this one, and the
  /// controller then calls that commit and leaves realized_error unmeasured.
  static constexpr auto predicting_commit() noexcept { return &host_tensor_traits::commit; }

  /// The peer variants' statistics (statistics_scope): scalar passes in a fixed element order.
  static void reduce_abs_diff_scoped(workspace_type& workspace, statistic_slot slot, const Tensor& x,
                                     const buffer_type& ref, const statistics_scope& scope) {
    workspace.sums[static_cast<std::size_t>(slot)] = detail::scoped::sum_abs_diff(self::data(x), ref.data(), scope);
  }

  static void commit_scoped(workspace_type& workspace, const Tensor& x, const Tensor& v, buffer_type& x_last,
                            buffer_type& delta, buffer_type& v_last, bool measure_change,
                            const statistics_scope& scope) {
    const auto sums = detail::scoped::commit(self::data(x), self::data(v), x_last.data(), delta.data(), v_last.data(),
                                             self::size(x), measure_change, scope);
    workspace.store_commit(sums);
  }

  static void apply_delta_extrapolated(const Tensor& x, const buffer_type& delta, const buffer_type& delta_prev,
                                       double weight, Tensor& out, buffer_type* input_copy) {
    detail::host::mixed::add_extrapolated(self::data(x), delta.data(), delta_prev.data(), weight, self::data(out),
                              input_copy ? input_copy->data() : nullptr, self::size(x));
  }

  static void copy(const Tensor&, const buffer_type& from, buffer_type& to) {
    detail::host::copy<Cached>(from.data(), to.data(), from.size());
  }

  static void save_input(const Tensor& x, buffer_type& to) { detail::host::mixed::save_input(self::data(x), to.data(), self::size(x)); }

  static void apply_saved_output(const Tensor& x, const buffer_type& x_saved, const buffer_type& delta, Tensor& out,
                                 buffer_type* input_copy) {
    detail::host::mixed::add_buffers(x_saved.data(), delta.data(), self::data(x), self::data(out),
                         input_copy ? input_copy->data() : nullptr, self::size(x));
  }

  static void store_delta(const Tensor& x, const Tensor& v, buffer_type& delta) {
    detail::host::mixed::subtract(self::data(v), self::data(x), delta.data(), self::size(x));
  }

  static void read(workspace_type& workspace, double (&sums)[statistic_slot_count]) noexcept {
    for (std::size_t i = 0; i < statistic_slot_count; ++i) sums[i] = workspace.sums[i];
  }

  /// The controller refuses an output that shares memory with the input, in
  /// whole or in part (std::less: a total order even on unrelated pointers).
  static bool same_storage(const Tensor& a, const Tensor& b) {
    const Scalar* pa = self::data(a);
    const Scalar* pb = self::data(b);
    const std::size_t na = self::size(a), nb = self::size(b);
    if (pa == nullptr || pb == nullptr || na == 0 || nb == 0) return false;
    const std::less<const Scalar*> before;
    return before(pa, pb + nb) && before(pb, pa + na);
  }

 private:
  using self = tensor_traits<Tensor>;
};

/// Raw host buffers of float, double, float16 or bfloat16.
template <class Scalar>
struct tensor_traits<host_buffer<Scalar>, std::enable_if_t<detail::is_host_scalar<Scalar>>>
    : host_tensor_traits<host_buffer<Scalar>, Scalar> {
  static Scalar* data(const host_buffer<Scalar>& b) noexcept { return b.data; }
  static std::size_t size(const host_buffer<Scalar>& b) noexcept { return b.size; }
  static void check(const host_buffer<Scalar>& b) {
    if (b.data == nullptr && b.size != 0)
      throw error(detail::message("host_buffer has a null data pointer and ", b.size, " elements"));
  }
};

/// Element types of a host_view.
enum class host_dtype : unsigned char { float32, float16, bfloat16 };

/// "float32", "float16" or "bfloat16".
inline const char* to_string(host_dtype t) noexcept {
  switch (t) {
    case host_dtype::float32: return "float32";
    case host_dtype::float16: return "float16";
    case host_dtype::bfloat16: return "bfloat16";
  }
  return "unknown";
}

/// Bytes of one element.
inline std::size_t element_size(host_dtype t) noexcept { return t == host_dtype::float32 ? 4 : 2; }

/// A non-owning view of `size` contiguous elements of host memory whose
/// element type is a run-time value, as an engine's tensor struct holds it
/// (ggml's `type` field): one tensor_traits specialization, through
/// view_traits<T, host_view>, then serves tensors of every supported type.
/// The generation's first step fixes the type: a later input or output of
/// another type is refused (easycache::error). Cached vectors are float.
/// `data` may be at any byte address.
struct host_view {
  void* data = nullptr;
  std::size_t size = 0;
  host_dtype dtype = host_dtype::float32;

  constexpr host_view() noexcept = default;
  constexpr host_view(void* elements, std::size_t count, host_dtype type) noexcept
      : data(elements), size(count), dtype(type) {}
  constexpr host_view(float* elements, std::size_t count) noexcept
      : data(elements), size(count), dtype(host_dtype::float32) {}
  constexpr host_view(float16* elements, std::size_t count) noexcept
      : data(elements), size(count), dtype(host_dtype::float16) {}
  constexpr host_view(bfloat16* elements, std::size_t count) noexcept
      : data(elements), size(count), dtype(host_dtype::bfloat16) {}
};

namespace detail {

// The cached vectors of a host_view generation: floats, and the element type they were made for.
struct host_view_storage {
  host_storage<float> values;
  host_dtype dtype = host_dtype::float32;

  float* data() noexcept { return values.data(); }
  const float* data() const noexcept { return values.data(); }
  std::size_t size() const noexcept { return values.size(); }
};

// Calls f with t's elements as a typed pointer.
template <class F>
void with_elements(const host_view& t, F&& f) {
  switch (t.dtype) {
    case host_dtype::float16: f(static_cast<float16*>(t.data)); return;
    case host_dtype::bfloat16: f(static_cast<bfloat16*>(t.data)); return;
    case host_dtype::float32: break;
  }
  f(static_cast<float*>(t.data));
}

}  // namespace detail

/// Host tensors whose element type is known at run time: every pass
/// dispatches once on it, to the fused passes of that type.
template <>
struct tensor_traits<host_view> {
  using buffer_type = detail::host_view_storage;
  using workspace_type = detail::host_workspace;

  static std::size_t size(const host_view& t) noexcept { return t.size; }

  /// Refuses a null pointer with elements and an unknown dtype.
  static void check(const host_view& t) {
    if (t.dtype != host_dtype::float32 && t.dtype != host_dtype::float16 && t.dtype != host_dtype::bfloat16)
      throw error(detail::message("host_view has an unknown dtype (", static_cast<int>(t.dtype),
                                  "); supported: float32, float16, bfloat16"));
    if (t.data == nullptr && t.size != 0)
      throw error(detail::message("host_view has a null data pointer and ", t.size, " elements"));
  }

  /// Refuses a tensor whose dtype differs from the generation's.
  static void check_compatible(const host_view& t, const buffer_type& state) {
    if (t.dtype != state.dtype)
      throw error(detail::message("host_view changed within a generation: dtype ", to_string(t.dtype),
                                  ", the generation started with ", to_string(state.dtype),
                                  " (start a new generation at step 0 to change it)"));
  }

  static void allocate(buffer_type& buffer, const host_view& like) {
    buffer.values.resize(like.size);
    buffer.dtype = like.dtype;
  }

  static void prepare(workspace_type& workspace, const host_view&) noexcept { workspace = workspace_type{}; }

  static void reduce_abs_diff(workspace_type& workspace, statistic_slot slot, const host_view& x,
                              const buffer_type& ref, const statistics_sampling& sampling) {
    detail::with_elements(x, [&](auto* xe) {
      workspace.sums[static_cast<std::size_t>(slot)] = detail::host::mixed::sum_abs_diff(xe, ref.data(), x.size, sampling);
    });
  }

  static void apply_delta(const host_view& x, const buffer_type& delta, host_view& out, buffer_type* input_copy) {
    same_dtype(x, out);
    detail::with_elements(x, [&](auto* xe) {
      detail::host::mixed::add(xe, delta.data(), typed(out, xe), input_copy ? input_copy->data() : nullptr, x.size);
    });
  }

  static void commit(workspace_type& workspace, const host_view& x, const host_view& v, buffer_type& x_last,
                     buffer_type& delta, bool measure_change, const statistics_sampling& sampling) {
    same_dtype(x, v);
    detail::with_elements(x, [&](auto* xe) {
      workspace.store_commit(detail::host::mixed::commit(xe, typed(v, xe), x_last.data(), delta.data(), x.size,
                                                        measure_change, sampling));
    });
  }

  /// commit() that also measures what a skip would have returned (step_record::realized_error).
  static void commit_predicting(workspace_type& workspace, const host_view& x, const host_view& v,
                                buffer_type& x_last, buffer_type& delta, bool measure_change,
                                const statistics_sampling& sampling, const commit_prediction<buffer_type>& prediction) {
    same_dtype(x, v);
    detail::with_elements(x, [&](auto* xe) {
      detail::commit_predicting_into(workspace, xe, typed(v, xe), x_last.data(), delta.data(), x.size, measure_change,
                                     sampling, prediction);
    });
  }

  static double skip_error(const workspace_type& workspace) noexcept { return workspace.skip_error; }
  static constexpr auto predicting_commit() noexcept { return &tensor_traits::commit; }

  /// The peer variants' statistics (statistics_scope).
  static void reduce_abs_diff_scoped(workspace_type& workspace, statistic_slot slot, const host_view& x,
                                     const buffer_type& ref, const statistics_scope& scope) {
    detail::with_elements(x, [&](auto* xe) {
      workspace.sums[static_cast<std::size_t>(slot)] = detail::scoped::sum_abs_diff(xe, ref.data(), scope);
    });
  }

  static void commit_scoped(workspace_type& workspace, const host_view& x, const host_view& v, buffer_type& x_last,
                            buffer_type& delta, buffer_type& v_last, bool measure_change,
                            const statistics_scope& scope) {
    same_dtype(x, v);
    detail::with_elements(x, [&](auto* xe) {
      const auto sums = detail::scoped::commit(xe, typed(v, xe), x_last.data(), delta.data(), v_last.data(), x.size,
                                               measure_change, scope);
      workspace.store_commit(sums);
    });
  }

  static void apply_delta_extrapolated(const host_view& x, const buffer_type& delta, const buffer_type& delta_prev,
                                       double weight, host_view& out, buffer_type* input_copy) {
    same_dtype(x, out);
    detail::with_elements(x, [&](auto* xe) {
      detail::host::mixed::add_extrapolated(xe, delta.data(), delta_prev.data(), weight, typed(out, xe),
                                            input_copy ? input_copy->data() : nullptr, x.size);
    });
  }

  static void copy(const host_view&, const buffer_type& from, buffer_type& to) {
    detail::host::copy<float>(from.data(), to.data(), from.size());
    to.dtype = from.dtype;
  }

  static void save_input(const host_view& x, buffer_type& to) {
    detail::with_elements(x, [&](auto* xe) { detail::host::mixed::save_input(xe, to.data(), x.size); });
  }

  static void apply_saved_output(const host_view& x, const buffer_type& x_saved, const buffer_type& delta,
                                 host_view& out, buffer_type* input_copy) {
    same_dtype(x, out);
    detail::with_elements(x, [&](auto* xe) {
      detail::host::mixed::add_buffers(x_saved.data(), delta.data(), xe, typed(out, xe),
                                       input_copy ? input_copy->data() : nullptr, x.size);
    });
  }

  static void store_delta(const host_view& x, const host_view& v, buffer_type& delta) {
    same_dtype(x, v);
    detail::with_elements(x, [&](auto* xe) { detail::host::mixed::subtract(typed(v, xe), xe, delta.data(), x.size); });
  }

  static void read(workspace_type& workspace, double (&sums)[statistic_slot_count]) noexcept {
    for (std::size_t i = 0; i < statistic_slot_count; ++i) sums[i] = workspace.sums[i];
  }

  /// Whether the byte ranges of a and b overlap.
  static bool same_storage(const host_view& a, const host_view& b) {
    const auto* pa = static_cast<const unsigned char*>(a.data);
    const auto* pb = static_cast<const unsigned char*>(b.data);
    const std::size_t na = a.size * element_size(a.dtype), nb = b.size * element_size(b.dtype);
    if (pa == nullptr || pb == nullptr || na == 0 || nb == 0) return false;
    const std::less<const unsigned char*> before;
    return before(pa, pb + nb) && before(pb, pa + na);
  }

 private:
  // The other tensor of a pass, as the element pointer type of the first.
  template <class E>
  static E* typed(const host_view& t, E*) noexcept {
    return static_cast<E*>(t.data);
  }

  // Checked before the pass writes anything: its tensors share one element type.
  static void same_dtype(const host_view& x, const host_view& other) {
    if (other.dtype != x.dtype)
      throw error(detail::message("host_view dtypes differ within a step: the input is ", to_string(x.dtype),
                                  ", the output ", to_string(other.dtype)));
  }
};

}  // namespace easycache
