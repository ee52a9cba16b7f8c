// The chunk-parallel GKA state core for long sequences (model-spec §5): the same function as
// the token-sequential kernel in gka_core.cu, computed chunk by chunk so that every chunk of
// every (sequence, head) solves at once. fp32-accurate: the products run either as fp32 FMAs
// on the CUDA cores (Fp32Math) or as 3×TF32 MMAs on the tensor cores (Tf32x3Math, the default;
// gka_core.cu picks).
//
// For a chunk of C = 64 tokens with start states (H0, S0) and decay factors d_r = e^{g_r}:
//   e_t    = Π_{r≤t} d_r,   M[t,s] = Π_{s<r≤t} d_r (s ≤ t, else 0)
//   H_t x  = e_t·H0 x + Σ_{s≤t} M[t,s] (k̃_s·x) k̃_s
//   ‖H_t‖²_F = e_t²‖H0‖² + 2 e_t Σ_s M[t,s] k̃_sᵀH0k̃_s + Σ_{s,r} M[t,s] M[t,r] (k̃_s·k̃_r)²
//   o_t    = scale·[ e_t·S0ᵀ q_mix,t + Σ_{s≤t} M[t,s] (q_mix,t·k̃_s) ṽ_s ]
//   H_end  = e_last·H0 + Σ_s M[last,s] k̃_s k̃_sᵀ   (S_end likewise with ṽ)
// The decay is a running product of the same e^{g} the recurrence multiplies by, not the
// exponent of a cumulative sum: G_t − G_s of fp32 cumsums loses ulp(|G|) to cancellation
// when the decays are large, a product does not. With decay_kk false the h_kk factors are 1.
//
// Two kernels per window of chunks (windows bound the boundary-state scratch to 256 MiB, or one
// chunk per sequence and head if that is more):
//  1. GkaChunkScanKernel, one CTA per (sequence, head, state, 16-column tile): carries its
//     128×16 slice of h_kk or h_kv in registers through the window's chunks, writes each
//     chunk's start state to scratch (h_kk transposed, the layout the solve reads) and the
//     window's end state back to the slot. cp.async double-buffers the next chunk's keys.
//  2. GkaChunkSolveKernel, one CTA per (sequence, head, chunk): H0ᵀ, K̃, K̃ᵀ, the iterate X
//     and M in shared memory (194 / 206 KiB, 1 CTA/SM); the C Chebyshev solves run as one
//     [C×D]·[D×D] + [C×D]·[D×C] product, the causal [C×C]·[C×D] product, and the row-wise
//     update; then the readout with (S0, Ṽ) in place of (H0, K̃).
//
// Roofline, per chunk of one (sequence, head), D = 128, C = 64, N = num_iter:
//   FLOPs: 2·(N + 2)·(C·D² + C²·D + C²·D/2) (solve iterations, norm pre-pass, readout;
//          the causal product is half of [C×C]·[C×D]): 3.6 MFLOP·(N + 2) → 115 MFLOP at N = 30.
//   Bytes: q, k, v, out (4·C·D·4 = 128 KiB) + the scan's and the solve's H0/S0 (4·D²·4 =
//          256 KiB): 384 KiB.
// T = 16384, 16 heads, N = 30: 470 GFLOP and 1.5 GB, so compute bound (the bytes take 0.5 ms).
// Measured on an H100 (T = 16K, 16 heads, N = 30 / 10; token-sequential: 173 / 85 ms):
//   Fp32Math, CUDA-core FMAs, 30 TF/s (45% of the 67 TF/s FMA peak) ....... 16.1 / 7.9 ms
//   Tf32x3Math split with cvt.rna.tf32 (quarter-rate conversions bound) .. 17.4 / 8.1 ms
//   Tf32x3Math split by masking, MMAs term-major .......................... 12.7 / 6.5 ms
//   + the scan's w∘y product by all threads, not one bank-conflicted warp (this file;
//     the scan went from ~0.94 to ~0.6 ms per 128-chunk window) ............ 11.9 / 5.8 ms
// 3×TF32 triples the MMAs (5k mma.sync per SM per pass), which is now the limit; the issue's
// 3.6 ms needs fewer or faster MMAs (wgmma, constant operands pre-split once per chunk).
//
// Precision: both solvers keep the iterate, the states and the accumulation in fp32; the
// chunked and token-sequential paths differ only in summation order and, for 3×TF32, in the
// ≤ 2^-20 relative split error per operand (core output vs the CPU fp32 reference ≤ 3.2e-6
// for either solver, tests/gpu/cuda_parity_test.cc cases "chunked ...").
#include <cuda_pipeline.h>

#include <algorithm>
#include <cstdint>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr int kD = 128;  // head_dim (the only one this path supports)
constexpr int kC = 64;   // chunk length
constexpr int kSolveThreads = 256;
constexpr int kScanThreads = 128;
constexpr int kScanCols = 16;  // state columns per scan CTA
constexpr int kScanTiles = kD / kScanCols;
// Boundary states per window are bounded by this (at least one chunk per sequence and head).
constexpr int64_t kScratchBudgetBytes = int64_t{256} << 20;
constexpr unsigned kFullMask = 0xffffffffu;

