// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// CUDA backend: views of CUDA device memory (pointer, element count, float32 /
// float16 / bfloat16, the caller's stream), with fused kernels. For CUDA
// translation units only (.cu files compiled by nvcc); the core headers never
// include it.
//
// Per step, on the caller's stream (the stream of the step's input x):
//   decision step:  one reduction kernel  Σ|x − x_prev| over the sampled elements
//                   read(): one 32-byte device→host copy of the four sums into
//                   pinned memory, then cudaStreamSynchronize: the decision needs
//                   them on the host, so this wait cannot be avoided. It is the
//                   only synchronization of a step, and forced steps have none.
//   skipped step:   one kernel  out = x + delta  (and x_prev = x, same pass);
//                   linear predictor: out = x + delta + w·(delta − delta_prev)
//   computed step:  the denoiser, then one kernel that sums |v − v_last|,
//                   |x − x_last|, |v| and writes x_last = x, delta = v − x
//                   (other branches: one kernel  delta = v − x); linear
//                   predictor: one device-to-device copy delta_prev = delta first
// Sums: float per thread, double across threads and blocks; blocks add their
// partials in a fixed order (the last block to finish sums them), so the
// statistics do not depend on timing. Device memory (state buffers, sums and
// partials) and the pinned host mirror are allocated when a generation starts
// with a new size, dtype or device, never on other steps.
#pragma once

#if !defined(__CUDACC__)
#error "easycache/backends/cuda.cuh is for CUDA translation units (.cu files compiled by nvcc); C++ code uses easycache.hpp"
#endif

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../error.hpp"
#include "../tensor_traits.hpp"
#include "../detail/device_passes.hpp"
#include "../detail/format.hpp"

namespace easycache {

/// Element types of CUDA tensors.
enum class cuda_dtype : unsigned char { float32, float16, bfloat16 };

/// "float32", "float16" or "bfloat16".
inline const char* to_string(cuda_dtype t) noexcept {
  switch (t) {
    case cuda_dtype::float32: return "float32";
    case cuda_dtype::float16: return "float16";
    case cuda_dtype::bfloat16: return "bfloat16";
  }
  return "unknown";
}

/// Bytes of one element.
inline std::size_t element_size(cuda_dtype t) noexcept { return t == cuda_dtype::float32 ? 4 : 2; }

/// A failed CUDA runtime call (out of memory, a launch failure, no device): not
/// bad input, so not an easycache::error.
class cuda_error : public std::runtime_error {
 public:
  cuda_error(cudaError_t code, const std::string& what) : std::runtime_error(what), code_(code) {}
  /// The CUDA runtime's error code.
  cudaError_t code() const noexcept { return code_; }

 private:
  cudaError_t code_;
};

/// A view of `size` contiguous elements of CUDA device (or managed) memory.
///
/// All work easycache does on a step is queued on the stream of the step's
/// input; keep one stream per generation, or order the streams yourself.
/// `storage` is set only when easycache allocated the memory (an output that
/// the controller sized, see resize_output); a view never owns anything.
struct cuda_tensor {
  void* data = nullptr;
  std::size_t size = 0;
  cuda_dtype dtype = cuda_dtype::float32;
  cudaStream_t stream = nullptr;
  std::shared_ptr<void> storage;
};

/// Views of a caller's device buffer.
inline cuda_tensor cuda_view(float* data, std::size_t size, cudaStream_t stream = nullptr) {
  return {data, size, cuda_dtype::float32, stream, nullptr};
}
inline cuda_tensor cuda_view(__half* data, std::size_t size, cudaStream_t stream = nullptr) {
  return {data, size, cuda_dtype::float16, stream, nullptr};
}
inline cuda_tensor cuda_view(__nv_bfloat16* data, std::size_t size, cudaStream_t stream = nullptr) {
  return {data, size, cuda_dtype::bfloat16, stream, nullptr};
}

}  // namespace easycache

#define EASYCACHE_CUDA_PUBLIC_TYPES
#include "../detail/cuda_kernels.cuh"

namespace easycache {

/// CUDA device tensors: cuda_tensor views (float32, float16, bfloat16).
template <>
struct tensor_traits<cuda_tensor> {
  using buffer_type = detail::cuda::buffer;
  using workspace_type = detail::cuda::workspace;

