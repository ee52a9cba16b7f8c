// The GKA state core (model-spec §3.4 steps 6-11, §5): per sequence and expanded head, token by
// token from the slot's state, updated in place, all fp32.
//
// One CTA of 256 threads per (sequence, head) keeps both states on chip for the whole
// sequence: h_kk (D×D) lives in registers, an R×R block per thread (R = D/16, a 16×16 grid of
// blocks), and h_kv lives in shared memory, fetched with cp.async while h_kk is updated.
// Per token:
//   h_kk ← e^{gk} h_kk + k̃k̃ᵀ, its Frobenius norm by a block reduction;
//   h_kv ← e^{g} h_kv + k̃ṽᵀ (in shared memory);
//   on the last token both states are stored back (16-byte streaming stores, issued before the
//   solve so they drain while it runs);
//   Chebyshev: each iteration is an in-register mat-vec (R² FMAs per thread), a transpose-
//   reduce over the 16 lanes of a block row (R shuffles, no shared memory), the elementwise
//   update by the row's owner lanes, and one barrier to publish x through shared memory
//   (double buffered);
//   q_mix = q̂ + α(x − q̂); out = scale·h_kvᵀ q_mix from shared memory.
//
// Roofline (decode, D = 128, per (sequence, head)): 256 KiB of state traffic (h_kk and h_kv
// read and written once) and N·D² + 4·D² FMAs (N = num_iter: 0.5 MFMA at N = 30). At 3 TB/s
// the traffic takes 85 ns per (sequence, head), the FMAs ~15 ns of one SM's share of the chip,
// so decode is bandwidth bound if the solves overlap other CTAs' streaming; 2 CTAs per SM
// (128 registers, 71 KiB shared memory each) do that. A solve iteration is latency bound
// (64 mat-vec FMAs → 4 dependent shuffle stages → update → barrier, ~460 cycles with two CTAs
// interleaved) and not hidden by memory at N=128, H=16: N = 30 costs ~40 us more than N = 10.
// Variants measured on an H100 (N=128 H=16, num_iter 30 / 10, us):
//   this kernel: 16×16 grid of 8×8 blocks, 256 threads, 2 CTAs/SM ...... 243.5 / 202
//   16×8 grid of 8×16 blocks, 128 threads, 3 CTAs/SM ...................... 273 / 222
//   persistent 1 CTA/SM, next item prefetched with cp.async ............... 285 / 215
//   persistent, warp-specialised producer with bulk copies (TMA) ......... 265 / 225
//   this layout with lane-permuted rows (select-free reduction) + ω table .. 246.4 / 205
// One item in flight per SM serialises its memory and its solve; fewer threads per item
// lengthen the solve's dependency chain; cutting instructions from the iteration changed
// nothing (the iteration is bound by its dependency chain: FMAs → 4 shuffle stages → update →
// barrier, ~460 cycles with two CTAs interleaved). Run-to-run spread here is ~1%.
// A multi-token sequence runs its tokens sequentially in this kernel: correct, but latency bound
// (one solve after another, 16 of 132 SMs busy for one 16-head prompt: 173 ms at T = 16K,
// N = 30). Sequences longer than kChunkedMinTokens go to the chunk-parallel path instead
// (gka_prefill.cu), which solves every chunk of every head at once.
#include <cuda_pipeline.h>

#include <climits>
#include <cstdlib>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // a 16×16 grid of R×R blocks of h_kk
constexpr unsigned kFull = 0xffffffffu;

struct CoreArgs {
  const float* q;
  const float* k;
  const float* v;
  const float* alpha;
  const float* g;
  float* out;
  float* h_kk;
  float* h_kv;
  const int32_t* slots;
  const int32_t* cu;
  const int32_t* num_iter;
  int H;
  int max_len;  // longer sequences are left to the chunk-parallel path
  float ridge;
  float scale;
  bool decay_kk;
};

// Halves the N partial row sums shared by lanes `mask` apart: the lane whose `mask` bit is set
// keeps the upper half. After the call v[0..N/2) hold pair sums.
template <int N>
__device__ __forceinline__ void HalveReduce(float* v, int mask, bool upper) {
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const float send = upper ? v[i] : v[i + N / 2];
    const float keep = upper ? v[i + N / 2] : v[i];
    v[i] = keep + __shfl_xor_sync(kFull, send, mask);
  }
}

