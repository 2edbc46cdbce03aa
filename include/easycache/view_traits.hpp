// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The one-function route for a tensor type of one's own: say how to view it
// as a tensor easycache already supports (a cuda_tensor for device memory, a
// host_buffer for host memory), and every pass, check and buffer is that
// view's, fused kernels included. In the manner of fmt's format_as.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

#include "tensor_traits.hpp"

namespace easycache {

/// Base of a tensor_traits specialization that views `T` as another tensor type:
///
///   template <>
///   struct easycache::tensor_traits<my::gpu_tensor>
///       : easycache::view_traits<my::gpu_tensor, easycache::cuda_tensor> {
///     static easycache::cuda_tensor view(const my::gpu_tensor& t) {
///       return easycache::cuda_view(t.data(), t.numel(), t.stream());
///     }
///   };
///
/// `View` is the supported tensor type viewed as; `Derived::view(const T&)`
/// (Derived: the specialization itself) returns the view by value; it is called on
/// inputs and outputs alike, so the view must give write access to the
/// memory of an output (as cuda_tensor and host_buffer do). Buffers,
/// workspace and every optional member (checks, predictors, the peer
/// variants' scoped statistics) are the view type's: a member the view's
/// traits lack is absent here too. A specialization may add its own
/// `resize_output(T&, const T&)` for an owning T.
template <class T, class View, class Derived = tensor_traits<T>>
struct view_traits {
 private:
  using base = tensor_traits<View>;
  static_assert(is_tensor_v<View>, "easycache: view_traits<T, View>: View must be a supported tensor type "
                                   "(include its backend header: easycache/backends/cuda.cuh, easycache/backends/host_buffer.hpp)");
  // Derived (the specialization deriving from this) is complete when a member is used.
  static View as_view(const T& t) { return Derived::view(t); }

 public:
  using view_type = View;
  using buffer_type = typename base::buffer_type;
  using workspace_type = typename base::workspace_type;

  static std::size_t size(const T& t) { return base::size(as_view(t)); }
  static void allocate(buffer_type& buffer, const T& like) { base::allocate(buffer, as_view(like)); }
  static void prepare(workspace_type& workspace, const T& like) { base::prepare(workspace, as_view(like)); }
  static void reduce_abs_diff(workspace_type& workspace, statistic_slot slot, const T& x, const buffer_type& ref,
                              const statistics_sampling& sampling) {
    base::reduce_abs_diff(workspace, slot, as_view(x), ref, sampling);
  }
  static void apply_delta(const T& x, const buffer_type& delta, T& out, buffer_type* input_copy) {
    auto out_view = as_view(out);
    base::apply_delta(as_view(x), delta, out_view, input_copy);
  }
  static void commit(workspace_type& workspace, const T& x, const T& v, buffer_type& x_last, buffer_type& delta,
                     bool measure_change, const statistics_sampling& sampling) {
    base::commit(workspace, as_view(x), as_view(v), x_last, delta, measure_change, sampling);
  }
  static void store_delta(const T& x, const T& v, buffer_type& delta) {
    base::store_delta(as_view(x), as_view(v), delta);
  }
  static void read(workspace_type& workspace, double (&sums)[statistic_slot_count]) { base::read(workspace, sums); }

  // Optional members, present when the view's traits have them.
  template <class V = View, std::enable_if_t<detail::has_check<V>::value, int> = 0>
  static void check(const T& t) {
    tensor_traits<V>::check(as_view(t));
  }
  template <class V = View, std::enable_if_t<detail::has_same_storage<V>::value, int> = 0>
  static bool same_storage(const T& a, const T& b) {
    return tensor_traits<V>::same_storage(as_view(a), as_view(b));
  }
  template <class V = View, std::enable_if_t<detail::has_check_compatible<V>::value, int> = 0>
  static void check_compatible(const T& t, const buffer_type& state) {
    tensor_traits<V>::check_compatible(as_view(t), state);
  }
  template <class V = View, std::enable_if_t<detail::has_extrapolation<V>::value, int> = 0>
  static void copy(const T& x, const buffer_type& from, buffer_type& to) {
    tensor_traits<V>::copy(as_view(x), from, to);
  }
  template <class V = View, std::enable_if_t<detail::has_extrapolation<V>::value, int> = 0>
  static void apply_delta_extrapolated(const T& x, const buffer_type& delta, const buffer_type& delta_prev,
                                       double weight, T& out, buffer_type* input_copy) {
    auto out_view = as_view(out);
    tensor_traits<V>::apply_delta_extrapolated(as_view(x), delta, delta_prev, weight, out_view, input_copy);
  }
  template <class V = View, std::enable_if_t<detail::has_output_reuse<V>::value, int> = 0>
  static void save_input(const T& x, buffer_type& to) {
    tensor_traits<V>::save_input(as_view(x), to);
  }
  template <class V = View, std::enable_if_t<detail::has_output_reuse<V>::value, int> = 0>
  static void apply_saved_output(const T& x, const buffer_type& x_saved, const buffer_type& delta, T& out,
                                 buffer_type* input_copy) {
    auto out_view = as_view(out);
    tensor_traits<V>::apply_saved_output(as_view(x), x_saved, delta, out_view, input_copy);
  }
  template <class V = View, std::enable_if_t<detail::has_commit_predicting<V>::value, int> = 0>
  static void commit_predicting(workspace_type& workspace, const T& x, const T& v, buffer_type& x_last,
                                buffer_type& delta, bool measure_change, const statistics_sampling& sampling,
                                const commit_prediction<buffer_type>& prediction) {
    tensor_traits<V>::commit_predicting(workspace, as_view(x), as_view(v), x_last, delta, measure_change, sampling,
                                        prediction);
  }
  template <class V = View, std::enable_if_t<detail::has_commit_predicting<V>::value, int> = 0>
  static double skip_error(const workspace_type& workspace) {
    return tensor_traits<V>::skip_error(workspace);
  }
  /// commit_predicting extends this commit: a Derived that declares its own gets that one called.
  static constexpr auto predicting_commit() noexcept { return &view_traits::commit; }
  template <class V = View, std::enable_if_t<detail::has_scoped_statistics<V>::value, int> = 0>
  static void reduce_abs_diff_scoped(workspace_type& workspace, statistic_slot slot, const T& x,
                                     const buffer_type& ref, const statistics_scope& scope) {
    tensor_traits<V>::reduce_abs_diff_scoped(workspace, slot, as_view(x), ref, scope);
  }
  template <class V = View, std::enable_if_t<detail::has_scoped_statistics<V>::value, int> = 0>
  static void commit_scoped(workspace_type& workspace, const T& x, const T& v, buffer_type& x_last,
                            buffer_type& delta, buffer_type& v_last, bool measure_change,
                            const statistics_scope& scope) {
    tensor_traits<V>::commit_scoped(workspace, as_view(x), as_view(v), x_last, delta, v_last, measure_change, scope);
  }
};

}  // namespace easycache