  static std::size_t size(const cuda_tensor& t) noexcept { return t.size; }

  /// Refuses a null pointer with elements, an unknown dtype, and memory that is
  /// not device or managed memory (a host pointer passed by mistake).
  static void check(const cuda_tensor& t) {
    if (t.dtype != cuda_dtype::float32 && t.dtype != cuda_dtype::float16 && t.dtype != cuda_dtype::bfloat16)
      throw error(detail::message("cuda_tensor has an unknown dtype (", static_cast<int>(t.dtype), ")"));
    if (t.size == 0) return;
    if (t.data == nullptr) throw error(detail::message("cuda_tensor has a null data pointer and ", t.size, " elements"));
    cudaPointerAttributes attributes{};
    detail::cuda::check_call(cudaPointerGetAttributes(&attributes, t.data), "cudaPointerGetAttributes");
    if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged)
      throw error(detail::message("cuda_tensor data ", t.data, " is not CUDA device memory (memory type ",
                                  static_cast<int>(attributes.type), ")"));
  }

  /// Refuses a tensor whose dtype or device differs from the generation's buffers.
  static void check_compatible(const cuda_tensor& t, const buffer_type& state) {
    if (state.device < 0) return;
    if (t.dtype != state.dtype)
      throw error(detail::message("cuda_tensor changed within a generation: dtype ", to_string(t.dtype),
                                  ", the generation started with ", to_string(state.dtype),
                                  " (start a new generation at step 0 to change it)"));
    if (t.size == 0) return;
    const int device = detail::cuda::device_of(t.data);
    if (device != state.device)
      throw error(detail::message("cuda_tensor changed within a generation: on device ", device,
                                  ", the generation started on device ", state.device,
                                  " (start a new generation at step 0 to change it)"));
  }

  static void allocate(buffer_type& buffer, const cuda_tensor& like) {
    const int device = like.size ? detail::cuda::device_of(like.data) : current_device();
    if (buffer.memory && buffer.size == like.size && buffer.dtype == like.dtype && buffer.device == device) return;
    buffer.memory.reset();
    buffer.device = -1;
    buffer.memory = detail::cuda::allocate_device(like.size * element_size(like.dtype), device);
    buffer.size = like.size;
    buffer.dtype = like.dtype;
    buffer.device = device;
  }

  static void prepare(workspace_type& ws, const cuda_tensor& like) {
    const int device = like.size ? detail::cuda::device_of(like.data) : current_device();
    if (!ws.memory || ws.device != device) {
      ws.memory.reset();
      ws.device = -1;
      ws.memory = detail::cuda::allocate_device(workspace_type::bytes, device);
      detail::cuda::device_scope scope(device);
      // The block counter starts at 0; each reduction leaves it at 0. Cleared on
      // the input's stream, which the first reduction runs on: cudaMemset would
      // run on the legacy default stream, which a non-blocking stream (or
      // per-thread default streams) does not wait for.
      detail::cuda::check_call(cudaMemsetAsync(ws.memory.get(), 0, workspace_type::bytes, like.stream),
                               "cudaMemsetAsync");
      ws.device = device;
    }
    if (!ws.host) {
      void* p = nullptr;
      detail::cuda::check_call(cudaMallocHost(&p, statistic_slot_count * sizeof(double)), "cudaMallocHost");
      ws.host.reset(p);
    }
  }

  static void reduce_abs_diff(workspace_type& ws, statistic_slot slot, const cuda_tensor& x, const buffer_type& ref,
                              const statistics_sampling& sampling) {
    const auto map = detail::device::sampling_map::of(sampling);
    const std::size_t count = map.count(x.size);
    detail::cuda::device_scope scope(ws.device);
    detail::cuda::with_element_type(x.dtype, [&](auto* type) {
      using S = std::remove_pointer_t<decltype(type)>;
      detail::cuda::reduce_abs_diff_kernel<S>
          <<<detail::device::grid_blocks(count, detail::device::max_reduction_blocks), detail::device::block_threads,
             0, x.stream>>>(static_cast<const S*>(x.data), static_cast<const S*>(ref.memory.get()), map, count,
                            ws.partials(), ws.counter(), ws.sums(), static_cast<unsigned>(slot));
    });
    detail::cuda::check_launch("easycache reduce_abs_diff kernel");
    ws.stream = x.stream;
  }