struct ChunkArgs {
  const float* q;      // [T, H, D]
  const float* k;      // [T, H, D]
  const float* v;      // [T, H, D]
  const float* alpha;  // [T, H]
  const float* g;      // [T, H]
  float* out;          // [T, H, D]
  float* h_kk;         // [num_slots, H, D, D]
  float* h_kv;         // [num_slots, H, D, D]
  const int32_t* slots;
  const int32_t* cu;
  const int32_t* num_iter;
  // [window chunks, H, 2, D, D]: per chunk the start h_kk, transposed ([j][i] = H0[i][j]),
  // then the start h_kv as stored ([key][value]).
  float* bounds;
  int H;
  int min_len;  // sequences with more tokens than this take this path
  int c0;       // first chunk (sequence-local index) of this window
  int W;        // chunks per window
  float ridge;
  float scale;
  bool decay_kk;
};

// Chunks of sequence b in this window (0 when it is short or already done).
__device__ __forceinline__ int WindowChunks(const ChunkArgs& a, int b) {
  const int len = a.cu[b + 1] - a.cu[b];
  if (len <= a.min_len) return 0;
  const int n = (len + kC - 1) / kC - a.c0;
  return n < 0 ? 0 : (n < a.W ? n : a.W);
}

// Σ_{b' < b} WindowChunks(b'): the first scratch chunk of sequence b. Every lane of a full warp
// calls it and gets the sum (each CTA recomputes it: B reads, negligible next to its work).
__device__ __forceinline__ int WindowBase(const ChunkArgs& a, int b, int lane) {
  int s = 0;
  for (int i = lane; i < b; i += 32) s += WindowChunks(a, i);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(kFullMask, s, o);
  return s;
}

__device__ __forceinline__ float4 Ld4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ void St4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ float Comp(const float4& v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}
// acc[0..3] += a·b
__device__ __forceinline__ void Fma4(float* acc, float a, const float4& b) {
  acc[0] = fmaf(a, b.x, acc[0]);
  acc[1] = fmaf(a, b.y, acc[1]);
  acc[2] = fmaf(a, b.z, acc[2]);
  acc[3] = fmaf(a, b.w, acc[3]);
}

// ---- 1. boundary states ------------------------------------------------------------------

struct ScanSmem {
  float k[2][kC][kD];         // k̃ rows of the chunk, double buffered
  float y[2][kC][kScanCols];  // this CTA's columns of k̃ (h_kk) or ṽ (h_kv)
  float g[2][kC];
  float w[kC];              // M[last, s] = Π_{s<r<lc} d_r
  float wy[kC][kScanCols];  // M[last, s]·y_s
  float decay_all;          // e_last
};