// Sum over the 16 lanes of a block row (lane bits 0-3) of R partial row sums; returns the
// total for row RowOf<R>(lane) of the block.
template <int R>
__device__ __forceinline__ float RowReduce(float (&v)[R], int lane) {
  static_assert(R == 8 || R == 4, "D = 128 or 64");
  if constexpr (R == 8) {
    HalveReduce<8>(v, 8, lane & 8);
    HalveReduce<4>(v, 4, lane & 4);
    HalveReduce<2>(v, 2, lane & 2);
    return v[0] + __shfl_xor_sync(kFull, v[0], 1);
  } else {
    HalveReduce<4>(v, 8, lane & 8);
    HalveReduce<2>(v, 4, lane & 4);
    const float s = v[0] + __shfl_xor_sync(kFull, v[0], 2);
    return s + __shfl_xor_sync(kFull, s, 1);
  }
}
template <int R>
__device__ __forceinline__ int RowOf(int lane) {
  if constexpr (R == 8) {
    return ((lane >> 3) & 1) * 4 + ((lane >> 2) & 1) * 2 + ((lane >> 1) & 1);
  } else {
    return ((lane >> 3) & 1) * 2 + ((lane >> 2) & 1);
  }
}
// One lane per row writes the row's value (the others hold identical copies).
template <int R>
__device__ __forceinline__ bool RowWriter(int lane) {
  return R == 8 ? (lane & 1) == 0 : (lane & 3) == 0;
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}

template <int D>
struct CoreSmem {
  float q[D], k[D], v[D];
  float x[2][D];                   // Chebyshev iterate, double buffered
  float qm[D];                     // q_mix
  float o[kThreads / (D / 4)][D];  // readout partials per row group
  float red[32];
};

// Dynamic shared memory: h_kv [D*D] then CoreSmem<D>.
template <int D>
constexpr size_t CoreSmemBytes() {
  return sizeof(float) * D * D + sizeof(CoreSmem<D>);
}