  static void apply_delta(const cuda_tensor& x, const buffer_type& delta, cuda_tensor& out, buffer_type* input_copy) {
    detail::cuda::device_scope scope(delta.device);
    detail::cuda::with_element_type(x.dtype, [&](auto* type) {
      using S = std::remove_pointer_t<decltype(type)>;
      detail::cuda::apply_kernel<S>
          <<<detail::device::grid_blocks(x.size, detail::device::max_elementwise_blocks),
             detail::device::block_threads, 0, x.stream>>>(
              static_cast<const S*>(x.data), static_cast<const S*>(delta.memory.get()), static_cast<S*>(out.data),
              input_copy ? static_cast<S*>(input_copy->memory.get()) : nullptr, x.size);
    });
    detail::cuda::check_launch("easycache apply_delta kernel");
  }

  /// out = x + delta + weight·(delta − delta_prev), and *input_copy = x, in one
  /// kernel on x's stream (float arithmetic for every dtype).
  static void apply_delta_extrapolated(const cuda_tensor& x, const buffer_type& delta, const buffer_type& delta_prev,
                                       double weight, cuda_tensor& out, buffer_type* input_copy) {
    detail::cuda::device_scope scope(delta.device);
    detail::cuda::with_element_type(x.dtype, [&](auto* type) {
      using S = std::remove_pointer_t<decltype(type)>;
      detail::cuda::apply_extrapolated_kernel<S>
          <<<detail::device::grid_blocks(x.size, detail::device::max_elementwise_blocks),
             detail::device::block_threads, 0, x.stream>>>(
              static_cast<const S*>(x.data), static_cast<const S*>(delta.memory.get()),
              static_cast<const S*>(delta_prev.memory.get()), static_cast<float>(weight), static_cast<S*>(out.data),
              input_copy ? static_cast<S*>(input_copy->memory.get()) : nullptr, x.size);
    });
    detail::cuda::check_launch("easycache apply_delta_extrapolated kernel");
  }

  /// to = x: one device-to-device copy on x's stream (skip_predictor::last_output).
  static void save_input(const cuda_tensor& x, buffer_type& to) {
    detail::cuda::device_scope scope(to.device);
    detail::cuda::check_call(cudaMemcpyAsync(to.memory.get(), x.data, x.size * element_size(x.dtype),
                                             cudaMemcpyDeviceToDevice, x.stream),
                             "cudaMemcpyAsync");
  }

  /// out = x_saved + delta (the saved output), and *input_copy = x: one kernel
  /// (apply_delta's, on the saved input) and a copy, on x's stream.
  static void apply_saved_output(const cuda_tensor& x, const buffer_type& x_saved, const buffer_type& delta,
                                 cuda_tensor& out, buffer_type* input_copy) {
    if (input_copy) save_input(x, *input_copy);
    detail::cuda::device_scope scope(delta.device);
    detail::cuda::with_element_type(x.dtype, [&](auto* type) {
      using S = std::remove_pointer_t<decltype(type)>;
      detail::cuda::apply_kernel<S>
          <<<detail::device::grid_blocks(x.size, detail::device::max_elementwise_blocks),
             detail::device::block_threads, 0, x.stream>>>(
              static_cast<const S*>(x_saved.memory.get()), static_cast<const S*>(delta.memory.get()),
              static_cast<S*>(out.data), nullptr, x.size);
    });
    detail::cuda::check_launch("easycache apply_saved_output kernel");
  }

  /// to = from: one device-to-device copy on the stream of the step's input x.
  static void copy(const cuda_tensor& x, const buffer_type& from, buffer_type& to) {
    detail::cuda::device_scope scope(from.device);
    detail::cuda::check_call(cudaMemcpyAsync(to.memory.get(), from.memory.get(), from.size * element_size(from.dtype),
                                             cudaMemcpyDeviceToDevice, x.stream),
                             "cudaMemcpyAsync");
  }

