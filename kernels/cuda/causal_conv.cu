// Causal depthwise short convolution + SiLU over a varlen batch, carrying the last K-1 raw
// inputs per sequence in its state slot.
//
// Roofline: reads T·C·size(x) + C·K·4 + B·C·(K-1)·4, writes T·C·4 (+ B·C·(K-1)·4 state);
// 2K FLOPs + one exp per output: memory bound. Outputs are independent given the old state,
// so one thread per (token, channel) computes its output (coalesced over channels); a second
// launch then shifts the state, after every output has read the old one. With few tokens per
// sequence (T ≤ 2·B: decode steps) one thread per (sequence, channel) does both in one launch
// (CausalConvPerSequenceKernel).
#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr int kMaxTaps = 8;

// Index b with cu[b] <= t < cu[b+1] (cu is non-decreasing; empty sequences are skipped).
__device__ __forceinline__ int FindSeq(const int32_t* __restrict__ cu, int num_seqs, int64_t t) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

template <typename T>
__global__ void CausalConvKernel(const T* __restrict__ x, int64_t x_stride, float* __restrict__ out,
                                 const float* __restrict__ weight, const float* __restrict__ state,
                                 const int32_t* __restrict__ slots, const int32_t* __restrict__ cu,
                                 int num_seqs, int64_t total, int64_t C, int K) {
  PdlEnter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total * C;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / C, c = i - t * C;
    const int b = FindSeq(cu, num_seqs, t);
    const int64_t t0 = cu[b];
    const int64_t local = t - t0;
    const float* st = state + (static_cast<int64_t>(slots[b]) * C + c) * (K - 1);
    float acc = 0.0f;
    for (int j = 0; j < K; ++j) {
      const int64_t m = local + j;  // index into [state (K-1) ; this sequence's inputs]
      const float xv = m < K - 1 ? st[m] : ToFloat(x[(t0 + m - (K - 1)) * x_stride + c]);
      acc += weight[c * K + j] * xv;
    }
    out[t * C + c] = Silu(acc);
  }
}

template <typename T>
__global__ void CausalConvStateKernel(const T* __restrict__ x, int64_t x_stride,
                                      float* __restrict__ state, const int32_t* __restrict__ slots,
                                      const int32_t* __restrict__ cu, int num_seqs, int64_t C,
                                      int K) {
  PdlEnter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < num_seqs * C;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int b = static_cast<int>(i / C);
    const int64_t c = i - static_cast<int64_t>(b) * C;
    const int64_t t0 = cu[b], len = cu[b + 1] - t0;
    float* st = state + (static_cast<int64_t>(slots[b]) * C + c) * (K - 1);
    float old[kMaxTaps];
    for (int j = 0; j < K - 1; ++j) old[j] = st[j];
    for (int j = 0; j < K - 1; ++j) {
      const int64_t m = len + j;  // new state = xp[len .. len + K - 2]
      st[j] = m < K - 1 ? old[m] : ToFloat(x[(t0 + m - (K - 1)) * x_stride + c]);
    }
  }
}

// One thread per (sequence, channel), walking its sequence's tokens in order with the last K
// inputs in registers: reads the state once, writes each output and then the new state; one
// launch and no search for the sequence. Correct for any lengths, fast when sequences are
// short — a decode step (1 token each; a padded graph batch adds empty ones), which is what the
// host sends here (few tokens per sequence). The same products in the same order as
// CausalConvKernel + CausalConvStateKernel, so the same bits.
template <typename T>
__global__ void CausalConvPerSequenceKernel(
    const T* __restrict__ x, int64_t x_stride, float* __restrict__ out,
    const float* __restrict__ weight, float* __restrict__ state, const int32_t* __restrict__ slots,
    const int32_t* __restrict__ cu, int num_seqs, int64_t C, int K) {
  PdlEnter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < num_seqs * C;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int b = static_cast<int>(i / C);
    const int64_t c = i - static_cast<int64_t>(b) * C;
    const int64_t t0 = cu[b], t1 = cu[b + 1];
    if (t1 == t0) continue;  // no tokens: output and state unchanged
    float* st = state + (static_cast<int64_t>(slots[b]) * C + c) * (K - 1);
    // win[0 .. K-2]: the last K-1 inputs (oldest first); win[K-1]: the current one. Indexed
    // by unrolled loops only (registers).
    float win[kMaxTaps];
    float w[kMaxTaps];
#pragma unroll
    for (int j = 0; j < kMaxTaps; ++j) {
      win[j] = j < K - 1 ? st[j] : 0.0f;
      w[j] = j < K ? weight[c * K + j] : 0.0f;
    }
    for (int64_t t = t0; t < t1; ++t) {
      const float xt = ToFloat(x[t * x_stride + c]);
#pragma unroll
      for (int j = 0; j < kMaxTaps; ++j) {
        if (j == K - 1) win[j] = xt;
      }
      float acc = 0.0f;
#pragma unroll
      for (int j = 0; j < kMaxTaps; ++j) {
        if (j < K) acc += w[j] * win[j];
      }
      out[t * C + c] = Silu(acc);
#pragma unroll
      for (int j = 0; j + 1 < kMaxTaps; ++j) {
        if (j < K - 1) win[j] = win[j + 1];
      }
    }
#pragma unroll
    for (int j = 0; j < kMaxTaps; ++j) {
      if (j < K - 1) st[j] = win[j];
    }
  }
}

}  // namespace