template <int D>
__global__ void __launch_bounds__(kThreads, 2) GkaCoreKernel(const CoreArgs a) {
  PdlEnter();
  constexpr int R = D / 16;          // block edge
  constexpr int U = R / 4;           // float4 column groups per thread (2 for D = 128)
  constexpr int JQ = D / 4;          // float4 columns of a row (h_kv phase)
  constexpr int RG = kThreads / JQ;  // row groups of the h_kv phase
  extern __shared__ __align__(16) float smem_raw[];
  float* S = smem_raw;  // h_kv [D][D]
  CoreSmem<D>& sm = *reinterpret_cast<CoreSmem<D>*>(smem_raw + D * D);

  const int e = blockIdx.x;
  const int b = blockIdx.y;
  const int t0 = a.cu[b], t1 = a.cu[b + 1];
  if (t1 <= t0 || t1 - t0 > a.max_len) return;  // empty (state untouched) or chunked
  const int tid = threadIdx.x, lane = tid & 31;
  const int bi = tid / 16, bj = tid % 16;
  const int64_t state_off = (static_cast<int64_t>(a.slots[b]) * a.H + e) * D * D;
  float* gkk = a.h_kk + state_off;
  float* gkv = a.h_kv + state_off;
  const int n_iter = a.num_iter[b];

  // h_kv → shared memory in the background.
  for (int i = tid; i < D * D / 4; i += kThreads) CpAsync16(S + 4 * i, gkv + 4 * i);
  asm volatile("cp.async.commit_group;\n" ::);

  // h_kk block → registers: rows R·bi + r, columns 64u + 4bj + c.
  float h[R][R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const float4 t =
          __ldcs(reinterpret_cast<const float4*>(gkk + (R * bi + r) * D + 64 * u + 4 * bj));
      h[r][4 * u + 0] = t.x;
      h[r][4 * u + 1] = t.y;
      h[r][4 * u + 2] = t.z;
      h[r][4 * u + 3] = t.w;
    }
  }
  const int my_row = R * bi + RowOf<R>(lane);
  const bool writer = RowWriter<R>(lane);

  for (int tok = t0; tok < t1; ++tok) {
    const bool last = tok == t1 - 1;
    const int64_t vec_off = (static_cast<int64_t>(tok) * a.H + e) * D;
    if (tid < D) {
      sm.q[tid] = a.q[vec_off + tid];
      sm.k[tid] = a.k[vec_off + tid];
      sm.v[tid] = a.v[vec_off + tid];
    }
    const float g = a.g[static_cast<int64_t>(tok) * a.H + e];
    const float alpha = a.alpha[static_cast<int64_t>(tok) * a.H + e];
    const float dkv = expf(g);
    const float dkk = a.decay_kk ? dkv : 1.0f;
    __syncthreads();

    // h_kk ← dkk·h_kk + k kᵀ, and its squared Frobenius norm.
    float kr[R], kc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) kr[r] = sm.k[R * bi + r];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const float4 t = *reinterpret_cast<const float4*>(&sm.k[64 * u + 4 * bj]);
      kc[4 * u + 0] = t.x;
      kc[4 * u + 1] = t.y;
      kc[4 * u + 2] = t.z;
      kc[4 * u + 3] = t.w;
    }
    float ss = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int c = 0; c < R; ++c) {
        h[r][c] = dkk * h[r][c] + kr[r] * kc[c];
        ss += h[r][c] * h[r][c];
      }
    }
    const float fro = sqrtf(BlockSum(ss, sm.red));
    if (last) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
          __stcs(reinterpret_cast<float4*>(gkk + (R * bi + r) * D + 64 * u + 4 * bj),
                 make_float4(h[r][4 * u], h[r][4 * u + 1], h[r][4 * u + 2], h[r][4 * u + 3]));
        }
      }
    }

    // h_kv ← dkv·h_kv + k vᵀ in shared memory (thread: float4 column jq, rows rg + RG·m).
    if (tok == t0) {
      asm volatile("cp.async.wait_group 0;\n" ::: "memory");
      __syncthreads();
    }
    const int jq = tid % JQ, rg = tid / JQ;
    {
      const float4 vv = *reinterpret_cast<const float4*>(&sm.v[4 * jq]);
#pragma unroll 4
      for (int i = rg; i < D; i += RG) {
        float4* p = reinterpret_cast<float4*>(&S[i * D + 4 * jq]);
        float4 s = *p;
        const float ki = sm.k[i];
        s.x = dkv * s.x + ki * vv.x;
        s.y = dkv * s.y + ki * vv.y;
        s.z = dkv * s.z + ki * vv.z;
        s.w = dkv * s.w + ki * vv.w;
        *p = s;
        if (last) __stcs(reinterpret_cast<float4*>(gkv + i * D + 4 * jq), s);
      }
    }

    // Chebyshev solve of (h_kk + λI) x = q̂; this lane keeps row my_row of x, x_prev, q̂.
    const float qrow = sm.q[my_row];
    float qm_row = qrow;
    if (n_iter > 0) {
      float xr = 0.0f;
      if (fro > 0.0f) {
        const float lam = a.ridge * fro;
        const float step = 2.0f / (2.0f * lam + fro);
        const float rho = fro / (2.0f * lam + fro) / 2.0f;
        const float r4 = rho * rho;
        float xprev = 0.0f;
        xr = step * qrow;
        float omega = 2.0f;
        int buf = 0;
        if (writer) sm.x[0][my_row] = xr;
        __syncthreads();
        for (int it = 0; it < n_iter; ++it) {
          float xc[R];
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const float4 t = *reinterpret_cast<const float4*>(&sm.x[buf][64 * u + 4 * bj]);
            xc[4 * u + 0] = t.x;
            xc[4 * u + 1] = t.y;
            xc[4 * u + 2] = t.z;
            xc[4 * u + 3] = t.w;
          }
          float part[R];
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float s = h[r][0] * xc[0];
#pragma unroll
            for (int c = 1; c < R; ++c) s += h[r][c] * xc[c];
            part[r] = s;
          }
          const float hx = RowReduce<R>(part, lane);
          omega = 1.0f / (1.0f - r4 * omega);
          const float res = hx + lam * xr - qrow;
          const float xn = omega * (xr - step * res) + (1.0f - omega) * xprev;
          xprev = xr;
          xr = xn;
          buf ^= 1;
          if (writer) sm.x[buf][my_row] = xr;
          __syncthreads();
        }
      }
      qm_row = qrow + alpha * (xr - qrow);
    }
    if (writer) sm.qm[my_row] = qm_row;
    __syncthreads();

    // out = scale · h_kvᵀ q_mix: partial column sums per row group, then across groups.
    {
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
      for (int i = rg; i < D; i += RG) {
        const float4 s = *reinterpret_cast<const float4*>(&S[i * D + 4 * jq]);
        const float w = sm.qm[i];
        acc.x += w * s.x;
        acc.y += w * s.y;
        acc.z += w * s.z;
        acc.w += w * s.w;
      }
      *reinterpret_cast<float4*>(&sm.o[rg][4 * jq]) = acc;
    }
    __syncthreads();
    if (tid < D) {
      float o = 0.0f;
#pragma unroll
      for (int r = 0; r < RG; ++r) o += sm.o[r][tid];
      a.out[vec_off + tid] = a.scale * o;
    }
    // The next token overwrites sm.q/k/v/qm/o only after everyone is done with them.
    __syncthreads();
  }
}

