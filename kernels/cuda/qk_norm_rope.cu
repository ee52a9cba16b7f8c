// Per-head q/k RMSNorm (shared [D] weight) followed by neox RoPE, in place.
//
// Roofline: reads and writes T·(Hq+Hkv)·D·size; ~10 FLOPs + one sincos per element pair.
// One warp per (token, head): lane l holds dims l + 32i, so both members of every RoPE pair
// (j, j + D/2) sit in the same lane and the rotation needs no shuffles. The table follows the
// CPU reference exactly: inv_freq = fp32(1 / pow(theta, 2j/D)) from the host in fp64, the
// angle is the fp32 product positions[t]·inv_freq[j], and cos/sin of that fp32 angle are
// evaluated in fp64 and rounded once (angles reach 1e5 rad at long contexts, where a float
// sincos would add its own error).
#include <cmath>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr int kMaxHeadDim = 256;
struct InvFreq {
  float v[kMaxHeadDim / 2];
};

template <typename T, int kE>  // kE = D / 32 elements per lane, even
__global__ void QkNormRopeKernel(T* __restrict__ q, T* __restrict__ k, int hq, int hkv,
                                 int64_t q_stride, int64_t k_stride, const float* __restrict__ qw,
                                 const float* __restrict__ kw,
                                 const int32_t* __restrict__ positions, int64_t num_tokens,
                                 float eps, const InvFreq inv_freq) {
  PdlEnter();
  constexpr int D = kE * 32;
  const int lane = threadIdx.x & 31;
  const int64_t warp = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int heads = hq + hkv;
  if (warp >= num_tokens * heads) return;
  const int64_t t = warp / heads;
  const int h = static_cast<int>(warp - t * heads);
  const bool is_q = h < hq;
  T* base = is_q ? q + t * q_stride + h * D : k + t * k_stride + (h - hq) * D;
  const float* w = is_q ? qw : kw;
  float v[kE];
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < kE; ++i) {
    v[i] = ToFloat(base[lane + 32 * i]);
    ss += v[i] * v[i];
  }
  const float inv = rsqrtf(WarpSum(ss) / static_cast<float>(D) + eps);
#pragma unroll
  for (int i = 0; i < kE; ++i) v[i] = v[i] * inv * w[lane + 32 * i];
  const float pos = static_cast<float>(positions[t]);
#pragma unroll
  for (int i = 0; i < kE / 2; ++i) {
    const int j = lane + 32 * i;  // j < D/2; partner j + D/2 is element i + kE/2
    double sd, cd;
    sincos(static_cast<double>(pos * inv_freq.v[j]), &sd, &cd);
    const float s = static_cast<float>(sd), c = static_cast<float>(cd);
    const float a = v[i], b = v[i + kE / 2];
    v[i] = a * c - b * s;
    v[i + kE / 2] = b * c + a * s;
  }
#pragma unroll
  for (int i = 0; i < kE; ++i) base[lane + 32 * i] = FromFloat<T>(v[i]);
}

}  // namespace

absl::Status QkNormRope(const CudaContext& ctx, const QkNormRopeParams& p) {
  constexpr absl::string_view kOp = "QkNormRope";
  GKA_RETURN_IF_ERROR(CheckRank(p.q, 3, kOp, "q"));
  GKA_RETURN_IF_ERROR(CheckRank(p.k, 3, kOp, "k"));
  const int64_t T = p.q.shape[0], hq = p.q.shape[1], D = p.q.shape[2];
  const int64_t hkv = p.k.shape[1];
  GKA_RETURN_IF_ERROR(CheckShape(p.k, tensor::Shape{T, hkv, D}, kOp, "k"));
  GKA_RETURN_IF_ERROR(CheckShape(p.q_weight, tensor::Shape{D}, kOp, "q_weight"));
  GKA_RETURN_IF_ERROR(CheckShape(p.k_weight, tensor::Shape{D}, kOp, "k_weight"));
  GKA_RETURN_IF_ERROR(CheckDType(p.q_weight, {tensor::DType::kF32}, kOp, "q_weight"));
  GKA_RETURN_IF_ERROR(CheckDType(p.k_weight, {tensor::DType::kF32}, kOp, "k_weight"));
  if (!IsFloatActivation(p.q.dtype) || p.k.dtype != p.q.dtype) {
    return absl::InvalidArgumentError("QkNormRope: q and k must share dtype F32 or BF16");
  }
  if (D != 64 && D != 128 && D != 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("QkNormRope: head_dim ", D, " unsupported (64, 128 or 256)"));
  }
  // Token strides: packed, or one shared stride when q and k sit in a fused [T, q|k|v].
  const int64_t q_stride = p.row_stride == 0 ? hq * D : p.row_stride;
  const int64_t k_stride = p.row_stride == 0 ? hkv * D : p.row_stride;
  if (q_stride < hq * D || k_stride < hkv * D) {
    return absl::InvalidArgumentError("QkNormRope: row_stride smaller than a token's heads");
  }
  if (T == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.q, kOp, "q"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.k, kOp, "k"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.q_weight, kOp, "q_weight"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.k_weight, kOp, "k_weight"));
  if (p.positions == nullptr) return absl::InvalidArgumentError("QkNormRope: positions is null");
  InvFreq inv_freq{};
  for (int64_t j = 0; j < D / 2; ++j) {
    inv_freq.v[j] = static_cast<float>(
        1.0 / std::pow(static_cast<double>(p.theta), static_cast<double>(2 * j) / D));
  }
  const int64_t warps = T * (hq + hkv);
  constexpr int kWarpsPerBlock = 8;
  const unsigned grid = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const int ihq = static_cast<int>(hq), ihkv = static_cast<int>(hkv);
  GKA_DISPATCH_ACT(p.q.dtype, T_, {
    T_* q = p.q.data<T_>();
    T_* k = p.k.data<T_>();
    const float* qw = p.q_weight.data<float>();
    const float* kw = p.k_weight.data<float>();
    if (D == 64) {
      Launch(QkNormRopeKernel<T_, 2>, grid, kWarpsPerBlock * 32, 0, ctx.stream(), q, k, ihq, ihkv,
             q_stride, k_stride, qw, kw, p.positions, T, p.eps, inv_freq);
    } else if (D == 128) {
      Launch(QkNormRopeKernel<T_, 4>, grid, kWarpsPerBlock * 32, 0, ctx.stream(), q, k, ihq, ihkv,
             q_stride, k_stride, qw, kw, p.positions, T, p.eps, inv_freq);
    } else {
      Launch(QkNormRopeKernel<T_, 8>, grid, kWarpsPerBlock * 32, 0, ctx.stream(), q, k, ihq, ihkv,
             q_stride, k_stride, qw, kw, p.positions, T, p.eps, inv_freq);
    }
  });
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("QkNormRopeKernel");
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
