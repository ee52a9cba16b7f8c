// Paged GQA attention, host entry and the generic (CUDA-core) kernel.
//
// BF16 with head_dim 128 and Hq/Hkv dividing 16 goes to the tensor-core kernel
// (paged_attention_mma.cu). Everything else — F32 activations (the fp32 engine), other head
// dims or group sizes — runs here: one warp per (query token, query head), 32 keys at a time
// (lane j scores key j against q staged in shared memory), online softmax in fp32 registers,
// then P·V with lane l owning dims l + 32i. K/V rows are read once per query head (G times per
// KV head, through L2), so this path is ~G× less bandwidth-efficient than the mma path; it
// exists for precision (true fp32) and coverage, not speed.
//
// Roofline (per query row): reads ctx·D·size of K and of V, 4·ctx·D FLOPs.
#include <algorithm>
#include <cmath>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr int kWarps = 4;

struct GenericArgs {
  const void* q;
  int64_t q_stride;  // elements between tokens of q
  void* out;
  const void* k_pages;
  const void* v_pages;
  const int32_t* page_table;
  const int32_t* cu_q;
  const int32_t* context_lens;
  int64_t total_tokens;
  int num_seqs, max_pages, hq, hkv, page_size;
  float scale;
};

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

template <typename T, int kE>  // kE = D / 32
__global__ void __launch_bounds__(kWarps * 32) PagedAttentionGenericKernel(const GenericArgs a) {
  PdlEnter();
  constexpr int D = kE * 32;
  __shared__ __align__(16) float qs[kWarps][D];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int64_t item = blockIdx.x * int64_t{kWarps} + w;
  if (item >= a.total_tokens * a.hq) return;
  const int64_t t = item / a.hq;
  const int h = static_cast<int>(item - t * a.hq);
  const int b = FindSeq(a.cu_q, a.num_seqs, t);
  const int q_len = a.cu_q[b + 1] - a.cu_q[b];
  if (t >= a.cu_q[b + 1]) return;  // token past the last sequence
  const int pos = a.context_lens[b] - q_len + static_cast<int>(t - a.cu_q[b]);
  const int n_keys = pos + 1;
  const int hk = h / (a.hq / a.hkv);
  const T* q = static_cast<const T*>(a.q) + t * a.q_stride + h * D;
  const T* kp = static_cast<const T*>(a.k_pages);
  const T* vp = static_cast<const T*>(a.v_pages);
#pragma unroll
  for (int i = 0; i < kE; ++i) qs[w][lane + 32 * i] = ToFloat(q[lane + 32 * i]) * a.scale;
  __syncwarp();
  const int64_t row_stride = static_cast<int64_t>(a.hkv) * D;
  const int32_t* table = a.page_table + static_cast<int64_t>(b) * a.max_pages;
  auto key_ptr = [&](const T* pages, int key) {
    const int page = table[key / a.page_size];
    return pages + (static_cast<int64_t>(page) * a.page_size + key % a.page_size) * row_stride +
           static_cast<int64_t>(hk) * D;
  };
  float m = -INFINITY, l = 0.0f;
  float acc[kE];
#pragma unroll
  for (int i = 0; i < kE; ++i) acc[i] = 0.0f;
  for (int k0 = 0; k0 < n_keys; k0 += 32) {
    const int key = k0 + lane;
    float s = -INFINITY;
    if (key < n_keys) {
      const T* kr = key_ptr(kp, key);
      float dot = 0.0f;
#pragma unroll 8
      for (int d = 0; d < D; d += 4) {
        const float4 kv = Load4(kr + d);
        const float4 qv = *reinterpret_cast<const float4*>(&qs[w][d]);
        dot += kv.x * qv.x + kv.y * qv.y + kv.z * qv.z + kv.w * qv.w;
      }
      s = dot;
    }
    const float m_new = fmaxf(m, WarpMax(s));  // finite: key k0 is always valid
    const float corr = expf(m - m_new);
    const float p = expf(s - m_new);
    l = l * corr + WarpSum(p);
#pragma unroll
    for (int i = 0; i < kE; ++i) acc[i] *= corr;
    const int n = min(32, n_keys - k0);
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      const T* vr = key_ptr(vp, k0 + j);
#pragma unroll
      for (int i = 0; i < kE; ++i) acc[i] += pj * ToFloat(vr[lane + 32 * i]);
    }
    m = m_new;
  }
  T* o = static_cast<T*>(a.out) + (t * a.hq + h) * D;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int i = 0; i < kE; ++i) o[lane + 32 * i] = FromFloat<T>(acc[i] * inv);
}

}  // namespace

