// Device helpers shared by the kernels: element conversion, vector access, reductions, and
// the host-side dispatch on the activation dtype (F32 or BF16).
//
// Private to kernels/cuda; included only from .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "common/tensor/dtype.h"

namespace gka::kernels::cuda {

using bf16 = __nv_bfloat16;

template <typename T>
__device__ __forceinline__ float ToFloat(T v);
template <>
__device__ __forceinline__ float ToFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float ToFloat<bf16>(bf16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 FromFloat<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

// Four consecutive elements as floats; p must be 4-element aligned (8 B for bf16, 16 B f32).
__device__ __forceinline__ float4 Load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ float4 Load4(const bf16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ void Store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ void Store4(bf16* p, float4 v) {
  __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y);
  __nv_bfloat162 b = __floats2bfloat162_rn(v.z, v.w);
  uint2 raw;
  raw.x = *reinterpret_cast<uint32_t*>(&a);
  raw.y = *reinterpret_cast<uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = raw;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `shared` holds >= 32 floats. Ends with a
// barrier so `shared` can be reused right after.
__device__ __forceinline__ float BlockSum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? shared[lane] : 0.0f;
  t = WarpSum(t);
  __syncthreads();
  return t;
}

// Programmatic dependent launch (PDL, sm_90). A decode step is ~900 kernels, most of them a few
// microseconds long, so the gap between one kernel's last CTA and the next kernel's first (launch,
// CTA scheduling, prologue) is a measurable share of the step. Every op kernel here (not the
// hand-off's CopyChecksumKernel, on its own stream) is launched with Launch() and begins with
// PdlEnter(), which lets the next kernel on the stream be scheduled
// while this one still runs; the next kernel's own PdlEnter() then blocks until this whole grid
// has finished and its writes are visible. Ordering is therefore exactly the stream's (nothing is
// read or written before the wait), only the launch overlaps. Kernels launched without the
// attribute (PDL off, or a cuBLAS/NCCL kernel between ours) see plain stream order.
__device__ __forceinline__ void PdlEnter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  // The dependents are scheduled once every CTA of this grid has issued this (i.e. all have
  // started): they take only SM space this grid no longer needs.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// GKA_PDL=0 launches every kernel in plain stream order (for A/B runs); read once.
inline bool PdlEnabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("GKA_PDL");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return enabled;
}

// kernel<<<grid, block, smem, stream>>>(args...) as a programmatic dependent launch (see
// PdlEnter). Errors are reported like <<<>>>'s: through cudaGetLastError().
template <typename... Params, typename... Args>
cudaError_t Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = PdlEnabled() ? 1 : 0;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attr;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

__device__ __forceinline__ float Silu(float z) { return z / (1.0f + expf(-z)); }
__device__ __forceinline__ float Sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

}  // namespace gka::kernels::cuda

// Runs the body (the variadic tail, so it may contain commas) with `T` bound to float (F32)
// or bf16 (BF16). The caller validates the dtype first; any other dtype runs nothing.
#define GKA_DISPATCH_ACT(dtype, T, ...)     \
  switch (dtype) {                          \
    case ::gka::tensor::DType::kF32: {      \
      using T = float;                      \
      __VA_ARGS__;                          \
      break;                                \
    }                                       \
    case ::gka::tensor::DType::kBF16: {     \
      using T = ::gka::kernels::cuda::bf16; \
      __VA_ARGS__;                          \
      break;                                \
    }                                       \
    default:                                \
      break;                                \
  }
