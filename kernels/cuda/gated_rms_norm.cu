// GKA output norm per expanded head: out = x · rsqrt(mean(x²) + eps) ⊙ weight ⊙ silu(gate).
//
// Roofline: reads rows·D·4 (x, F32) + rows·D·size (gate), writes rows·D·size (out); ~8 FLOPs
// and one exp per element. One warp per row (D = 128: four elements per lane), all fp32. The
// gate may be strided per token (a column range of the fused GKA projection): each warp still
// reads one contiguous D-element row of it.
#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

template <typename T, int kE>  // kE = D / 32
__global__ void GatedRmsNormKernel(const float* __restrict__ x, const T* __restrict__ gate,
                                   const float* __restrict__ weight, T* __restrict__ out,
                                   int64_t rows, int64_t gate_heads, int64_t gate_token_stride,
                                   float eps) {
  PdlEnter();
  constexpr int D = kE * 32;
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  if (row >= rows) return;
  const float* xr = x + row * D;
  float v[kE];
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < kE; ++i) {
    v[i] = xr[lane + 32 * i];
    ss += v[i] * v[i];
  }
  const float inv = rsqrtf(WarpSum(ss) / static_cast<float>(D) + eps);
  // Row `row` is head row % gate_heads of token row / gate_heads (norm.h).
  const T* gr = gate == nullptr
                    ? nullptr
                    : gate + (row / gate_heads) * gate_token_stride + (row % gate_heads) * D;
#pragma unroll
  for (int i = 0; i < kE; ++i) {
    const int j = lane + 32 * i;
    float y = v[i] * inv * weight[j];
    if (gr != nullptr) y *= Silu(ToFloat(gr[j]));
    out[row * D + j] = FromFloat<T>(y);
  }
}

}  // namespace

absl::Status GatedRmsNorm(const CudaContext& ctx, const GatedRmsNormParams& p) {
  constexpr absl::string_view kOp = "GatedRmsNorm";
  GKA_RETURN_IF_ERROR(CheckRank(p.x, 2, kOp, "x"));
  const int64_t rows = p.x.shape[0], D = p.x.shape[1];
  GKA_RETURN_IF_ERROR(CheckDType(p.x, {tensor::DType::kF32}, kOp, "x"));
  GKA_RETURN_IF_ERROR(CheckShape(p.out, p.x.shape, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckShape(p.weight, tensor::Shape{D}, kOp, "weight"));
  GKA_RETURN_IF_ERROR(CheckDType(p.weight, {tensor::DType::kF32}, kOp, "weight"));
  const bool has_gate = p.gate.ptr != nullptr;
  if (has_gate) {
    GKA_RETURN_IF_ERROR(CheckShape(p.gate, p.x.shape, kOp, "gate"));
    if (p.gate.dtype != p.out.dtype) {
      return absl::InvalidArgumentError("GatedRmsNorm: gate and out must share a dtype");
    }
  }
  if (!IsFloatActivation(p.out.dtype)) {
    return absl::InvalidArgumentError("GatedRmsNorm: out must be F32 or BF16");
  }
  if (D != 64 && D != 128 && D != 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("GatedRmsNorm: head_dim ", D, " unsupported (64, 128 or 256)"));
  }
  // A packed gate is the strided form with one head per group.
  const int64_t gate_heads = p.gate_token_stride == 0 ? 1 : p.gate_heads;
  const int64_t gate_token_stride = p.gate_token_stride == 0 ? D : p.gate_token_stride;
  if (has_gate &&
      (gate_heads <= 0 || rows % gate_heads != 0 || gate_token_stride < gate_heads * D)) {
    return absl::InvalidArgumentError(
        "GatedRmsNorm: gate_heads must divide rows and gate_token_stride >= gate_heads * D");
  }
  if (rows == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.x, kOp, "x"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.out, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.weight, kOp, "weight"));
  if (has_gate) GKA_RETURN_IF_ERROR(CheckOnDevice(p.gate, kOp, "gate"));
  constexpr int kWarps = 8;
  const unsigned grid = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
  GKA_DISPATCH_ACT(p.out.dtype, T, {
    const T* g = has_gate ? p.gate.data<T>() : nullptr;
    const float* x = p.x.data<float>();
    const float* w = p.weight.data<float>();
    T* o = p.out.data<T>();
    if (D == 64) {
      Launch(GatedRmsNormKernel<T, 2>, grid, kWarps * 32, 0, ctx.stream(), x, g, w, o, rows,
             gate_heads, gate_token_stride, p.eps);
    } else if (D == 128) {
      Launch(GatedRmsNormKernel<T, 4>, grid, kWarps * 32, 0, ctx.stream(), x, g, w, o, rows,
             gate_heads, gate_token_stride, p.eps);
    } else {
      Launch(GatedRmsNormKernel<T, 8>, grid, kWarps * 32, 0, ctx.stream(), x, g, w, o, rows,
             gate_heads, gate_token_stride, p.eps);
    }
  });
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("GatedRmsNormKernel");
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