__global__ void __launch_bounds__(kScanThreads, 2) GkaChunkScanKernel(const ChunkArgs a) {
  PdlEnter();
  extern __shared__ __align__(16) unsigned char scan_smem_raw[];
  ScanSmem& sm = *reinterpret_cast<ScanSmem*>(scan_smem_raw);
  const int m = blockIdx.x / kScanTiles;  // 0: h_kk, 1: h_kv
  const int j0 = (blockIdx.x % kScanTiles) * kScanCols;
  const int h = blockIdx.y, b = blockIdx.z;
  const int n_here = WindowChunks(a, b);
  if (n_here == 0) return;
  const int tid = threadIdx.x, lane = tid & 31;
  const int base = WindowBase(a, b, lane);
  const int t0 = a.cu[b], len = a.cu[b + 1] - t0;
  const bool kv = m == 1;
  // Thread tile: rows 4·ig.., columns j0 + 4·jg... The h_kk mapping (ig fastest) makes the
  // transposed scratch stores one 512-byte run per warp; the h_kv one gives 64-byte row runs.
  const int ig = kv ? tid >> 2 : tid & 31;
  const int jg = kv ? tid & 3 : tid >> 5;
  float* state = (kv ? a.h_kv : a.h_kk) + (static_cast<int64_t>(a.slots[b]) * a.H + h) * kD * kD;
  const float* ysrc = kv ? a.v : a.k;
  const bool decay = kv || a.decay_kk;

  float st[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const float4 t = Ld4(state + (4 * ig + r) * kD + j0 + 4 * jg);
    st[r][0] = t.x;
    st[r][1] = t.y;
    st[r][2] = t.z;
    st[r][3] = t.w;
  }

  const auto issue = [&](int c, int buf) {
    const int tb = t0 + c * kC;
    const int lc = min(kC, len - c * kC);
    for (int f = tid; f < lc * (kD / 4); f += kScanThreads) {
      const int s = f / (kD / 4), q4 = f % (kD / 4);
      __pipeline_memcpy_async(&sm.k[buf][s][4 * q4],
                              a.k + (static_cast<int64_t>(tb + s) * a.H + h) * kD + 4 * q4, 16);
    }
    for (int f = tid; f < lc * (kScanCols / 4); f += kScanThreads) {
      const int s = f / (kScanCols / 4), q4 = f % (kScanCols / 4);
      __pipeline_memcpy_async(&sm.y[buf][s][4 * q4],
                              ysrc + (static_cast<int64_t>(tb + s) * a.H + h) * kD + j0 + 4 * q4,
                              16);
    }
    for (int s = tid; s < lc; s += kScanThreads) {
      __pipeline_memcpy_async(&sm.g[buf][s], a.g + static_cast<int64_t>(tb + s) * a.H + h, 4);
    }
    __pipeline_commit();
  };

  issue(a.c0, 0);
  for (int c = a.c0; c < a.c0 + n_here; ++c) {
    const int buf = (c - a.c0) & 1;
    const int lc = min(kC, len - c * kC);
    float* bnd = a.bounds + ((static_cast<int64_t>(base + c - a.c0) * a.H + h) * 2 + m) * kD * kD;
    if (kv) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        St4(bnd + (4 * ig + r) * kD + j0 + 4 * jg,
            make_float4(st[r][0], st[r][1], st[r][2], st[r][3]));
      }
    } else {
#pragma unroll
      for (int cc = 0; cc < 4; ++cc) {
        St4(bnd + (j0 + 4 * jg + cc) * kD + 4 * ig,
            make_float4(st[0][cc], st[1][cc], st[2][cc], st[3][cc]));
      }
    }
    if (c + 1 < a.c0 + n_here) {
      issue(c + 1, buf ^ 1);
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();

    if (tid < 32) {
      // Suffix products w_s = Π_{s<r<lc} d_r over lane pairs (rows 2·lane, 2·lane + 1).
      const int r0 = 2 * lane, r1 = 2 * lane + 1;
      const float e0 = r0 < lc && decay ? expf(sm.g[buf][r0]) : 1.0f;
      const float e1 = r1 < lc && decay ? expf(sm.g[buf][r1]) : 1.0f;
      float incl = e0 * e1;  // becomes Π over lanes ≥ lane
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float t = __shfl_down_sync(kFullMask, incl, o);
        if (lane + o < 32) incl *= t;
      }
      float excl = __shfl_down_sync(kFullMask, incl, 1);
      if (lane == 31) excl = 1.0f;
      if (lane == 0) sm.decay_all = incl;
      sm.w[r0] = e1 * excl;
      sm.w[r1] = excl;
    }
    __syncthreads();
    // wy = w ∘ y by every thread, consecutive threads on consecutive columns. (Warp 0 alone,
    // lane = row pair, put all 32 lanes on one bank: 54% of the kernel's shared-memory
    // wavefronts were those conflicts, and the other warps waited at the barrier.)
    for (int e = tid; e < lc * kScanCols; e += kScanThreads) {
      const int s = e / kScanCols, jj = e % kScanCols;
      sm.wy[s][jj] = sm.w[s] * sm.y[buf][s][jj];
    }
    __syncthreads();

    float acc[4][4] = {};
    for (int s = 0; s < lc; ++s) {
      const float4 kk = Ld4(&sm.k[buf][s][4 * ig]);
      const float4 yy = Ld4(&sm.wy[s][4 * jg]);
#pragma unroll
      for (int r = 0; r < 4; ++r) Fma4(acc[r], Comp(kk, r), yy);
    }
    const float dall = sm.decay_all;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
#pragma unroll
      for (int cc = 0; cc < 4; ++cc) st[r][cc] = fmaf(dall, st[r][cc], acc[r][cc]);
    }
    // The next iteration refills the other buffer and rewrites wy.
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    St4(state + (4 * ig + r) * kD + j0 + 4 * jg,
        make_float4(st[r][0], st[r][1], st[r][2], st[r][3]));
  }
}

// ---- 2. solves and readout ---------------------------------------------------------------

// Shared memory of the solve; Math picks the row strides (padded for the tensor-core fragment
// loads, whose lanes read columns of 8 rows at once).
template <class Math>
struct SolveSmem {
  float w[kD * Math::kWs];    // H0ᵀ [j][i] in the solve, S0 [key][value] in the readout
  float x[kC * Math::kXs];    // the iterate's rows (K̃ in the norm pre-pass, q_mix in the readout)
  float kt[kD * Math::kKts];  // K̃ᵀ [j][s]
  float y[kC * Math::kYs];    // K̃ rows in the solve, Ṽ rows in the readout
  float a[kC * Math::kAs];    // (X K̃ᵀ) ∘ M; (k̃_s·k̃_r)² in the norm pre-pass
  float m[kC * kC];           // M[t][s]
  float eg[kC];               // e_t
  float dec[kC];              // d_t = e^{g_t} (1 past the chunk's end)
  float khk[2][kC];           // k̃_sᵀ H0 k̃_s, in two partial sums
  float lam[kC], step[kC], r4[kC];
  float alpha[kC];
  float red[32];
};

// fp32 on CUDA cores. Thread (ty, tx) owns rows 4·ty + r and columns Col(tx, c) of a [C×D]
// result (element e = 8r + c), and rows 4·ty + r, columns 4·tx + c of the [C×C] one.
struct Fp32Math {
  static constexpr int kWs = kD, kXs = kD, kKts = kC, kYs = kD, kAs = kC;
  static constexpr int kRows = 4;
  using Smem = SolveSmem<Fp32Math>;
  int ty, tx, warp;
  __device__ explicit Fp32Math(int tid) : ty(tid >> 4), tx(tid & 15), warp(tid >> 5) {}
  __device__ int Row(int rr) const { return 4 * ty + rr; }
  __device__ static constexpr int Slot(int e) { return e >> 3; }
  __device__ static int Col(int tx, int c) { return c < 4 ? 4 * tx + c : 64 + 4 * tx + c - 4; }
  __device__ int ColOf(int e) const { return Col(tx, e & 7); }

