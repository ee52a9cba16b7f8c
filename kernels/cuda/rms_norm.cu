// RMSNorm, optionally fused with the residual add (vLLM's fused_add_rms_norm form):
//   x' = x + residual (stored back to residual), out = weight ⊙ x' · rsqrt(mean(x'²) + eps).
//
// Roofline: reads rows·n·size (x) [+ rows·n·size (residual)] + n·4 (weight), writes rows·n·size
// (out) [+ rows·n·size (residual)]; ~4 FLOPs per element. One block per row. Rows up to 8192
// elements stay in registers (one read of each element); longer ones take two passes over the
// row, the second re-reading what this same thread touched in the first (L1/L2 hits). Either
// way `out` may alias `x` safely. With a BF16 residual the norm uses the rounded x' that is stored,
// so the residual stream and the normalised value agree exactly.
#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, bool kResidual>
__global__ void __launch_bounds__(kThreads)
    RmsNormVec4Kernel(const T* x, T* residual, const float* __restrict__ weight, T* out, int64_t n,
                      float eps) {
  PdlEnter();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  T* rr = kResidual ? residual + row * n : nullptr;
  T* orow = out + row * n;
  const int64_t n4 = n / 4;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
    float4 v = Load4(xr + 4 * i);
    if constexpr (kResidual) {
      const float4 r = Load4(rr + 4 * i);
      v = make_float4(v.x + r.x, v.y + r.y, v.z + r.z, v.w + r.w);
      Store4(rr + 4 * i, v);
      v = Load4(rr + 4 * i);  // the stored (possibly rounded) value is the one normalised
    }
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  const float inv = rsqrtf(BlockSum(ss, red) / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
    const float4 v = kResidual ? Load4(rr + 4 * i) : Load4(xr + 4 * i);
    const float4 w = Load4(weight + 4 * i);
    Store4(orow + 4 * i,
           make_float4(v.x * inv * w.x, v.y * inv * w.y, v.z * inv * w.z, v.w * inv * w.w));
  }
}

// Rows of at most kThreads · 4 · kRowQuads elements (hidden 5120: 5 quads per thread): the
// row stays in registers, so each element is read once and every load of the row is issued
// before the first use (the two-pass kernel above re-reads, and its store-then-reload of the
// residual serialises its loop). The same arithmetic in the same order as RmsNormVec4Kernel
// (the stored x' is rounded in registers exactly as Store4 rounds it), so the same bits.
constexpr int kRowQuads = 8;

// v as stored in T and read back.
template <typename T>
__device__ __forceinline__ float RoundTo(float v) {
  return ToFloat(FromFloat<T>(v));
}

template <typename T, bool kResidual>
__global__ void __launch_bounds__(kThreads)
    RmsNormRowInRegistersKernel(const T* x, T* residual, const float* __restrict__ weight, T* out,
                                int64_t n, float eps) {
  PdlEnter();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  T* rr = kResidual ? residual + row * n : nullptr;
  T* orow = out + row * n;
  const int n4 = static_cast<int>(n / 4);
  float4 v[kRowQuads];
#pragma unroll
  for (int k = 0; k < kRowQuads; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < n4) v[k] = Load4(xr + 4 * i);
  }
  if constexpr (kResidual) {
    float4 r[kRowQuads];
#pragma unroll
    for (int k = 0; k < kRowQuads; ++k) {
      const int i = threadIdx.x + k * kThreads;
      if (i < n4) r[k] = Load4(rr + 4 * i);
    }
#pragma unroll
    for (int k = 0; k < kRowQuads; ++k) {
      const int i = threadIdx.x + k * kThreads;
      if (i < n4) {
        const float4 sum =
            make_float4(v[k].x + r[k].x, v[k].y + r[k].y, v[k].z + r[k].z, v[k].w + r[k].w);
        v[k] =
            make_float4(RoundTo<T>(sum.x), RoundTo<T>(sum.y), RoundTo<T>(sum.z), RoundTo<T>(sum.w));
        Store4(rr + 4 * i, v[k]);
      }
    }
  }
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kRowQuads; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < n4) ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
  }
  const float inv = rsqrtf(BlockSum(ss, red) / static_cast<float>(n) + eps);
