// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// The CUDA backend's kernels and device memory: included by easycache/backends/cuda.cuh
// after its public types (cuda_dtype, cuda_error, cuda_tensor), which they use;
// include that header, not this one. The per-thread work of each kernel is in
// device_passes.hpp (__host__ __device__, tested on the host).
#pragma once

#if !defined(EASYCACHE_CUDA_PUBLIC_TYPES)
#error "easycache/detail/cuda_kernels.cuh is part of easycache/backends/cuda.cuh: include that"
#endif

namespace easycache {

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

}  // namespace easycache