  __device__ void Load(const float* base, int stride, float (&v)[32]) const {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const float4 a = Ld4(base + Row(r) * stride + 4 * tx);
      const float4 b = Ld4(base + Row(r) * stride + 64 + 4 * tx);
      v[8 * r + 0] = a.x, v[8 * r + 1] = a.y, v[8 * r + 2] = a.z, v[8 * r + 3] = a.w;
      v[8 * r + 4] = b.x, v[8 * r + 5] = b.y, v[8 * r + 6] = b.z, v[8 * r + 7] = b.w;
    }
  }
  // Rows < rows only; values times mul.
  __device__ void Store(float* base, int64_t stride, const float (&v)[32], int rows = kC,
                        float mul = 1.0f) const {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      if (Row(r) >= rows) continue;
      const float* u = v + 8 * r;
      St4(base + Row(r) * stride + 4 * tx,
          make_float4(mul * u[0], mul * u[1], mul * u[2], mul * u[3]));
      St4(base + Row(r) * stride + 64 + 4 * tx,
          make_float4(mul * u[4], mul * u[5], mul * u[6], mul * u[7]));
    }
  }

  // p = X·W ([C×D]·[D×D]) and q = X·K̃ᵀ ([C×D]·[D×C]) for the thread's tiles.
  __device__ void Products(const Smem& sm, float (&p)[32], float (&q)[16]) const {
#pragma unroll
    for (int i = 0; i < 32; ++i) p[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; ++i) q[i] = 0.0f;
#pragma unroll 2
    for (int j = 0; j < kD; j += 4) {
      float4 xr[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) xr[r] = Ld4(&sm.x[Row(r) * kXs + j]);
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const float4 w0 = Ld4(&sm.w[(j + jj) * kWs + 4 * tx]);
        const float4 w1 = Ld4(&sm.w[(j + jj) * kWs + 64 + 4 * tx]);
        const float4 kt = Ld4(&sm.kt[(j + jj) * kKts + 4 * tx]);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float xv = Comp(xr[r], jj);
          Fma4(p + 8 * r, xv, w0);
          Fma4(p + 8 * r + 4, xv, w1);
          Fma4(q + 4 * r, xv, kt);
        }
      }
    }
  }

  // p = diag(e)·X·W + ((X·K̃ᵀ) ∘ M)·Y. Contains one barrier (A published); X, W, K̃ᵀ, M, e and
  // Y must be ready when it starts, and A free (a barrier since its last reader).
  __device__ void Apply(Smem& sm, float (&p)[32]) const {
    float q[16];
    Products(sm, p, q);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int t = Row(r);
      const float e = sm.eg[t];
#pragma unroll
      for (int c = 0; c < 8; ++c) p[8 * r + c] *= e;
      const float4 mm = Ld4(&sm.m[t * kC + 4 * tx]);
      St4(&sm.a[t * kAs + 4 * tx], make_float4(q[4 * r] * mm.x, q[4 * r + 1] * mm.y,
                                               q[4 * r + 2] * mm.z, q[4 * r + 3] * mm.w));
    }
    __syncthreads();
    // This warp's rows are < 8·warp + 8 and A[t][s] = 0 for s > t: the causal half is skipped.
    const int s_end = 8 * warp + 8;
    for (int s = 0; s < s_end; s += 4) {
      float4 ar[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) ar[r] = Ld4(&sm.a[Row(r) * kAs + s]);
#pragma unroll
      for (int ss = 0; ss < 4; ++ss) {
        const float4 y0 = Ld4(&sm.y[(s + ss) * kYs + 4 * tx]);
        const float4 y1 = Ld4(&sm.y[(s + ss) * kYs + 64 + 4 * tx]);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float av = Comp(ar[r], ss);
          Fma4(p + 8 * r, av, y0);
          Fma4(p + 8 * r + 4, av, y1);
        }
      }
    }
  }

  // With X = K̃: khk[s] = k̃_sᵀ H0 k̃_s and a[s][r] = (k̃_s·k̃_r)² (at least for r ≤ s).
  __device__ void NormPrepass(Smem& sm) const {
    float p[32], q[16], k[32];
    Products(sm, p, q);
    Load(sm.y, kYs, k);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      float part = 0.0f;
#pragma unroll
      for (int c = 0; c < 8; ++c) part = fmaf(k[8 * r + c], p[8 * r + c], part);
      // The 16 lanes of a row group (lane bits 0-3 = tx).
      part += __shfl_xor_sync(kFullMask, part, 8);
      part += __shfl_xor_sync(kFullMask, part, 4);
      part += __shfl_xor_sync(kFullMask, part, 2);
      part += __shfl_xor_sync(kFullMask, part, 1);
      if (tx == 0) {
        sm.khk[0][Row(r)] = part;
        sm.khk[1][Row(r)] = 0.0f;
      }
      const float* qr = q + 4 * r;
      St4(&sm.a[Row(r) * kAs + 4 * tx],
          make_float4(qr[0] * qr[0], qr[1] * qr[1], qr[2] * qr[2], qr[3] * qr[3]));
    }
  }
};

