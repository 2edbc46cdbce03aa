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
#error "easycache/cuda.cuh is for CUDA translation units (.cu files compiled by nvcc); C++ code uses easycache.hpp"
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

#include "error.hpp"
#include "tensor_traits.hpp"
#include "detail/device_passes.hpp"
#include "detail/format.hpp"

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

namespace detail {

namespace device {
template <>
struct element<__half> {
  static EASYCACHE_HOST_DEVICE float load(__half v) { return __half2float(v); }
  static EASYCACHE_HOST_DEVICE __half store(float v) { return __float2half_rn(v); }
};
template <>
struct element<__nv_bfloat16> {
  static EASYCACHE_HOST_DEVICE float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static EASYCACHE_HOST_DEVICE __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};
}  // namespace device

namespace cuda {

inline void check_call(cudaError_t code, const char* call) {
  if (code != cudaSuccess)
    throw cuda_error(code, detail::message(call, " failed: ", cudaGetErrorName(code), ": ", cudaGetErrorString(code)));
}

struct device_free {
  void operator()(void* p) const noexcept { cudaFree(p); }
};
struct host_free {
  void operator()(void* p) const noexcept { cudaFreeHost(p); }
};
using device_memory = std::unique_ptr<void, device_free>;
using pinned_memory = std::unique_ptr<void, host_free>;

// The device that owns a pointer (the current device for an unregistered one).
inline int device_of(const void* p) {
  cudaPointerAttributes attributes{};
  check_call(cudaPointerGetAttributes(&attributes, p), "cudaPointerGetAttributes");
  return attributes.device;
}

// Makes `device` current for a scope (a no-op when it already is).
class device_scope {
 public:
  explicit device_scope(int device) {
    check_call(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) check_call(cudaSetDevice(device), "cudaSetDevice");
    changed_ = device != previous_;
  }
  ~device_scope() {
    if (changed_) cudaSetDevice(previous_);
  }
  device_scope(const device_scope&) = delete;
  device_scope& operator=(const device_scope&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

inline device_memory allocate_device(std::size_t bytes, int device) {
  device_scope scope(device);
  void* p = nullptr;
  check_call(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
  return device_memory(p);
}

/// Controller-owned device state for one tensor (x_last, x_prev, a delta).
struct buffer {
  device_memory memory;
  std::size_t size = 0;
  cuda_dtype dtype = cuda_dtype::float32;
  int device = -1;
};

/// The sums of a controller: on the device until read().
struct workspace {
  device_memory memory;  // sums[4], then partials[3][max_reduction_blocks] (double), then a block counter
  pinned_memory host;    // sums[4] on the host
  int device = -1;
  cudaStream_t stream = nullptr;  // the stream of the last pass that wrote sums

  double* sums() const noexcept { return static_cast<double*>(memory.get()); }
  double* partials() const noexcept { return sums() + statistic_slot_count; }
  unsigned* counter() const noexcept {
    return reinterpret_cast<unsigned*>(partials() + 3 * device::max_reduction_blocks);
  }
  static constexpr std::size_t bytes =
      (statistic_slot_count + 3 * device::max_reduction_blocks) * sizeof(double) + sizeof(unsigned);
};

// Sums a block's values of `Count` components (in double, fixed order); thread 0 gets the totals.
template <unsigned Count>
__device__ void block_sum(double (&values)[Count]) {
  __shared__ double warp_sums[Count][device::block_threads / 32];
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (unsigned c = 0; c < Count; ++c) {
    for (unsigned offset = 16; offset > 0; offset /= 2) values[c] += __shfl_down_sync(0xffffffffu, values[c], offset);
    if (lane == 0) warp_sums[c][warp] = values[c];
  }
  __syncthreads();
  if (warp == 0) {
    for (unsigned c = 0; c < Count; ++c) {
      values[c] = lane < device::block_threads / 32 ? warp_sums[c][lane] : 0.0;
      for (unsigned offset = 16; offset > 0; offset /= 2)
        values[c] += __shfl_down_sync(0xffffffffu, values[c], offset);
    }
  }
  __syncthreads();
}

// Writes this block's partial sums; the last block to finish adds all partials
// in block order and writes sums[slots[c]], then resets the counter.
template <unsigned Count>
__device__ void finish_reduction(double (&values)[Count], double* partials, unsigned* counter, double* sums,
                                 const unsigned (&slots)[Count]) {
  __shared__ bool last;
  block_sum(values);
  if (threadIdx.x == 0) {
    for (unsigned c = 0; c < Count; ++c) partials[c * device::max_reduction_blocks + blockIdx.x] = values[c];
    __threadfence();
    last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  // Acquire side of the other blocks' fence-then-count: their partials are
  // read only after this block has seen the count that says they are written.
  __threadfence();
  for (unsigned c = 0; c < Count; ++c) {
    values[c] = 0.0;
    for (unsigned b = threadIdx.x; b < gridDim.x; b += blockDim.x)
      values[c] += __ldcg(partials + c * device::max_reduction_blocks + b);
  }
  block_sum(values);
  if (threadIdx.x == 0) {
    for (unsigned c = 0; c < Count; ++c) sums[slots[c]] = values[c];
    *counter = 0;
  }
}

template <class S>
__global__ void __launch_bounds__(device::block_threads)
    reduce_abs_diff_kernel(const S* a, const S* b, device::sampling_map map, std::size_t count, double* partials,
                           unsigned* counter, double* sums, unsigned slot) {
  const std::size_t thread = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::size_t threads = std::size_t(gridDim.x) * blockDim.x;
  double values[1] = {device::thread_abs_diff(a, b, map, count, thread, threads)};
  const unsigned slots[1] = {slot};
  finish_reduction(values, partials, counter, sums, slots);
}

template <class S>
__global__ void __launch_bounds__(device::block_threads)
    commit_kernel(const S* x, const S* v, S* x_last, S* delta, std::size_t n, device::sampling_map map,
                  bool measure_change, double* partials, unsigned* counter, double* sums) {
  const std::size_t thread = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::size_t threads = std::size_t(gridDim.x) * blockDim.x;
  const device::commit_sums s = device::thread_commit(x, v, x_last, delta, n, map, measure_change, thread, threads);
  double values[3] = {s.output_change, s.input_change, s.output_norm};
  const unsigned slots[3] = {static_cast<unsigned>(statistic_slot::output_change),
                             static_cast<unsigned>(statistic_slot::input_change_since_compute),
                             static_cast<unsigned>(statistic_slot::output_norm)};
  finish_reduction(values, partials, counter, sums, slots);
}

template <class S>
__global__ void __launch_bounds__(device::block_threads)
    apply_kernel(const S* x, const S* delta, S* out, S* copy, std::size_t n) {
  device::thread_apply(x, delta, out, copy, n, std::size_t(blockIdx.x) * blockDim.x + threadIdx.x,
                       std::size_t(gridDim.x) * blockDim.x);
}

template <class S>
__global__ void __launch_bounds__(device::block_threads)
    apply_extrapolated_kernel(const S* x, const S* delta, const S* delta_prev, float weight, S* out, S* copy,
                              std::size_t n) {
  device::thread_apply_extrapolated(x, delta, delta_prev, weight, out, copy, n,
                                    std::size_t(blockIdx.x) * blockDim.x + threadIdx.x,
                                    std::size_t(gridDim.x) * blockDim.x);
}

template <class S>
__global__ void __launch_bounds__(device::block_threads)
    store_delta_kernel(const S* x, const S* v, S* delta, std::size_t n) {
  device::thread_store_delta(x, v, delta, n, std::size_t(blockIdx.x) * blockDim.x + threadIdx.x,
                             std::size_t(gridDim.x) * blockDim.x);
}

// Calls f(S*) with the element type of `dtype`.
template <class F>
void with_element_type(cuda_dtype dtype, F&& f) {
  switch (dtype) {
    case cuda_dtype::float32: f(static_cast<float*>(nullptr)); return;
    case cuda_dtype::float16: f(static_cast<__half*>(nullptr)); return;
    case cuda_dtype::bfloat16: f(static_cast<__nv_bfloat16*>(nullptr)); return;
  }
}

inline void check_launch(const char* kernel) { check_call(cudaGetLastError(), kernel); }

}  // namespace cuda
}  // namespace detail

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
