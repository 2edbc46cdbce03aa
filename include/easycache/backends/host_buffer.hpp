// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Host-memory backend: raw buffers (pointer + element count, as ggml and
// stable-diffusion.cpp hold host tensors), and host_tensor_traits, the base that
// makes any contiguous host tensor type usable with two or three functions.
#pragma once

#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <type_traits>

#include "../error.hpp"
#include "../tensor_traits.hpp"
#include "../detail/format.hpp"
#include "../detail/host_kernels.hpp"
#include "../detail/scoped_kernels.hpp"

namespace easycache {

/// A non-owning view of `size` contiguous elements of host memory.
/// `Scalar` is float or double. The caller keeps the memory alive. `data` may
/// be at any byte address, aligned for `Scalar` or not (a tensor inside a
/// packed buffer): the host passes read and write elements as bytes.
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
};

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
template <class Tensor, class Scalar>
struct host_tensor_traits {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "easycache: host tensors must hold float or double elements");

  using buffer_type = detail::host_storage<Scalar>;
  using workspace_type = detail::host_workspace;

  static void allocate(buffer_type& buffer, const Tensor& like) { buffer.resize(self::size(like)); }

  static void prepare(workspace_type& workspace, const Tensor&) noexcept { workspace = workspace_type{}; }

  static void reduce_abs_diff(workspace_type& workspace, statistic_slot slot, const Tensor& x, const buffer_type& ref,
                              const statistics_sampling& sampling) {
    workspace.sums[static_cast<std::size_t>(slot)] =
        detail::host::sum_abs_diff<Scalar>(self::data(x), ref.data(), self::size(x), sampling);
  }

  static void apply_delta(const Tensor& x, const buffer_type& delta, Tensor& out, buffer_type* input_copy) {
    detail::host::add<Scalar>(self::data(x), delta.data(), self::data(out), input_copy ? input_copy->data() : nullptr,
                              self::size(x));
  }

  static void commit(workspace_type& workspace, const Tensor& x, const Tensor& v, buffer_type& x_last,
                     buffer_type& delta, bool measure_change, const statistics_sampling& sampling) {
    const auto sums = detail::host::commit<Scalar>(self::data(x), self::data(v), x_last.data(), delta.data(),
                                                   self::size(x), measure_change, sampling);
    workspace.sums[static_cast<std::size_t>(statistic_slot::output_change)] = sums.output_change;
    workspace.sums[static_cast<std::size_t>(statistic_slot::input_change_since_compute)] = sums.input_change;
    workspace.sums[static_cast<std::size_t>(statistic_slot::output_norm)] = sums.output_norm;
  }

  /// commit() that also measures what a skip would have returned (step_record::realized_error).
  static void commit_predicting(workspace_type& workspace, const Tensor& x, const Tensor& v, buffer_type& x_last,
                                buffer_type& delta, bool measure_change, const statistics_sampling& sampling,
                                const commit_prediction<buffer_type>& prediction) {
    using kind = detail::host::prediction_kind;
    detail::host::prediction_args<Scalar> args;
    args.kind = !prediction.delta_prev ? kind::constant : prediction.extrapolate ? kind::linear : kind::linear_constant;
    args.delta_prev = prediction.delta_prev ? prediction.delta_prev->data() : nullptr;
    args.weight = static_cast<Scalar>(prediction.weight);
    const auto sums = detail::host::commit<Scalar>(self::data(x), self::data(v), x_last.data(), delta.data(),
                                                   self::size(x), measure_change, sampling, args);
    workspace.sums[static_cast<std::size_t>(statistic_slot::output_change)] = sums.output_change;
    workspace.sums[static_cast<std::size_t>(statistic_slot::input_change_since_compute)] = sums.input_change;
    workspace.sums[static_cast<std::size_t>(statistic_slot::output_norm)] = sums.output_norm;
    workspace.skip_error = measure_change ? sums.skip_error : std::numeric_limits<double>::quiet_NaN();
  }

  static double skip_error(const workspace_type& workspace) noexcept { return workspace.skip_error; }
  /// The commit that commit_predicting extends: a specialization that declares
  /// its own commit (a pass of its own, a hook) hides this one, and the
  /// controller then calls that commit and leaves realized_error unmeasured.
  static constexpr auto predicting_commit() noexcept { return &host_tensor_traits::commit; }

  /// The peer variants' statistics (statistics_scope): scalar passes in a fixed element order.
  static void reduce_abs_diff_scoped(workspace_type& workspace, statistic_slot slot, const Tensor& x,
                                     const buffer_type& ref, const statistics_scope& scope) {
    workspace.sums[static_cast<std::size_t>(slot)] = detail::scoped::sum_abs_diff<Scalar>(self::data(x), ref.data(), scope);
  }

  static void commit_scoped(workspace_type& workspace, const Tensor& x, const Tensor& v, buffer_type& x_last,
                            buffer_type& delta, buffer_type& v_last, bool measure_change,
                            const statistics_scope& scope) {
    const auto sums = detail::scoped::commit<Scalar>(self::data(x), self::data(v), x_last.data(), delta.data(),
                                                     v_last.data(), self::size(x), measure_change, scope);
    workspace.sums[static_cast<std::size_t>(statistic_slot::output_change)] = sums.output_change;
    workspace.sums[static_cast<std::size_t>(statistic_slot::input_change_since_compute)] = sums.input_change;
    workspace.sums[static_cast<std::size_t>(statistic_slot::output_norm)] = sums.output_norm;
  }

  static void apply_delta_extrapolated(const Tensor& x, const buffer_type& delta, const buffer_type& delta_prev,
                                       double weight, Tensor& out, buffer_type* input_copy) {
    detail::host::add_extrapolated<Scalar>(self::data(x), delta.data(), delta_prev.data(), weight, self::data(out),
                                           input_copy ? input_copy->data() : nullptr, self::size(x));
  }

  static void copy(const Tensor&, const buffer_type& from, buffer_type& to) {
    detail::host::copy<Scalar>(from.data(), to.data(), from.size());
  }

  static void save_input(const Tensor& x, buffer_type& to) {
    detail::host::copy<Scalar>(self::data(x), to.data(), self::size(x));
  }

  static void apply_saved_output(const Tensor& x, const buffer_type& x_saved, const buffer_type& delta, Tensor& out,
                                 buffer_type* input_copy) {
    detail::host::add_buffers<Scalar>(x_saved.data(), delta.data(), self::data(x), self::data(out),
                                      input_copy ? input_copy->data() : nullptr, self::size(x));
  }

  static void store_delta(const Tensor& x, const Tensor& v, buffer_type& delta) {
    detail::host::subtract<Scalar>(self::data(v), self::data(x), delta.data(), self::size(x));
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

/// Raw host buffers of float or double.
template <class Scalar>
struct tensor_traits<host_buffer<Scalar>, std::enable_if_t<std::is_floating_point_v<Scalar>>>
    : host_tensor_traits<host_buffer<Scalar>, Scalar> {
  static Scalar* data(const host_buffer<Scalar>& b) noexcept { return b.data; }
  static std::size_t size(const host_buffer<Scalar>& b) noexcept { return b.size; }
  static void check(const host_buffer<Scalar>& b) {
    if (b.data == nullptr && b.size != 0)
      throw error(detail::message("host_buffer has a null data pointer and ", b.size, " elements"));
  }
};

}  // namespace easycache