template <int D>
absl::Status LaunchCore(const CudaContext& ctx, const CoreArgs& args, int H, int B) {
  constexpr size_t smem = CoreSmemBytes<D>();
  // Per launch (cheap, host-side): the attribute is per device, and a process may drive several.
  GKA_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      GkaCoreKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  Launch(GkaCoreKernel<D>, dim3(H, B), kThreads, smem, ctx.stream(), args);
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("GkaCoreKernel");
  return absl::OkStatus();
}

// Sequences longer than this take the chunk-parallel path. Its gain is parallelism over
// chunks: per SM it is no cheaper (a 64-token chunk at N = 30 takes ~0.39 ms on one SM, 6 µs a
// token, where this kernel takes 10.6 µs a token with two CTAs per SM, 5.3 µs), so a batch
// that already fills the GPU with (sequence, head) pairs gains nothing. Measured on an H100,
// 16 heads, one sequence, N = 30: 64 tokens 0.67 ms here; 128 tokens 1.33 ms here, 0.36 ms
// chunked; 1024 tokens 10.7 ms here, 0.79 ms chunked.
constexpr int kChunkedMinTokens = 64;

}  // namespace

// gka_prefill.cu: the chunk-parallel core for sequences with more than min_len tokens (the
// others are left alone), its products on CUDA cores (fp32) or tensor cores (3×TF32); params
// validated by GkaCore.
bool GkaCoreChunkedSupported(int64_t head_dim);
absl::Status GkaCoreChunked(const CudaContext& ctx, const GkaCoreParams& p, int min_len,
                            bool tensor_cores);

namespace {

// How long sequences run, fixed per process by GKA_CUDA_GKA_PREFILL (for measuring the paths
// against each other): "sequential" (the token-sequential kernel for every length), "fp32" or
// "tf32x3" (the chunk-parallel path with that solver); unset: kDefaultPrefill.
enum class PrefillPath { kSequential, kChunkedFp32, kChunkedTf32x3 };
// 3×TF32: 12.7 ms vs 16.1 ms for fp32 FMAs at T = 16K, 16 heads, N = 30 (H100), same accuracy.
constexpr PrefillPath kDefaultPrefill = PrefillPath::kChunkedTf32x3;

PrefillPath ChosenPrefillPath() {
  static const PrefillPath path = [] {
    const char* env = std::getenv("GKA_CUDA_GKA_PREFILL");
    const absl::string_view v = env == nullptr ? "" : env;
    if (v == "sequential") return PrefillPath::kSequential;
    if (v == "fp32") return PrefillPath::kChunkedFp32;
    if (v == "tf32x3") return PrefillPath::kChunkedTf32x3;
    return kDefaultPrefill;
  }();
  return path;
}

}  // namespace

