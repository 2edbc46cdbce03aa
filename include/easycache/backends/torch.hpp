// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// LibTorch backend: at::Tensor (and so torch::Tensor) on the CPU or a CUDA
// device, float32, float64, float16 or bfloat16, any shape, contiguous.
//
// Two paths. CPU tensors go through the same fused host passes as Eigen and
// host buffers (detail/host_kernels.hpp: SIMD, one pass per step over each
// tensor, sums in double, no ATen operation and no allocation after step 0;
// float16 and bfloat16 converted to float inside each pass, the cached
// vectors in the tensor's dtype, detail/mixed_kernels.hpp). CUDA tensors go
// through ATen, as follows.
//
// Every operation is an ATen `*_out` or in-place operation into tensors that the
// controller allocates once per generation (when the element count, dtype or
// device changes), on the tensor's device and, for CUDA, on the current CUDA
// stream: nothing is copied to the host but the four statistic sums in read(),
// the one device→host transfer of a decision step. Sums are accumulated in
// float32 (float64 for float64 tensors) by ATen's sum. Autograd never sees these
// operations (they run in InferenceMode; the buffers and any output easycache
// allocates are normal tensors).
//
// What allocates after step 0 on the ATen path: easycache itself, no tensor storage; ATen, its
// small host objects per operation (the views of the sampled elements,
// TensorIterator state), and on the CPU a per-thread partial-sum buffer in large
// reductions and, for float16 and bfloat16, a float32 copy of the values being
// summed (on CUDA the sum reads them directly).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Optional.h>

#include "../error.hpp"
#include "../tensor_traits.hpp"
#include "../half.hpp"
#include "../detail/format.hpp"
#include "../detail/host_kernels.hpp"
#include "../detail/mixed_kernels.hpp"

namespace easycache {

namespace detail::torch {

/// Controller-owned state for one tensor: flat, contiguous, with the dtype and
/// device of the generation's input.
struct buffer {
  at::Tensor values;
  c10::optional<c10::Stream> stream;  // CUDA: the stream current when `values` was allocated
};

/// Reduction scratch of one controller.
struct workspace {
  bool fused = false;  // the generation's tensors take the fused host passes (host_sums)
  double host_sums[statistic_slot_count] = {};
  double skip_error = std::numeric_limits<double>::quiet_NaN();  // Σ|v − p| of the last commit_predicting (CPU)
  at::Tensor sums;     // statistic_slot_count sums on the input's device (float32, or float64)
  at::Tensor host;     // their host mirror (pinned for a CUDA device)
  at::Tensor scratch;  // one element per input element: |a − b| before the sum
  c10::optional<c10::Stream> sums_stream, scratch_stream;  // as buffer::stream
};

// The stream LibTorch queues work on for a CUDA tensor (its device's current
// stream); none for a CPU tensor.
inline c10::optional<c10::Stream> current_stream(const at::Tensor& t) {
  if (!t.is_cuda()) return c10::nullopt;
  return c10::impl::getDeviceGuardImpl(t.device().type())->getStream(t.device());
}

// LibTorch's CUDA caching allocator lets a freed block be reused as soon as the
// work on the stream it was allocated on is done. When the current stream has
// changed since (a controller used on several streams), the work queued there
// must be recorded, or a new generation or a destroyed controller could hand
// the memory to another tensor while that work still reads or writes it.
inline void record_use(const at::Tensor& values, const c10::optional<c10::Stream>& allocated_on) {
  if (!allocated_on) return;
  const c10::optional<c10::Stream> now = current_stream(values);
  if (now && *now != *allocated_on) values.record_stream(*now);
}
inline void record_use(const buffer& b) { record_use(b.values, b.stream); }
inline void record_use(const workspace& ws) {
  record_use(ws.sums, ws.sums_stream);
  record_use(ws.scratch, ws.scratch_stream);
}

// Runs an operation outside of autograd. Buffers that easycache allocates are
// made outside of it (normal tensors) so that callers may update an output
// easycache allocated in place, with or without InferenceMode of their own.
struct compute_guard {
  c10::InferenceMode inference{true};
};
struct allocate_guard {
  c10::InferenceMode inference{false};
  at::NoGradGuard no_grad;
};

/// CPU tensors take the fused host passes (the tensors
/// are contiguous: check() refuses the others). Defining
/// EASYCACHE_TORCH_ATEN_ONLY before including this header sends them through
/// ATen too (to compare the two paths: bench/overhead_torch.cpp).
inline bool fused([[maybe_unused]] const at::Tensor& t) noexcept {
#if defined(EASYCACHE_TORCH_ATEN_ONLY)
  return false;
#else
  return t.is_cpu() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble ||
                        t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16);
#endif
}

// Calls f(S{}) with the element type of a fused tensor (at::Half and
// at::BFloat16 are layout-compatible with easycache's float16 and bfloat16).
template <class F>
void with_host_scalar(const at::Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: f(float{}); return;
    case at::kHalf: f(float16{}); return;
    case at::kBFloat16: f(bfloat16{}); return;
    default: f(double{}); return;
  }
}