#pragma unroll
  for (int k = 0; k < kRowQuads; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < n4) {
      const float4 w = Load4(weight + 4 * i);
      Store4(orow + 4 * i, make_float4(v[k].x * inv * w.x, v[k].y * inv * w.y, v[k].z * inv * w.z,
                                       v[k].w * inv * w.w));
    }
  }
}

template <typename T, bool kResidual>
__global__ void __launch_bounds__(kThreads)
    RmsNormKernel(const T* x, T* residual, const float* __restrict__ weight, T* out, int64_t n,
                  float eps) {
  PdlEnter();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * n;
  T* rr = kResidual ? residual + row * n : nullptr;
  T* orow = out + row * n;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    float v = ToFloat(xr[i]);
    if constexpr (kResidual) {
      const T s = FromFloat<T>(v + ToFloat(rr[i]));
      rr[i] = s;
      v = ToFloat(s);
    }
    ss += v * v;
  }
  const float inv = rsqrtf(BlockSum(ss, red) / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = kResidual ? ToFloat(rr[i]) : ToFloat(xr[i]);
    orow[i] = FromFloat<T>(v * inv * weight[i]);
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

absl::Status RmsNorm(const CudaContext& ctx, const RmsNormParams& p) {
  constexpr absl::string_view kOp = "RmsNorm";
  GKA_RETURN_IF_ERROR(CheckRank(p.x, 2, kOp, "x"));
  const int64_t rows = p.x.shape[0], n = p.x.shape[1];
  GKA_RETURN_IF_ERROR(CheckShape(p.out, p.x.shape, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckShape(p.weight, tensor::Shape{n}, kOp, "weight"));
  GKA_RETURN_IF_ERROR(CheckDType(p.weight, {tensor::DType::kF32}, kOp, "weight"));
  const bool has_res = p.residual.ptr != nullptr;
  if (has_res) GKA_RETURN_IF_ERROR(CheckShape(p.residual, p.x.shape, kOp, "residual"));
  if (!IsFloatActivation(p.x.dtype) || p.out.dtype != p.x.dtype ||
      (has_res && p.residual.dtype != p.x.dtype)) {
    return absl::InvalidArgumentError(
        "RmsNorm: x, out (and residual) must share one dtype, F32 or BF16");
  }
  if (rows == 0 || n == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.x, kOp, "x"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.out, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.weight, kOp, "weight"));
  if (has_res) GKA_RETURN_IF_ERROR(CheckOnDevice(p.residual, kOp, "residual"));
  // 8-byte alignment suffices for bf16 quads, 16 for f32 quads; ask 16 of everyone.
  const bool vec = n % 4 == 0 && Aligned16(p.x.ptr) && Aligned16(p.out.ptr) &&
                   Aligned16(p.weight.ptr) && (!has_res || Aligned16(p.residual.ptr)) &&
                   (n * tensor::DTypeSize(p.x.dtype)) % 16 == 0;
  GKA_DISPATCH_ACT(p.x.dtype, T, {
    const T* x = p.x.data<T>();
    T* res = has_res ? p.residual.data<T>() : nullptr;
    T* out = p.out.data<T>();
    const float* w = p.weight.data<float>();
    if (vec && n <= int64_t{kThreads} * 4 * kRowQuads) {
      if (has_res) {
        Launch(RmsNormRowInRegistersKernel<T, true>, rows, kThreads, 0, ctx.stream(), x, res, w,
               out, n, p.eps);
      } else {
        Launch(RmsNormRowInRegistersKernel<T, false>, rows, kThreads, 0, ctx.stream(), x, res, w,
               out, n, p.eps);
      }
    } else if (vec && has_res) {
      Launch(RmsNormVec4Kernel<T, true>, rows, kThreads, 0, ctx.stream(), x, res, w, out, n, p.eps);
    } else if (vec) {
      Launch(RmsNormVec4Kernel<T, false>, rows, kThreads, 0, ctx.stream(), x, res, w, out, n,
             p.eps);
    } else if (has_res) {
      Launch(RmsNormKernel<T, true>, rows, kThreads, 0, ctx.stream(), x, res, w, out, n, p.eps);
    } else {
      Launch(RmsNormKernel<T, false>, rows, kThreads, 0, ctx.stream(), x, res, w, out, n, p.eps);
    }
  });
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("RmsNormKernel");
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