// d += a·b on the tensor cores: m16n8k8, TF32 inputs, fp32 accumulate. The tensor cores read
// the upper 19 bits of each 32-bit operand (sign, exponent, 10 mantissa bits). Not volatile: the
// compiler may interleave independent products.
__device__ __forceinline__ void MmaTf32(float* d, const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// v = big + small: big is v truncated to TF32 (exact), small the exact fp32 remainder, which
// the tensor cores truncate to TF32 in turn: ≥ 21 mantissa bits in all (relative error
// ≤ 2^-20 per operand). Two full-rate ALU ops, where cvt.rna.tf32.f32 runs at a quarter rate and
// made the conversions, not the MMAs, the bottleneck (measured: 17.4 ms vs 16.1 ms for fp32 FMA
// at T = 16K, N = 30).
__device__ __forceinline__ void SplitTf32(float v, uint32_t& big, uint32_t& small) {
  big = __float_as_uint(v) & 0xffffe000u;
  small = __float_as_uint(v - __uint_as_float(big));
}

// B fragments (both halves) of n-tiles n0 + 8·n, n < N, of a row-major [k][n] smem matrix.
template <int N>
struct BFrags {
  uint32_t big[N][2], small[N][2];
};

// d[n] += a·b[n] with 3×TF32 per n-tile: a_small·b_big + a_big·b_small + a_big·b_big (the
// dropped a_small·b_small is 2^-20 relative), term by term across the n-tiles so that
// consecutive MMAs are independent.
template <int N>
__device__ __forceinline__ void Mma3xTf32(float* d, int n_live, const uint32_t (&ab)[4],
                                          const uint32_t (&as)[4], const BFrags<N>& b) {
#pragma unroll
  for (int n = 0; n < N; ++n) {
    if (n < n_live) MmaTf32(d + 4 * n, as, b.big[n]);
  }
#pragma unroll
  for (int n = 0; n < N; ++n) {
    if (n < n_live) MmaTf32(d + 4 * n, ab, b.small[n]);
  }
#pragma unroll
  for (int n = 0; n < N; ++n) {
    if (n < n_live) MmaTf32(d + 4 * n, ab, b.big[n]);
  }
}

// 3×TF32 tensor cores (mma.sync m16n8k8). Warp w owns the 16-row m-tile mt = w % 4 and the
// 64-column half nh = w / 4 of a [C×D] result (8 n-tiles; element e = 4n + i of the C fragment:
// row 16·mt + g + 8·(i / 2), column 64·nh + 8·n + 2·tig + i % 2, g = lane / 4, tig = lane % 4),
// and the 32 columns 32·nh.. of the [C×C] one, of which it skips the n-tiles right of its rows.
struct Tf32x3Math {
  // Row strides ≡ 4 or 8 (mod 32) make the fragment loads bank-conflict free.
  static constexpr int kWs = kD + 8, kXs = kD + 4, kKts = kC + 8, kYs = kD + 8, kAs = kC + 4;
  static constexpr int kRows = 2;
  using Smem = SolveSmem<Tf32x3Math>;
  int mt, nh, g, tig;
  int nq;  // n-tiles of the [C×C] result this warp computes (warp-uniform)
  __device__ explicit Tf32x3Math(int tid)
      : mt((tid >> 5) & 3), nh(tid >> 7), g((tid & 31) >> 2), tig(tid & 3) {
    const int last = (16 * mt + 15 - 32 * nh) / 8;  // rightmost n-tile with a column ≤ a row
    nq = 16 * mt + 15 < 32 * nh ? 0 : (last < 3 ? last + 1 : 4);
  }
  __device__ int Row(int rr) const { return 16 * mt + g + 8 * rr; }
  __device__ static constexpr int Slot(int e) { return (e & 3) >> 1; }
  __device__ int ColOf(int e) const { return 64 * nh + 8 * (e >> 2) + 2 * tig + (e & 1); }

  __device__ void Load(const float* base, int stride, float (&v)[32]) const {
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float2 t =
            *reinterpret_cast<const float2*>(base + Row(rr) * stride + 64 * nh + 8 * n + 2 * tig);
        v[4 * n + 2 * rr] = t.x;
        v[4 * n + 2 * rr + 1] = t.y;
      }
    }
  }
  __device__ void Store(float* base, int64_t stride, const float (&v)[32], int rows = kC,
                        float mul = 1.0f) const {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      if (Row(rr) >= rows) continue;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        *reinterpret_cast<float2*>(base + Row(rr) * stride + 64 * nh + 8 * n + 2 * tig) =
            make_float2(mul * v[4 * n + 2 * rr], mul * v[4 * n + 2 * rr + 1]);
      }
    }
  }

  // The A operand (rows 16·mt.., columns k0..k0+7) of a row-major smem matrix, split.
  __device__ void LoadA(const float* base, int stride, int k0, uint32_t (&big)[4],
                        uint32_t (&small)[4]) const {
    const float* r0 = base + Row(0) * stride + k0 + tig;
    const float* r1 = base + Row(1) * stride + k0 + tig;
    SplitTf32(r0[0], big[0], small[0]);
    SplitTf32(r1[0], big[1], small[1]);
    SplitTf32(r0[4], big[2], small[2]);
    SplitTf32(r1[4], big[3], small[3]);
  }
  // B operands (rows k0..k0+7, columns n0 + 8·n..) of a row-major [k][n] smem matrix, split;
  // only the first n_live n-tiles are read.
  template <int N>
  __device__ void LoadB(const float* base, int stride, int k0, int n0, int n_live,
                        BFrags<N>& b) const {
#pragma unroll
    for (int n = 0; n < N; ++n) {
      if (n >= n_live) break;
      const float* p = base + (k0 + tig) * stride + n0 + 8 * n + g;
      SplitTf32(p[0], b.big[n][0], b.small[n][0]);
      SplitTf32(p[4 * stride], b.big[n][1], b.small[n][1]);
    }
  }

  __device__ void Products(const Smem& sm, float (&p)[32], float (&q)[16]) const {
#pragma unroll
    for (int i = 0; i < 32; ++i) p[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; ++i) q[i] = 0.0f;
#pragma unroll 1
    for (int k0 = 0; k0 < kD; k0 += 8) {
      uint32_t ab[4], as[4];
      LoadA(sm.x, kXs, k0, ab, as);
      BFrags<8> bw;
      LoadB(sm.w, kWs, k0, 64 * nh, 8, bw);
      BFrags<4> bk;
      LoadB(sm.kt, kKts, k0, 32 * nh, nq, bk);
      Mma3xTf32(p, 8, ab, as, bw);
      Mma3xTf32(q, nq, ab, as, bk);
    }
  }

  __device__ void Apply(Smem& sm, float (&p)[32]) const {
    float q[16];
    Products(sm, p, q);
    const float e0 = sm.eg[Row(0)], e1 = sm.eg[Row(1)];
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      p[4 * n] *= e0;
      p[4 * n + 1] *= e0;
      p[4 * n + 2] *= e1;
      p[4 * n + 3] *= e1;
    }
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      if (n >= nq) break;
      const int col = 32 * nh + 8 * n + 2 * tig;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float2 mm = *reinterpret_cast<const float2*>(&sm.m[Row(rr) * kC + col]);
        *reinterpret_cast<float2*>(&sm.a[Row(rr) * kAs + col]) =
            make_float2(q[4 * n + 2 * rr] * mm.x, q[4 * n + 2 * rr + 1] * mm.y);
      }
    }
    __syncthreads();
    // Rows 16·mt.. need A's columns < 16·mt + 16 (A[t][s] = 0 for s > t), which the two warps
    // of this m-tile wrote.