template <class S>
S* elements(const at::Tensor& t) noexcept {
  return static_cast<S*>(t.data_ptr());
}
template <class S>
S* elements_or_null(buffer* b) noexcept {
  return b ? elements<S>(b->values) : nullptr;
}
inline std::size_t count(const at::Tensor& t) noexcept { return static_cast<std::size_t>(t.numel()); }

inline bool supported_dtype(at::ScalarType t) noexcept {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// The dtype of the sums: float32 accumulation, or float64 for float64 tensors.
inline at::ScalarType sum_dtype(at::ScalarType t) noexcept { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline at::Tensor flat(const at::Tensor& t) { return t.view({t.numel()}); }

// The elements the statistics visit (see statistics_sampling): a strided view.
// A stride beyond the extent it steps over visits what the extent would; it is
// clamped so that it stays a positive int64 (strides go up to SIZE_MAX).
inline at::Tensor sampled(const at::Tensor& flat_tensor, const statistics_sampling& s) {
  const std::int64_t n = flat_tensor.numel();
  if (s.stride <= 1 || n == 0) return flat_tensor;
  const std::size_t extent = s.height == 0 ? static_cast<std::size_t>(n) : std::max(s.height, s.width);
  const auto step = static_cast<std::int64_t>(std::min(s.stride, extent));
  if (s.height == 0) return flat_tensor.slice(0, 0, n, step);
  const auto height = static_cast<std::int64_t>(s.height), width = static_cast<std::int64_t>(s.width);
  return flat_tensor.view({n / (height * width), height, width}).slice(1, 0, height, step).slice(2, 0, width, step);
}

// The first `like.numel()` scratch elements, shaped like `like`.
inline at::Tensor scratch_like(workspace& ws, const at::Tensor& like) {
  return ws.scratch.narrow(0, 0, like.numel()).view(like.sizes());
}

// After the four statistic slots: Σv over every element of the last commit
// with subsampled statistics (0 otherwise), to see a non-finite output there.
inline constexpr std::int64_t finite_check_slot = static_cast<std::int64_t>(statistic_slot_count);

inline at::Tensor slot_of(workspace& ws, statistic_slot slot) {
  return ws.sums.select(0, static_cast<std::int64_t>(slot));
}

// slot = Σ|scratch| over the first `count` scratch elements; `absolute` says
// that they are already absolute values (else they are overwritten with them).
inline void sum_abs_into(workspace& ws, statistic_slot slot, std::int64_t count, bool absolute = false) {
  at::Tensor values = ws.scratch.narrow(0, 0, count);
  if (!absolute) at::abs_(values);
  at::Tensor out = slot_of(ws, slot);
  const std::int64_t all[] = {0};
  at::sum_out(out, values, at::IntArrayRef(all), false, ws.sums.scalar_type());
}

inline bool same_kind(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.device() == b.device();
}

}  // namespace detail::torch

/// at::Tensor: CPU or CUDA; float32, float64, float16, bfloat16; contiguous.
template <>
struct tensor_traits<at::Tensor> {
  using buffer_type = detail::torch::buffer;
  using workspace_type = detail::torch::workspace;

  static std::size_t size(const at::Tensor& t) { return static_cast<std::size_t>(t.numel()); }

  /// Refuses undefined, non-contiguous, sparse tensors, other dtypes and devices.
  static void check(const at::Tensor& t) {
    if (!t.defined()) throw error(detail::message("at::Tensor is undefined"));
    if (t.layout() != at::kStrided)
      throw error(detail::message("at::Tensor has layout ", t.layout(), "; easycache needs a dense (strided) tensor"));
    if (!detail::torch::supported_dtype(t.scalar_type()))
      throw error(detail::message("at::Tensor has dtype ", t.scalar_type(),
                                  "; easycache supports Float, Double, Half and BFloat16"));
    if (!t.is_cpu() && !t.is_cuda())
      throw error(detail::message("at::Tensor is on device ", t.device(), "; easycache supports cpu and cuda"));
    if (!t.is_contiguous())
      throw error(detail::message("at::Tensor is not contiguous (sizes ", t.sizes(), ", strides ", t.strides(),
                                  "); pass tensor.contiguous()"));
  }

  /// Refuses a tensor whose dtype or device differs from the generation's.
  static void check_compatible(const at::Tensor& t, const buffer_type& state) {
    if (!state.values.defined() || detail::torch::same_kind(t, state.values)) return;
    throw error(detail::message("at::Tensor changed within a generation: dtype ", t.scalar_type(), " on ", t.device(),
                                ", the generation started with dtype ", state.values.scalar_type(), " on ",
                                state.values.device(), " (start a new generation at step 0 to change them)"));
  }

  static void allocate(buffer_type& buffer, const at::Tensor& like) {
    const at::Tensor& b = buffer.values;
    if (b.defined() && b.numel() == like.numel() && detail::torch::same_kind(b, like)) return;
    detail::torch::allocate_guard guard;
    buffer.values = at::empty({like.numel()}, like.options());
    buffer.stream = detail::torch::current_stream(like);
  }

  static void prepare(workspace_type& ws, const at::Tensor& like) {
    ws.fused = detail::torch::fused(like);
    if (ws.fused) {
      for (double& sum : ws.host_sums) sum = 0;
      return;
    }
    detail::torch::allocate_guard guard;
    // The four slots, then Σv over every element (finite_check_slot).
    const auto count = static_cast<std::int64_t>(statistic_slot_count + 1);
    const at::ScalarType dtype = detail::torch::sum_dtype(like.scalar_type());
    if (!ws.sums.defined() || ws.sums.device() != like.device() || ws.sums.scalar_type() != dtype) {
      ws.sums = at::zeros({count}, at::TensorOptions().dtype(dtype).device(like.device()));
      ws.sums_stream = detail::torch::current_stream(like);
      // Pinned, so that read() copies with one DMA transfer instead of staging.
      ws.host = at::empty({count}, at::TensorOptions().dtype(dtype).pinned_memory(like.is_cuda()));
    }
    const at::Tensor& s = ws.scratch;
    if (!s.defined() || s.numel() != like.numel() || !detail::torch::same_kind(s, like)) {
      ws.scratch = at::empty({like.numel()}, like.options());
      ws.scratch_stream = detail::torch::current_stream(like);
    }
  }

  static void reduce_abs_diff(workspace_type& ws, statistic_slot slot, const at::Tensor& x, const buffer_type& ref,
                              const statistics_sampling& sampling) {
    using namespace detail::torch;
    if (fused(x)) {
      with_host_scalar(x, [&](auto s) {
        using S = decltype(s);
        ws.host_sums[static_cast<std::size_t>(slot)] =
            detail::host::mixed::sum_abs_diff(elements<S>(x), elements<S>(ref.values), count(x), sampling);
      });
      return;
    }
    detail::torch::compute_guard guard;
    detail::torch::record_use(ws);
    detail::torch::record_use(ref);
    const at::Tensor xs = detail::torch::sampled(detail::torch::flat(x), sampling);
    const at::Tensor rs = detail::torch::sampled(ref.values, sampling);
    at::Tensor diff = detail::torch::scratch_like(ws, xs);
    at::sub_out(diff, xs, rs);
    detail::torch::sum_abs_into(ws, slot, xs.numel());
  }

  static void apply_delta(const at::Tensor& x, const buffer_type& delta, at::Tensor& out, buffer_type* input_copy) {
    using namespace detail::torch;
    if (fused(x)) {
      with_host_scalar(x, [&](auto s) {
        using S = decltype(s);
        detail::host::mixed::add(elements<S>(x), elements<S>(delta.values), elements<S>(out),
                             elements_or_null<S>(input_copy), count(x));
      });
      return;
    }
    detail::torch::compute_guard guard;
    detail::torch::record_use(delta);
    const at::Tensor xf = detail::torch::flat(x);
    at::Tensor of = detail::torch::flat(out);
    if (input_copy) {
      detail::torch::record_use(*input_copy);
      input_copy->values.copy_(xf);
    }
    at::add_out(of, xf, delta.values);
  }

  /// out = x + (delta + weight·(delta − delta_prev)), and *input_copy = x: three
  /// operations into `out` (each rounds to the tensor's dtype), and a copy.
  static void apply_delta_extrapolated(const at::Tensor& x, const buffer_type& delta, const buffer_type& delta_prev,
                                       double weight, at::Tensor& out, buffer_type* input_copy) {
    using namespace detail::torch;
    if (fused(x)) {
      with_host_scalar(x, [&](auto s) {
        using S = decltype(s);
        detail::host::mixed::add_extrapolated(elements<S>(x), elements<S>(delta.values), elements<S>(delta_prev.values),
                                          weight, elements<S>(out), elements_or_null<S>(input_copy), count(x));
      });
      return;
    }
    detail::torch::compute_guard guard;
    detail::torch::record_use(delta);
    detail::torch::record_use(delta_prev);
    const at::Tensor xf = detail::torch::flat(x);
    at::Tensor of = detail::torch::flat(out);
    if (input_copy) {
      detail::torch::record_use(*input_copy);
      input_copy->values.copy_(xf);
    }
    at::sub_out(of, delta.values, delta_prev.values);
    at::add_out(of, delta.values, of, weight);  // a Scalar alpha allocates no tensor
    at::add_out(of, xf, of);
  }

  /// to = x, on the current stream (skip_predictor::last_output).
  static void save_input(const at::Tensor& x, buffer_type& to) {
    using namespace detail::torch;
    if (fused(x)) {
      with_host_scalar(x, [&](auto s) {
        using S = decltype(s);
        detail::host::copy<S>(elements<S>(x), elements<S>(to.values), count(x));
      });
      return;
    }
    detail::torch::compute_guard guard;
    detail::torch::record_use(to);
    to.values.copy_(detail::torch::flat(x));
  }

  /// out = x_saved + delta (the saved output), and *input_copy = x.
  static void apply_saved_output(const at::Tensor& x, const buffer_type& x_saved, const buffer_type& delta,
                                 at::Tensor& out, buffer_type* input_copy) {
    using namespace detail::torch;
    if (fused(x)) {
      with_host_scalar(x, [&](auto s) {
        using S = decltype(s);
        detail::host::mixed::add_buffers(elements<S>(x_saved.values), elements<S>(delta.values), elements<S>(x),
                                     elements<S>(out), elements_or_null<S>(input_copy), count(x));
      });
      return;
    }
    detail::torch::compute_guard guard;
    detail::torch::record_use(x_saved);
    detail::torch::record_use(delta);
    at::Tensor of = detail::torch::flat(out);
    if (input_copy) {
      detail::torch::record_use(*input_copy);
      input_copy->values.copy_(detail::torch::flat(x));
    }
    at::add_out(of, x_saved.values, delta.values);
  }

  /// to = from, on the current stream.
  static void copy(const at::Tensor&, const buffer_type& from, buffer_type& to) {
    using namespace detail::torch;
    if (fused(from.values)) {
      with_host_scalar(from.values, [&](auto s) {
        using S = decltype(s);
        detail::host::copy<S>(elements<S>(from.values), elements<S>(to.values), count(from.values));
      });
      return;
    }
    detail::torch::compute_guard guard;
    detail::torch::record_use(from);
    detail::torch::record_use(to);
    to.values.copy_(from.values);
  }

  /// commit() that, for CPU tensors (the fused host passes), also
  /// measures what a skip would have returned (step_record::realized_error);
  /// on CUDA the linear predictor's copy, commit(), and no measurement.
  static void commit_predicting(workspace_type& ws, const at::Tensor& x, const at::Tensor& v, buffer_type& x_last,
                                buffer_type& delta, bool measure_change, const statistics_sampling& sampling,
                                const commit_prediction<buffer_type>& prediction) {
    if (detail::torch::fused(x)) {
      detail::torch::with_host_scalar(x, [&](auto s) {
        using S = decltype(s);
        using detail::torch::elements;
        const auto sums = detail::host::mixed::commit(
            elements<S>(x), elements<S>(v), elements<S>(x_last.values), elements<S>(delta.values),
            detail::torch::count(x), measure_change, sampling,
            detail::host::mixed::prediction_for(prediction.delta_prev ? elements<S>(prediction.delta_prev->values)
                                                                      : nullptr,
                                                prediction.extrapolate, prediction.weight));
        ws.host_sums[static_cast<std::size_t>(statistic_slot::output_change)] = sums.output_change;
        ws.host_sums[static_cast<std::size_t>(statistic_slot::input_change_since_compute)] = sums.input_change;
        ws.host_sums[static_cast<std::size_t>(statistic_slot::output_norm)] = sums.output_norm;
        ws.skip_error = measure_change ? sums.skip_error : std::numeric_limits<double>::quiet_NaN();
      });
      return;
    }
    if (prediction.delta_prev) copy(x, delta, *prediction.delta_prev);
    commit(ws, x, v, x_last, delta, measure_change, sampling);
    ws.skip_error = std::numeric_limits<double>::quiet_NaN();
  }

  /// The last commit_predicting's Σ|v − p|: host memory, NaN where it was not measured.
  static double skip_error(const workspace_type& ws) noexcept { return ws.skip_error; }
  static constexpr auto predicting_commit() noexcept { return &tensor_traits::commit; }

  static void commit(workspace_type& ws, const at::Tensor& x, const at::Tensor& v, buffer_type& x_last,
                     buffer_type& delta, bool measure_change, const statistics_sampling& sampling) {
    using detail::torch::sampled;
    if (detail::torch::fused(x)) {
      detail::torch::with_host_scalar(x, [&](auto s) {
        using S = decltype(s);
        using detail::torch::elements;
        const auto sums = detail::host::mixed::commit(elements<S>(x), elements<S>(v), elements<S>(x_last.values),
                                                  elements<S>(delta.values), detail::torch::count(x), measure_change,
                                                  sampling);
        ws.host_sums[static_cast<std::size_t>(statistic_slot::output_change)] = sums.output_change;
        ws.host_sums[static_cast<std::size_t>(statistic_slot::input_change_since_compute)] = sums.input_change;
        ws.host_sums[static_cast<std::size_t>(statistic_slot::output_norm)] = sums.output_norm;
      });
      return;
    }
    detail::torch::compute_guard guard;
    detail::torch::record_use(ws);
    detail::torch::record_use(x_last);
    detail::torch::record_use(delta);
    const at::Tensor xf = detail::torch::flat(x), vf = detail::torch::flat(v);
    const at::Tensor xs = sampled(xf, sampling), vs = sampled(vf, sampling);
    const std::int64_t count = xs.numel();
    at::Tensor work = detail::torch::scratch_like(ws, xs);
    if (measure_change) {
      const at::Tensor ls = sampled(x_last.values, sampling), ds = sampled(delta.values, sampling);
      at::add_out(work, ls, ds);  // v of the last computed step = x_last + delta
      at::sub_out(work, vs, work);
      detail::torch::sum_abs_into(ws, statistic_slot::output_change, count);
      at::sub_out(work, xs, ls);
      detail::torch::sum_abs_into(ws, statistic_slot::input_change_since_compute, count);
    }
    at::abs_out(work, vs);
    detail::torch::sum_abs_into(ws, statistic_slot::output_norm, count, true);
    if (sampling.stride > 1) {
      // The norm misses unsampled elements: Σv over all of them is not finite
      // when one is not, and read() then makes the norm NaN, so that such an
      // output is never cached (one reduction, read with the other sums).
      at::Tensor check = ws.sums.select(0, detail::torch::finite_check_slot);
      const std::int64_t all[] = {0};
      at::sum_out(check, vf, at::IntArrayRef(all), false, ws.sums.scalar_type());
    }
    x_last.values.copy_(xf);
    at::sub_out(delta.values, vf, xf);
  }

  static void store_delta(const at::Tensor& x, const at::Tensor& v, buffer_type& delta) {
    using namespace detail::torch;
    if (fused(x)) {
      with_host_scalar(x, [&](auto s) {
        using S = decltype(s);
        detail::host::mixed::subtract(elements<S>(v), elements<S>(x), elements<S>(delta.values), count(x));
      });
      return;
    }
    detail::torch::compute_guard guard;
    detail::torch::record_use(delta);
    at::sub_out(delta.values, detail::torch::flat(v), detail::torch::flat(x));
  }

  /// The one device→host transfer of a decision step: the 4 sums (and the
  /// finite check), then a wait
  /// for the current stream (the decision needs the values).
  static void read(workspace_type& ws, double (&sums)[statistic_slot_count]) {
    if (ws.fused) {
      for (std::size_t i = 0; i < statistic_slot_count; ++i) sums[i] = ws.host_sums[i];
      return;
    }
    detail::torch::compute_guard guard;
    const at::Tensor* source = &ws.sums;
    if (!ws.sums.is_cpu()) {
      ws.host.copy_(ws.sums);
      source = &ws.host;
    }
    double check = 0;
    if (source->scalar_type() == at::kDouble) {
      const double* values = source->data_ptr<double>();
      for (std::size_t i = 0; i < statistic_slot_count; ++i) sums[i] = values[i];
      check = values[statistic_slot_count];
    } else {
      const float* values = source->data_ptr<float>();
      for (std::size_t i = 0; i < statistic_slot_count; ++i) sums[i] = static_cast<double>(values[i]);
      check = static_cast<double>(values[statistic_slot_count]);
    }
    if (!std::isfinite(check)) sums[static_cast<std::size_t>(statistic_slot::output_norm)] = check;
  }

  /// Sizes an undefined output like the input (allocates); resizes an output of
  /// another shape, as ATen's `*_out` operations do. An output of another dtype or
  /// device, or not contiguous, is refused.
  static void resize_output(at::Tensor& out, const at::Tensor& like) {
    if (!out.defined()) {
      detail::torch::allocate_guard guard;
      out = at::empty(like.sizes(), like.options());
      return;
    }
    if (!detail::torch::same_kind(out, like))
      throw error(detail::message("output at::Tensor has dtype ", out.scalar_type(), " on ", out.device(),
                                  ", the input has dtype ", like.scalar_type(), " on ", like.device()));
    if (out.sizes() != like.sizes()) {
      detail::torch::allocate_guard guard;
      out.resize_(like.sizes());
    }
    if (!out.is_contiguous())
      throw error(detail::message("output at::Tensor is not contiguous (sizes ", out.sizes(), ", strides ",
                                  out.strides(), ")"));
  }

  /// The controller refuses an output whose memory overlaps the input's.
  static bool same_storage(const at::Tensor& a, const at::Tensor& b) {
    if (!a.defined() || !b.defined() || a.numel() == 0 || b.numel() == 0) return false;
    const auto overlap = at::get_overlap_status(a, b);
    return overlap == at::MemOverlapStatus::Full || overlap == at::MemOverlapStatus::Partial;
  }
};

}  // namespace easycache