absl::Status GkaCore(const CudaContext& ctx, const GkaCoreParams& p) {
  constexpr absl::string_view kOp = "GkaCore";
  GKA_RETURN_IF_ERROR(CheckRank(p.q, 3, kOp, "q"));
  GKA_RETURN_IF_ERROR(CheckRank(p.h_kk, 4, kOp, "h_kk"));
  const int64_t T = p.q.shape[0], H = p.q.shape[1], D = p.q.shape[2];
  const int64_t num_slots = p.h_kk.shape[0];
  GKA_RETURN_IF_ERROR(CheckShape(p.k, p.q.shape, kOp, "k"));
  GKA_RETURN_IF_ERROR(CheckShape(p.v, p.q.shape, kOp, "v"));
  GKA_RETURN_IF_ERROR(CheckShape(p.out, p.q.shape, kOp, "out"));
  GKA_RETURN_IF_ERROR(CheckShape(p.alpha, tensor::Shape{T, H}, kOp, "alpha"));
  GKA_RETURN_IF_ERROR(CheckShape(p.g, tensor::Shape{T, H}, kOp, "g"));
  GKA_RETURN_IF_ERROR(CheckShape(p.h_kk, tensor::Shape{num_slots, H, D, D}, kOp, "h_kk"));
  GKA_RETURN_IF_ERROR(CheckShape(p.h_kv, p.h_kk.shape, kOp, "h_kv"));
  for (const auto* t : {&p.q, &p.k, &p.v, &p.alpha, &p.g, &p.out, &p.h_kk, &p.h_kv}) {
    GKA_RETURN_IF_ERROR(CheckDType(*t, {tensor::DType::kF32}, kOp, "every tensor (F32)"));
  }
  if (D != 128 && D != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("GkaCore: head_dim ", D, " unsupported (64 or 128)"));
  }
  if (H > 65535 || p.num_seqs > 65535) {
    return absl::InvalidArgumentError("GkaCore: more than 65535 heads or sequences");
  }
  if (p.num_seqs <= 0 || T == 0) return absl::OkStatus();
  if (p.slots == nullptr || p.cu_seqlens == nullptr || p.num_iter == nullptr) {
    return absl::InvalidArgumentError("GkaCore: slots, cu_seqlens and num_iter are required");
  }
  for (const auto* t : {&p.q, &p.k, &p.v, &p.alpha, &p.g, &p.out, &p.h_kk, &p.h_kv}) {
    GKA_RETURN_IF_ERROR(CheckOnDevice(*t, kOp, "tensor"));
  }
  const PrefillPath path = ChosenPrefillPath();
  const bool chunked = path != PrefillPath::kSequential && GkaCoreChunkedSupported(D) &&
                       p.max_seqlen > kChunkedMinTokens;
  const CoreArgs args{.q = p.q.data<float>(),
                      .k = p.k.data<float>(),
                      .v = p.v.data<float>(),
                      .alpha = p.alpha.data<float>(),
                      .g = p.g.data<float>(),
                      .out = p.out.data<float>(),
                      .h_kk = p.h_kk.data<float>(),
                      .h_kv = p.h_kv.data<float>(),
                      .slots = p.slots,
                      .cu = p.cu_seqlens,
                      .num_iter = p.num_iter,
                      .H = static_cast<int>(H),
                      .max_len = chunked ? kChunkedMinTokens : INT_MAX,
                      .ridge = p.ridge_ratio,
                      .scale = p.scale,
                      .decay_kk = p.decay_kk};
  if (D == 128) {
    GKA_RETURN_IF_ERROR(LaunchCore<128>(ctx, args, static_cast<int>(H), p.num_seqs));
  } else {
    GKA_RETURN_IF_ERROR(LaunchCore<64>(ctx, args, static_cast<int>(H), p.num_seqs));
  }
  if (chunked) {
    GKA_RETURN_IF_ERROR(
        GkaCoreChunked(ctx, p, kChunkedMinTokens, path == PrefillPath::kChunkedTf32x3));
  }
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