#pragma unroll 1
    for (int k0 = 0; k0 < 16 * mt + 16; k0 += 8) {
      uint32_t ab[4], as[4];
      LoadA(sm.a, kAs, k0, ab, as);
      BFrags<8> by;
      LoadB(sm.y, kYs, k0, 64 * nh, 8, by);
      Mma3xTf32(p, 8, ab, as, by);
    }
  }

  __device__ void NormPrepass(Smem& sm) const {
    float p[32], q[16], k[32];
    Products(sm, p, q);
    Load(sm.y, kYs, k);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float part = 0.0f;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        part = fmaf(k[4 * n + 2 * rr], p[4 * n + 2 * rr], part);
        part = fmaf(k[4 * n + 2 * rr + 1], p[4 * n + 2 * rr + 1], part);
      }
      // The 4 lanes of a fragment row, then the two column halves through khk[nh].
      part += __shfl_xor_sync(kFullMask, part, 1);
      part += __shfl_xor_sync(kFullMask, part, 2);
      if (tig == 0) sm.khk[nh][Row(rr)] = part;
    }
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      if (n >= nq) break;
      const int col = 32 * nh + 8 * n + 2 * tig;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float a0 = q[4 * n + 2 * rr], a1 = q[4 * n + 2 * rr + 1];
        *reinterpret_cast<float2*>(&sm.a[Row(rr) * kAs + col]) = make_float2(a0 * a0, a1 * a1);
      }
    }
  }
};

// M and e from dec (all factors 1 when !decay). Threads 0..63 one column each, thread 64 e.
template <class Smem>
__device__ __forceinline__ void BuildDecay(Smem& sm, bool decay, int tid) {
  if (tid < kC) {
    const int s = tid;
    float p = 1.0f;
    for (int t = 0; t < kC; ++t) {
      if (t > s && decay) p *= sm.dec[t];
      sm.m[t * kC + s] = t >= s ? p : 0.0f;
    }
  } else if (tid == kC) {
    float p = 1.0f;
    for (int t = 0; t < kC; ++t) {
      if (decay) p *= sm.dec[t];
      sm.eg[t] = p;
    }
  }
}