absl::Status PagedAttention(const CudaContext& ctx, const PagedAttentionParams& p) {
  constexpr absl::string_view kOp = "PagedAttention";
  GKA_RETURN_IF_ERROR(CheckRank(p.q, 3, kOp, "q"));
  GKA_RETURN_IF_ERROR(CheckRank(p.k_pages, 4, kOp, "k_pages"));
  const int64_t T = p.q.shape[0], hq = p.q.shape[1], D = p.q.shape[2];
  const int64_t hkv = p.k_pages.shape[2];
  GKA_RETURN_IF_ERROR(CheckShape(p.out, p.q.shape, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckShape(
      p.k_pages, tensor::Shape{p.k_pages.shape[0], p.k_pages.shape[1], hkv, D}, kOp, "k_pages"));
  GKA_RETURN_IF_ERROR(CheckShape(p.v_pages, p.k_pages.shape, kOp, "v_pages"));
  const tensor::DType dt = p.q.dtype;
  if (!IsFloatActivation(dt) || p.out.dtype != dt || p.k_pages.dtype != dt ||
      p.v_pages.dtype != dt) {
    return absl::InvalidArgumentError(
        "PagedAttention: q, out and the pages must share one dtype, F32 or BF16");
  }
  if (hkv == 0 || hq % hkv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: Hq ", hq, " is not a multiple of Hkv ", hkv));
  }
  if (D != 64 && D != 128 && D != 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: head_dim ", D, " unsupported (64, 128 or 256)"));
  }
  if (p.k_pages.shape[1] <= 0) return absl::InvalidArgumentError("PagedAttention: page_size 0");
  // q may be a column range of a fused [T, q|k|v]: tokens q_row_stride elements apart.
  const int64_t q_stride = p.q_row_stride == 0 ? hq * D : p.q_row_stride;
  if (q_stride < hq * D) return absl::InvalidArgumentError("PagedAttention: q_row_stride < Hq * D");
  if (T == 0 || p.num_seqs <= 0) return absl::OkStatus();
  if (p.page_table == nullptr || p.cu_q == nullptr || p.context_lens == nullptr) {
    return absl::InvalidArgumentError(
        "PagedAttention: page_table, cu_q and context_lens are required");
  }
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.q, kOp, "q"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.out, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.k_pages, kOp, "k_pages"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.v_pages, kOp, "v_pages"));
  if (PagedAttentionMmaSupported(p)) return PagedAttentionMma(ctx, p);

  const GenericArgs args{.q = p.q.ptr,
                         .q_stride = q_stride,
                         .out = p.out.ptr,
                         .k_pages = p.k_pages.ptr,
                         .v_pages = p.v_pages.ptr,
                         .page_table = p.page_table,
                         .cu_q = p.cu_q,
                         .context_lens = p.context_lens,
                         .total_tokens = T,
                         .num_seqs = p.num_seqs,
                         .max_pages = p.max_pages_per_seq,
                         .hq = static_cast<int>(hq),
                         .hkv = static_cast<int>(hkv),
                         .page_size = static_cast<int>(p.k_pages.shape[1]),
                         .scale = p.scale};
  const unsigned grid = static_cast<unsigned>((T * hq + kWarps - 1) / kWarps);
  GKA_DISPATCH_ACT(dt, T_, {
    if (D == 64) {
      Launch(PagedAttentionGenericKernel<T_, 2>, grid, kWarps * 32, 0, ctx.stream(), args);
    } else if (D == 128) {
      Launch(PagedAttentionGenericKernel<T_, 4>, grid, kWarps * 32, 0, ctx.stream(), args);
    } else {
      Launch(PagedAttentionGenericKernel<T_, 8>, grid, kWarps * 32, 0, ctx.stream(), args);
    }
  });
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("PagedAttentionGenericKernel");
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