absl::Status CausalConv(const CudaContext& ctx, const CausalConvParams& p) {
  constexpr absl::string_view kOp = "CausalConv";
  GKA_RETURN_IF_ERROR(CheckRank(p.x, 2, kOp, "x"));
  GKA_RETURN_IF_ERROR(CheckRank(p.weight, 2, kOp, "weight"));
  GKA_RETURN_IF_ERROR(CheckRank(p.state, 3, kOp, "state"));
  const int64_t T = p.x.shape[0], C = p.x.shape[1], K = p.weight.shape[1];
  const int64_t stride = p.x_row_stride == 0 ? C : p.x_row_stride;
  if (stride < C) return absl::InvalidArgumentError("CausalConv: x_row_stride < C");
  if (K < 2 || K > kMaxTaps) {
    return absl::InvalidArgumentError(
        absl::StrCat("CausalConv: kernel width ", K, " unsupported (2..", kMaxTaps, ")"));
  }
  GKA_RETURN_IF_ERROR(CheckShape(p.out, tensor::Shape{T, C}, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckShape(p.weight, tensor::Shape{C, K}, kOp, "weight"));
  GKA_RETURN_IF_ERROR(CheckShape(p.state, tensor::Shape{p.state.shape[0], C, K - 1}, kOp, "state"));
  GKA_RETURN_IF_ERROR(CheckDType(p.out, {tensor::DType::kF32}, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckDType(p.weight, {tensor::DType::kF32}, kOp, "weight"));
  GKA_RETURN_IF_ERROR(CheckDType(p.state, {tensor::DType::kF32}, kOp, "state"));
  GKA_RETURN_IF_ERROR(CheckDType(p.x, {tensor::DType::kF32, tensor::DType::kBF16}, kOp, "x"));
  if (p.num_seqs <= 0 || C == 0) return absl::OkStatus();
  if (p.slots == nullptr || p.cu_seqlens == nullptr) {
    return absl::InvalidArgumentError("CausalConv: slots and cu_seqlens are required");
  }
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.weight, kOp, "weight"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.state, kOp, "state"));
  const int k = static_cast<int>(K);
  GKA_DISPATCH_ACT(p.x.dtype, T_, {
    const T_* x = p.x.data<T_>();
    // Few tokens per sequence (a decode step, padded or not): one launch, one thread per
    // (sequence, channel). Else one thread per (token, channel), then the state shift.
    if (T <= 2 * static_cast<int64_t>(p.num_seqs)) {
      if (T > 0) {
        GKA_RETURN_IF_ERROR(CheckOnDevice(p.x, kOp, "x"));
        GKA_RETURN_IF_ERROR(CheckOnDevice(p.out, kOp, "out"));
      }
      Launch(CausalConvPerSequenceKernel<T_>, GridFor(p.num_seqs * C, 256, ctx), 256, 0,
             ctx.stream(), x, stride, p.out.data<float>(), p.weight.data<float>(),
             p.state.data<float>(), p.slots, p.cu_seqlens, p.num_seqs, C, k);
      GKA_CUDA_RETURN_IF_LAUNCH_ERROR("CausalConvPerSequenceKernel");
      return absl::OkStatus();
    }
    if (T > 0) {
      GKA_RETURN_IF_ERROR(CheckOnDevice(p.x, kOp, "x"));
      GKA_RETURN_IF_ERROR(CheckOnDevice(p.out, kOp, "out"));
      Launch(CausalConvKernel<T_>, GridFor(T * C, 256, ctx), 256, 0, ctx.stream(), x, stride,
             p.out.data<float>(), p.weight.data<float>(), p.state.data<float>(), p.slots,
             p.cu_seqlens, p.num_seqs, T, C, k);
      GKA_CUDA_RETURN_IF_LAUNCH_ERROR("CausalConvKernel");
    }
    Launch(CausalConvStateKernel<T_>, GridFor(p.num_seqs * C, 256, ctx), 256, 0, ctx.stream(), x,
           stride, p.state.data<float>(), p.slots, p.cu_seqlens, p.num_seqs, C, k);
    GKA_CUDA_RETURN_IF_LAUNCH_ERROR("CausalConvStateKernel");
  });
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