  static void commit(workspace_type& ws, const cuda_tensor& x, const cuda_tensor& v, buffer_type& x_last,
                     buffer_type& delta, bool measure_change, const statistics_sampling& sampling) {
    detail::cuda::device_scope scope(ws.device);
    detail::cuda::with_element_type(x.dtype, [&](auto* type) {
      using S = std::remove_pointer_t<decltype(type)>;
      detail::cuda::commit_kernel<S>
          <<<detail::device::grid_blocks(x.size, detail::device::max_reduction_blocks), detail::device::block_threads,
             0, x.stream>>>(static_cast<const S*>(x.data), static_cast<const S*>(v.data),
                            static_cast<S*>(x_last.memory.get()), static_cast<S*>(delta.memory.get()), x.size,
                            detail::device::sampling_map::of(sampling), measure_change, ws.partials(), ws.counter(),
                            ws.sums());
    });
    detail::cuda::check_launch("easycache commit kernel");
    ws.stream = x.stream;
  }

  static void store_delta(const cuda_tensor& x, const cuda_tensor& v, buffer_type& delta) {
    detail::cuda::device_scope scope(delta.device);
    detail::cuda::with_element_type(x.dtype, [&](auto* type) {
      using S = std::remove_pointer_t<decltype(type)>;
      detail::cuda::store_delta_kernel<S>
          <<<detail::device::grid_blocks(x.size, detail::device::max_elementwise_blocks),
             detail::device::block_threads, 0, x.stream>>>(static_cast<const S*>(x.data),
                                                           static_cast<const S*>(v.data),
                                                           static_cast<S*>(delta.memory.get()), x.size);
    });
    detail::cuda::check_launch("easycache store_delta kernel");
  }

  /// The one device→host transfer of a decision step: the four sums (32 bytes)
  /// into pinned memory on the stream that wrote them, then a wait for that
  /// stream, since the decision needs the values on the host.
  static void read(workspace_type& ws, double (&sums)[statistic_slot_count]) {
    detail::cuda::device_scope scope(ws.device);
    detail::cuda::check_call(cudaMemcpyAsync(ws.host.get(), ws.sums(), statistic_slot_count * sizeof(double),
                                             cudaMemcpyDeviceToHost, ws.stream),
                             "cudaMemcpyAsync");
    detail::cuda::check_call(cudaStreamSynchronize(ws.stream), "cudaStreamSynchronize");
    const double* host = static_cast<const double*>(ws.host.get());
    for (std::size_t i = 0; i < statistic_slot_count; ++i) sums[i] = host[i];
  }

  /// An output without memory (data null) gets device memory of the input's
  /// size and dtype, owned by the tensor (`storage`), once: keep the tensor
  /// across steps. An output that easycache allocated is re-sized when the input
  /// changes; a view of the caller's memory of another size or dtype is refused.
  static void resize_output(cuda_tensor& out, const cuda_tensor& like) {
    if (out.data != nullptr && out.size == like.size && out.dtype == like.dtype) return;
    if (out.data != nullptr && !out.storage)
      throw error(detail::message("output cuda_tensor has ", out.size, " elements of ", to_string(out.dtype),
                                  ", the input has ", like.size, " elements of ", to_string(like.dtype)));
    const int device = like.size ? detail::cuda::device_of(like.data) : current_device();
    std::shared_ptr<void> storage(detail::cuda::allocate_device(like.size * element_size(like.dtype), device).release(),
                                  detail::cuda::device_free{});
    out.data = storage.get();
    out.size = like.size;
    out.dtype = like.dtype;
    if (!out.stream) out.stream = like.stream;
    out.storage = std::move(storage);
  }

  /// The controller refuses an output whose memory overlaps the input's.
  static bool same_storage(const cuda_tensor& a, const cuda_tensor& b) noexcept {
    if (!a.data || !b.data || a.size == 0 || b.size == 0) return false;
    const auto a0 = reinterpret_cast<std::uintptr_t>(a.data), b0 = reinterpret_cast<std::uintptr_t>(b.data);
    return a0 < b0 + b.size * element_size(b.dtype) && b0 < a0 + a.size * element_size(a.dtype);
  }

 private:
  static int current_device() {
    int device = 0;
    detail::cuda::check_call(cudaGetDevice(&device), "cudaGetDevice");
    return device;
  }
};

}  // namespace easycache