// Rows [tb, tb + lc) of a [T, H, D] tensor (head h) into smem rows (and columns of dst_t), zeros
// past lc.
__device__ __forceinline__ void LoadRows(float* dst, int stride, float* dst_t, int stride_t,
                                         const float* src, int64_t tb, int lc, int H, int h,
                                         int tid) {
  for (int f = tid; f < kC * (kD / 4); f += kSolveThreads) {
    const int s = f / (kD / 4), i = 4 * (f % (kD / 4));
    const float4 val =
        s < lc ? Ld4(src + ((tb + s) * H + h) * kD + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    St4(dst + s * stride + i, val);
    if (dst_t != nullptr) {
      dst_t[(i + 0) * stride_t + s] = val.x;
      dst_t[(i + 1) * stride_t + s] = val.y;
      dst_t[(i + 2) * stride_t + s] = val.z;
      dst_t[(i + 3) * stride_t + s] = val.w;
    }
  }
}

// A [D×D] state from scratch into smem rows of `stride` floats.
__device__ __forceinline__ void LoadState(float* dst, int stride, const float* src, int tid) {
  for (int f = tid; f < kD * kD / 4; f += kSolveThreads) {
    const int r = f / (kD / 4), i = 4 * (f % (kD / 4));
    St4(dst + r * stride + i, Ld4(src + r * kD + i));
  }
}

template <class Math>
__global__ void __launch_bounds__(kSolveThreads, 1) GkaChunkSolveKernel(const ChunkArgs a) {
  PdlEnter();
  using Smem = SolveSmem<Math>;
  extern __shared__ __align__(16) unsigned char solve_smem_raw[];
  Smem& sm = *reinterpret_cast<Smem*>(solve_smem_raw);
  const int cw = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  if (cw >= WindowChunks(a, b)) return;
  const int tid = threadIdx.x, lane = tid & 31;
  const Math mth(tid);
  const int base = WindowBase(a, b, lane);
  const int c = a.c0 + cw;
  const int len = a.cu[b + 1] - a.cu[b];
  const int64_t tb = a.cu[b] + static_cast<int64_t>(c) * kC;
  const int lc = min(kC, len - c * kC);
  const float* bnd = a.bounds + (static_cast<int64_t>(base + cw) * a.H + h) * 2 * kD * kD;
  const int n_iter = a.num_iter[b];

  LoadState(sm.w, Math::kWs, bnd, tid);
  LoadRows(sm.y, Math::kYs, sm.kt, Math::kKts, a.k, tb, lc, a.H, h, tid);
  if (tid < kC) {
    const bool in = tid < lc;
    sm.dec[tid] = in ? expf(a.g[(tb + tid) * a.H + h]) : 1.0f;
    sm.alpha[tid] = in ? a.alpha[(tb + tid) * a.H + h] : 0.0f;
  }
  float q[32];
#pragma unroll
  for (int e = 0; e < 32; ++e) {
    const int t = mth.Row(Math::Slot(e));
    q[e] = t < lc ? a.q[((tb + t) * a.H + h) * kD + mth.ColOf(e)] : 0.0f;
  }
  __syncthreads();
  BuildDecay(sm, a.decay_kk, tid);
  __syncthreads();

  if (n_iter > 0) {
    // Norm pre-pass with X = K̃ (see the formula at the top).
    for (int f = tid; f < kC * kD / 4; f += kSolveThreads) {
      const int s = f / (kD / 4), i = 4 * (f % (kD / 4));
      St4(&sm.x[s * Math::kXs + i], Ld4(&sm.y[s * Math::kYs + i]));
    }
    __syncthreads();
    mth.NormPrepass(sm);
    float h0sq = 0.0f;
    for (int f = tid; f < kD * kD; f += kSolveThreads) {
      const float w = sm.w[(f / kD) * Math::kWs + f % kD];
      h0sq = fmaf(w, w, h0sq);
    }
    h0sq = BlockSum(h0sq, sm.red);  // also publishes khk and a
    {
      // Four lanes per row t: Σ_s M[t,s]·(Σ_r (k̃_s·k̃_r)² M[t,r]) and Σ_s M[t,s]·khk_s; the
      // pre-pass may fill only a's lower triangle, so (s, r) is read as (max, min).
      const int t = tid >> 2, part = tid & 3;
      float s3 = 0.0f, s2 = 0.0f;
      for (int s = part; s <= t; s += 4) {
        float inner = 0.0f;
        for (int r = 0; r <= t; ++r) {
          const float kk = r <= s ? sm.a[s * Math::kAs + r] : sm.a[r * Math::kAs + s];
          inner = fmaf(kk, sm.m[t * kC + r], inner);
        }
        const float mts = sm.m[t * kC + s];
        s3 = fmaf(mts, inner, s3);
        s2 = fmaf(mts, sm.khk[0][s] + sm.khk[1][s], s2);
      }
      s3 += __shfl_xor_sync(kFullMask, s3, 1);
      s3 += __shfl_xor_sync(kFullMask, s3, 2);
      s2 += __shfl_xor_sync(kFullMask, s2, 1);
      s2 += __shfl_xor_sync(kFullMask, s2, 2);
      if (part == 0) {
        const float e = sm.eg[t];
        const float fro = sqrtf(fmaxf(e * e * h0sq + 2.0f * e * s2 + s3, 0.0f));
        // fro = 0 (every key so far zero): step 0 keeps x = 0, as the sequential kernel does.
        float lam = 0.0f, step = 0.0f, r4 = 0.0f;
        if (fro > 0.0f) {
          lam = a.ridge * fro;
          step = 2.0f / (2.0f * lam + fro);
          const float rho = fro / (2.0f * lam + fro) / 2.0f;
          r4 = rho * rho;
        }
        sm.lam[t] = lam;
        sm.step[t] = step;
        sm.r4[t] = r4;
      }
    }
    __syncthreads();

    float lam[Math::kRows], step[Math::kRows], r4[Math::kRows], omega[Math::kRows];
#pragma unroll
    for (int rr = 0; rr < Math::kRows; ++rr) {
      const int t = mth.Row(rr);
      lam[rr] = sm.lam[t];
      step[rr] = sm.step[t];
      r4[rr] = sm.r4[t];
      omega[rr] = 2.0f;
    }
    float x[32], xprev[32];
#pragma unroll
    for (int e = 0; e < 32; ++e) {
      x[e] = step[Math::Slot(e)] * q[e];
      xprev[e] = 0.0f;
    }
    mth.Store(sm.x, Math::kXs, x);
    __syncthreads();
    for (int it = 0; it < n_iter; ++it) {
      float hx[32];
      mth.Apply(sm, hx);
      mth.Load(sm.x, Math::kXs, x);  // own elements: every reader passed Apply's barrier
#pragma unroll
      for (int rr = 0; rr < Math::kRows; ++rr) omega[rr] = 1.0f / (1.0f - r4[rr] * omega[rr]);
#pragma unroll
      for (int e = 0; e < 32; ++e) {
        const int rr = Math::Slot(e);
        const float res = hx[e] + lam[rr] * x[e] - q[e];
        const float xn = omega[rr] * (x[e] - step[rr] * res) + (1.0f - omega[rr]) * xprev[e];
        xprev[e] = x[e];
        x[e] = xn;
      }
      mth.Store(sm.x, Math::kXs, x);
      __syncthreads();
    }
#pragma unroll
    for (int e = 0; e < 32; ++e) {
      const float al = sm.alpha[mth.Row(Math::Slot(e))];
      x[e] = q[e] + al * (x[e] - q[e]);
    }
    mth.Store(sm.x, Math::kXs, x);
  } else {
    mth.Store(sm.x, Math::kXs, q);  // num_iter 0: q_mix = q̂
  }
  __syncthreads();  // the solve's readers of W, Y, M, A are done

  // Readout: o = scale·(diag(e)·Q_mix·S0 + ((Q_mix·K̃ᵀ) ∘ M)·Ṽ) with h_kv's decay.
  LoadState(sm.w, Math::kWs, bnd + kD * kD, tid);
  LoadRows(sm.y, Math::kYs, nullptr, 0, a.v, tb, lc, a.H, h, tid);
  BuildDecay(sm, true, tid);
  __syncthreads();
  float o[32];
  mth.Apply(sm, o);
  mth.Store(a.out + (tb * a.H + h) * kD, static_cast<int64_t>(a.H) * kD, o, lc, a.scale);
}

}  // namespace

// ---- host --------------------------------------------------------------------------------

bool GkaCoreChunkedSupported(int64_t head_dim) { return head_dim == kD; }

namespace {

template <class Math>
absl::Status LaunchChunked(const CudaContext& ctx, ChunkArgs args, int max_chunks, int64_t H,
                           int64_t B) {
  constexpr size_t scan_smem = sizeof(ScanSmem);
  constexpr size_t solve_smem = sizeof(SolveSmem<Math>);
  // Per launch (cheap, host-side): the attribute is per device, and a process may drive several.
  GKA_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(GkaChunkScanKernel,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(scan_smem)));
  GKA_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(GkaChunkSolveKernel<Math>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(solve_smem)));
  const int W = args.W;
  for (int c0 = 0; c0 < max_chunks; c0 += W) {
    args.c0 = c0;
    const int w_here = std::min(W, max_chunks - c0);
    Launch(GkaChunkScanKernel, dim3(2 * kScanTiles, H, B), kScanThreads, scan_smem, ctx.stream(),
           args);
    GKA_CUDA_RETURN_IF_LAUNCH_ERROR("GkaChunkScanKernel");
    Launch(GkaChunkSolveKernel<Math>, dim3(w_here, H, B), kSolveThreads, solve_smem, ctx.stream(),
           args);
    GKA_CUDA_RETURN_IF_LAUNCH_ERROR("GkaChunkSolveKernel");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status GkaCoreChunked(const CudaContext& ctx, const GkaCoreParams& p, int min_len,
                            bool tensor_cores) {
  const int64_t T = p.q.shape[0], H = p.q.shape[1];
  const int64_t B = p.num_seqs;
  const int max_chunks = (p.max_seqlen + kC - 1) / kC;
  const int64_t chunk_bytes = H * 2 * kD * kD * static_cast<int64_t>(sizeof(float));
  // At most T/C + B chunks exist in all (each sequence's last one may be partial); a window of
  // W chunk indices holds at most B·W of them.
  const int64_t total_bound = T / kC + B;
  int W = max_chunks;
  if (total_bound * chunk_bytes > kScratchBudgetBytes) {
    W = static_cast<int>(
        std::clamp<int64_t>(kScratchBudgetBytes / (B * chunk_bytes), 1, max_chunks));
  }
  const int64_t slots = std::min<int64_t>(total_bound, B * W);
  GKA_ASSIGN_OR_RETURN(void* scratch, ctx.Scratch(static_cast<size_t>(slots * chunk_bytes)));
  const ChunkArgs args{.q = p.q.data<float>(),
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
                       .bounds = static_cast<float*>(scratch),
                       .H = static_cast<int>(H),
                       .min_len = min_len,
                       .c0 = 0,
                       .W = W,
                       .ridge = p.ridge_ratio,
                       .scale = p.scale,
                       .decay_kk = p.decay_kk};
  if (tensor_cores) return LaunchChunked<Tf32x3Math>(ctx, args, max_chunks, H, B);
  return LaunchChunked<Fp32Math>(ctx, args, max_chunks, H, B);
}

}  // namespace gka::kernels::cuda
