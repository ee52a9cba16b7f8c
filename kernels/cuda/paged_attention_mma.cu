// BF16 paged GQA attention on tensor cores (mma.sync m16n8k16, fp32 accumulate), D = 128.
//
// One CTA (4 warps) per (sequence, KV head, tile of query rows, KV split). A query "row" is a
// (token, head-of-the-group) pair, rows = tokens × G (G = Hq/Hkv), so the G query heads that
// share a KV head read each K/V tile once. K/V tiles of 64 keys are gathered through the page
// table into shared memory with cp.async (double buffered; keys past the end are zero-filled so
// poisoned pages never reach the math). Two layouts of the 4 warps:
//   prefill (kRowsSplit): 64 rows per CTA, each warp owns 16 rows and sweeps all keys of a
//     tile (FlashAttention-2: S = QKᵀ, online softmax in fp32 registers, O += PV);
//   decode (kKeysSplit): 16 rows per CTA (one token × G heads), the 4 warps split each 64-key
//     tile 4 ways and merge their softmax states at the end.
// Long contexts are split over KV (flash-decoding): each split writes fp32 partials (row max,
// row sum, unnormalised O) and a combine kernel merges them. Softmax runs in the log2 domain.
//
// Roofline: decode reads the whole visible KV once, B·ctx·Hkv·D·2·2 bytes (K and V bf16), and
// does 4·ctx·Hq·D FLOPs per sequence — ~8 FLOPs per byte, far under the tensor-core rate, so it
// is bandwidth bound (target ≥ 80% of copy bandwidth). Prefill does ~2·T²·Hq·D FLOPs per
// sequence (causal) against T·Hkv·D·4 bytes per pass: compute bound on the bf16 mma rate.
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <type_traits>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr int kD = 128;
constexpr int kLds = kD + 8;  // padded smem row (272 B): ldmatrix rows hit distinct banks
constexpr int kKeyTile = 64;
constexpr int kThreads = 128;
constexpr float kNegInf = -INFINITY;
constexpr int kPageCache = 512;  // page-table entries of one split kept in shared memory

enum class Layout { kRowsSplit, kKeysSplit };

struct MmaArgs {
  const bf16* q;  // [T, Hq, D], tokens q_stride elements apart
  int64_t q_stride;
  bf16* out;            // [T, Hq, D]
  const bf16* k_pages;  // [pages, page_size, Hkv, D]
  const bf16* v_pages;
  const int32_t* page_table;
  const int32_t* cu_q;
  const int32_t* context_lens;
  float* part_m;  // [splits, T, Hq] (log2 domain), null when splits == 1
  float* part_l;  // [splits, T, Hq]
  float* part_o;  // [splits, T, Hq, D]
  int64_t total_tokens;
  int max_pages;
  int hq, hkv, page_size;
  int num_splits;
  int keys_per_split;  // multiple of kKeyTile
  int num_row_tiles;   // grid.y
  float scale_log2;    // scale · log2(e)
};

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
// 16-byte async copy; src_bytes = 0 zero-fills the destination without reading.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

template <Layout L>
struct Cfg {
  static constexpr int kRows = L == Layout::kRowsSplit ? 64 : 16;
  static constexpr int kWarpKeys = L == Layout::kRowsSplit ? kKeyTile : kKeyTile / 4;
  static constexpr int kNt = kWarpKeys / 8;  // n-tiles of 8 keys per warp per tile
  static constexpr size_t kSmemBytes =
      sizeof(bf16) * (kRows * kLds + 2 * 2 * kKeyTile * kLds);  // Q, then K/V × 2 stages
};

template <Layout L, int G>
__global__ void __launch_bounds__(kThreads) PagedAttentionMmaKernel(const MmaArgs a) {
  PdlEnter();
  using C = Cfg<L>;
  constexpr int kTok = C::kRows / G;  // query tokens per CTA
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* KVs = Qs + C::kRows * kLds;  // stage s: K at KVs + s·2·tile, V right after
  auto Ks = [&](int s) { return KVs + s * 2 * kKeyTile * kLds; };
  auto Vs = [&](int s) { return KVs + s * 2 * kKeyTile * kLds + kKeyTile * kLds; };

  const int split = blockIdx.x;
  const int tile = a.num_row_tiles - 1 - static_cast<int>(blockIdx.y);  // long tiles first
  const int b = blockIdx.z / a.hkv, hk = blockIdx.z % a.hkv;
  const int q0 = a.cu_q[b];
  const int q_len = a.cu_q[b + 1] - q0;
  const int tok0 = tile * kTok;
  if (tok0 >= q_len) return;
  const int ctx_len = a.context_lens[b];
  const int p0 = ctx_len - q_len;  // position of the sequence's first new query
  const int tok_end = min(q_len, tok0 + kTok);
  const int kv_begin = split * a.keys_per_split;
  // The last split runs to the causal bound even if max_context_len undersized the launch.
  const int split_end = split == a.num_splits - 1 ? INT_MAX : (split + 1) * a.keys_per_split;
  const int kv_end = min(split_end, p0 + tok_end);  // causal bound
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tig = lane & 3;

  // The split's slice of the page table, staged once, keeps the per-tile address math off the
  // global-load latency path (falls back to global reads for very long splits).
  __shared__ int page_cache[kPageCache];
  const int first_page = kv_begin / a.page_size;
  const int num_pages_split = kv_end > kv_begin ? (kv_end - 1) / a.page_size - first_page + 1 : 0;
  const bool cached_pages = num_pages_split <= kPageCache;
  const int32_t* table = a.page_table + static_cast<int64_t>(b) * a.max_pages;
  if (cached_pages) {
    for (int i = tid; i < num_pages_split; i += kThreads) page_cache[i] = table[first_page + i];
  }

  // Q tile → shared memory (rows past the sequence are zeros).
  for (int c = tid; c < C::kRows * (kD / 8); c += kThreads) {
    const int r = c / (kD / 8), part = c % (kD / 8);
    const int tok = tok0 + r / G, h = hk * G + r % G;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (tok < tok_end) {
      v = *reinterpret_cast<const uint4*>(a.q + static_cast<int64_t>(q0 + tok) * a.q_stride +
                                          static_cast<int64_t>(h) * kD + part * 8);
    }
    *reinterpret_cast<uint4*>(Qs + r * kLds + part * 8) = v;
  }

  const int64_t kv_row_stride = static_cast<int64_t>(a.hkv) * kD;  // elements between keys
  auto load_tile = [&](int stage, int base) {
    for (int c = tid; c < kKeyTile * (kD / 8); c += kThreads) {
      const int key = c / (kD / 8), part = c % (kD / 8);
      const int kabs = base + key;
      const bool valid = kabs < kv_end;
      int64_t off = 0;
      if (valid) {
        const int pi = kabs / a.page_size;
        const int page = cached_pages ? page_cache[pi - first_page] : table[pi];
        off = (static_cast<int64_t>(page) * a.page_size + kabs % a.page_size) * kv_row_stride +
              static_cast<int64_t>(hk) * kD + part * 8;
      }
      CpAsync16(Ks(stage) + key * kLds + part * 8, a.k_pages + off, valid ? 16 : 0);
      CpAsync16(Vs(stage) + key * kLds + part * 8, a.v_pages + off, valid ? 16 : 0);
    }
  };

  const int num_tiles = kv_end > kv_begin ? (kv_end - kv_begin + kKeyTile - 1) / kKeyTile : 0;
  __syncthreads();  // Q and the page cache visible
  if (num_tiles > 0) load_tile(0, kv_begin);
  CpAsyncCommit();

  // This warp's rows and their causal limits (position; -1 for padding rows).
  const int row_base = L == Layout::kRowsSplit ? warp * 16 : 0;
  const int key_off = L == Layout::kRowsSplit ? 0 : warp * C::kWarpKeys;
  int lim[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row_base + g + 8 * i;
    const int tok = tok0 + r / G;
    lim[i] = tok < tok_end ? p0 + tok : -1;
  }
  int warp_lim;  // the largest position among the warp's rows
  {
    const int r_last = row_base + 15;
    const int tok_last = min(tok0 + r_last / G, tok_end - 1);
    warp_lim = p0 + tok_last;
  }

  uint32_t qf[kD / 16][4];
#pragma unroll
  for (int ks = 0; ks < kD / 16; ++ks) {
    const int mi = lane >> 3;
    const int r = row_base + (lane & 7) + (mi & 1) * 8;
    LdMatrixX4(qf[ks], Qs + r * kLds + ks * 16 + (mi >> 1) * 8);
  }

  float acc[kD / 8][4];
#pragma unroll
  for (int i = 0; i < kD / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
  float m_run[2] = {kNegInf, kNegInf};
  float l_run[2] = {0.0f, 0.0f};

  for (int it = 0; it < num_tiles; ++it) {
    const int stage = it & 1;
    const int base = kv_begin + it * kKeyTile;
    if (it + 1 < num_tiles) load_tile(stage ^ 1, base + kKeyTile);
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();

    const int kbase = base + key_off;
    if (kbase <= warp_lim && kbase < kv_end) {
      const bf16* Kt = Ks(stage);
      const bf16* Vt = Vs(stage);
      float s[C::kNt][4];
#pragma unroll
      for (int nt = 0; nt < C::kNt; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) {
#pragma unroll
        for (int np = 0; np < C::kNt / 2; ++np) {
          uint32_t kb[4];
          const int mi = lane >> 3;
          const int key = key_off + np * 16 + (lane & 7) + (mi >> 1) * 8;
          LdMatrixX4(kb, Kt + key * kLds + ks * 16 + (mi & 1) * 8);
          Mma(s[2 * np], qf[ks], kb[0], kb[1]);
          Mma(s[2 * np + 1], qf[ks], kb[2], kb[3]);
        }
      }
      // Mask, scale into the log2 domain, online softmax.
      float mx[2] = {kNegInf, kNegInf};
#pragma unroll
      for (int nt = 0; nt < C::kNt; ++nt) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int key = kbase + nt * 8 + 2 * tig + (c & 1);
          const int i = c >> 1;
          const bool ok = key <= lim[i] && key < kv_end;
          s[nt][c] = ok ? s[nt][c] * a.scale_log2 : kNegInf;
          mx[i] = fmaxf(mx[i], s[nt][c]);
        }
      }
      float corr[2], mbase[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        const float m_new = fmaxf(m_run[i], mx[i]);
        corr[i] = m_new == kNegInf ? 1.0f : exp2f(m_run[i] - m_new);
        mbase[i] = m_new == kNegInf ? 0.0f : m_new;
        m_run[i] = m_new;
      }
      float lsum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int nt = 0; nt < C::kNt; ++nt) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int i = c >> 1;
          s[nt][c] = exp2f(s[nt][c] - mbase[i]);
          lsum[i] += s[nt][c];
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) l_run[i] = l_run[i] * corr[i] + lsum[i];
#pragma unroll
      for (int dn = 0; dn < kD / 8; ++dn) {
        acc[dn][0] *= corr[0];
        acc[dn][1] *= corr[0];
        acc[dn][2] *= corr[1];
        acc[dn][3] *= corr[1];
      }
      // O += P V.
#pragma unroll
      for (int j = 0; j < C::kNt / 2; ++j) {
        const uint32_t pa[4] = {
            PackBf16(s[2 * j][0], s[2 * j][1]), PackBf16(s[2 * j][2], s[2 * j][3]),
            PackBf16(s[2 * j + 1][0], s[2 * j + 1][1]), PackBf16(s[2 * j + 1][2], s[2 * j + 1][3])};
#pragma unroll
        for (int dp = 0; dp < kD / 16; ++dp) {
          uint32_t vb[4];
          const int mi = lane >> 3;
          const int key = key_off + j * 16 + (lane & 7) + (mi & 1) * 8;
          LdMatrixX4Trans(vb, Vt + key * kLds + dp * 16 + (mi >> 1) * 8);
          Mma(acc[2 * dp], pa, vb[0], vb[1]);
          Mma(acc[2 * dp + 1], pa, vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // everyone is done with this stage before it is refilled
  }
  CpAsyncWait<0>();

  // Row sums over the quad.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_run[i] += __shfl_xor_sync(0xffffffffu, l_run[i], 1);
    l_run[i] += __shfl_xor_sync(0xffffffffu, l_run[i], 2);
  }

  // Writes one row's result: final bf16 output, or the split's fp32 partial.
  auto emit = [&](int r, auto&& write_row) {
    const int tok = tok0 + r / G;
    if (tok >= tok_end) return;
    write_row(static_cast<int64_t>(q0 + tok) * a.hq + hk * G + r % G);
  };

  if constexpr (L == Layout::kRowsSplit) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = row_base + g + 8 * i;
      emit(r, [&](int64_t row) {
        if (a.num_splits == 1) {
          const float inv = l_run[i] > 0.0f ? 1.0f / l_run[i] : 0.0f;
#pragma unroll
          for (int dn = 0; dn < kD / 8; ++dn) {
            *reinterpret_cast<uint32_t*>(a.out + row * kD + dn * 8 + 2 * tig) =
                PackBf16(acc[dn][2 * i] * inv, acc[dn][2 * i + 1] * inv);
          }
        } else {
          const int64_t prow = static_cast<int64_t>(split) * a.total_tokens * a.hq + row;
          if (tig == 0) {
            a.part_m[prow] = m_run[i];
            a.part_l[prow] = l_run[i];
          }
#pragma unroll
          for (int dn = 0; dn < kD / 8; ++dn) {
            *reinterpret_cast<float2*>(a.part_o + prow * kD + dn * 8 + 2 * tig) =
                make_float2(acc[dn][2 * i], acc[dn][2 * i + 1]);
          }
        }
      });
    }
  } else {
    // Merge the four warps' states for the same 16 rows through shared memory (the K/V
    // buffers are free now).
    float* Ms = reinterpret_cast<float*>(KVs);  // [4][16]
    float* Ls = Ms + 4 * 16;                    // [4][16]
    float* Os = Ls + 4 * 16;                    // [4][16][kD + 4]
    constexpr int kOld = kD + 4;
    if (tig == 0) {
      Ms[warp * 16 + g] = m_run[0];
      Ms[warp * 16 + g + 8] = m_run[1];
      Ls[warp * 16 + g] = l_run[0];
      Ls[warp * 16 + g + 8] = l_run[1];
    }
#pragma unroll
    for (int dn = 0; dn < kD / 8; ++dn) {
      float* o0 = Os + (warp * 16 + g) * kOld + dn * 8 + 2 * tig;
      float* o1 = Os + (warp * 16 + g + 8) * kOld + dn * 8 + 2 * tig;
      o0[0] = acc[dn][0];
      o0[1] = acc[dn][1];
      o1[0] = acc[dn][2];
      o1[1] = acc[dn][3];
    }
    __syncthreads();
    // 128 threads: row = tid / 8, 16 dims each.
    const int r = tid / 8, d0 = (tid % 8) * 16;
    float M = kNegInf;
#pragma unroll
    for (int w = 0; w < 4; ++w) M = fmaxf(M, Ms[w * 16 + r]);
    float wt[4], Lsum = 0.0f;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      wt[w] = M == kNegInf ? 0.0f : exp2f(Ms[w * 16 + r] - M);
      Lsum += wt[w] * Ls[w * 16 + r];
    }
    float o[16];
#pragma unroll
    for (int d = 0; d < 16; ++d) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < 4; ++w) v += wt[w] * Os[(w * 16 + r) * kOld + d0 + d];
      o[d] = v;
    }
    emit(r, [&](int64_t row) {
      if (a.num_splits == 1) {
        const float inv = Lsum > 0.0f ? 1.0f / Lsum : 0.0f;
#pragma unroll
        for (int d = 0; d < 16; d += 2) {
          *reinterpret_cast<uint32_t*>(a.out + row * kD + d0 + d) =
              PackBf16(o[d] * inv, o[d + 1] * inv);
        }
      } else {
        const int64_t prow = static_cast<int64_t>(split) * a.total_tokens * a.hq + row;
        if (d0 == 0) {
          a.part_m[prow] = M;
          a.part_l[prow] = Lsum;
        }
#pragma unroll
        for (int d = 0; d < 16; d += 4) {
          *reinterpret_cast<float4*>(a.part_o + prow * kD + d0 + d) =
              make_float4(o[d], o[d + 1], o[d + 2], o[d + 3]);
        }
      }
    });
  }
}

// Merges the splits of one (token, head) row: one warp, four dims per lane.
__global__ void CombineSplitsKernel(const float* __restrict__ part_m,
                                    const float* __restrict__ part_l,
                                    const float* __restrict__ part_o, bf16* __restrict__ out,
                                    int64_t rows, int num_splits) {
  PdlEnter();
  const int64_t row = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float M = kNegInf;
  for (int s = 0; s < num_splits; ++s) M = fmaxf(M, part_m[s * rows + row]);
  float L = 0.0f;
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  if (M != kNegInf) {
    for (int s = 0; s < num_splits; ++s) {
      const float m = part_m[s * rows + row];
      if (m == kNegInf) continue;
      const float w = exp2f(m - M);
      L += w * part_l[s * rows + row];
      const float4 v = *reinterpret_cast<const float4*>(part_o + (s * rows + row) * kD + 4 * lane);
      o.x += w * v.x;
      o.y += w * v.y;
      o.z += w * v.z;
      o.w += w * v.w;
    }
  }
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  Store4(out + row * kD + 4 * lane, make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv));
}

// Calls fn(std::integral_constant<int, G>) for the supported group sizes.
template <typename F>
absl::Status WithGroup(int G, F&& fn) {
  switch (G) {
    case 1:
      return fn(std::integral_constant<int, 1>{});
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 4:
      return fn(std::integral_constant<int, 4>{});
    case 8:
      return fn(std::integral_constant<int, 8>{});
    case 16:
      return fn(std::integral_constant<int, 16>{});
    default:
      return absl::InternalError("PagedAttentionMma: unsupported group size");
  }
}

// Raises the kernel's shared-memory limit and returns how many CTAs fit on one SM.
template <Layout L, int G>
absl::StatusOr<int> Prepare() {
  const int smem = static_cast<int>(Cfg<L>::kSmemBytes);
  GKA_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(PagedAttentionMmaKernel<L, G>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int n = 0;
  GKA_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &n, PagedAttentionMmaKernel<L, G>, kThreads, smem));
  return std::max(n, 1);
}

// Decode: all CTAs have equal work, so pick the split count whose grid comes closest to a
// whole number of waves (a 2.1-wave grid ran at 79% of copy bandwidth where 1 full wave is
// the goal), charging each split its partials traffic (write + read of D + 2 floats per query
// row, against the KV bytes the split replaces).
int DecodeSplits(int64_t base_ctas, int64_t capacity, int max_ctx, int G) {
  int best = 1;
  double best_cost = 1e30;
  const int max_splits = std::max(1, std::min(256, (max_ctx + 127) / 128));
  for (int s = 1; s <= max_splits; ++s) {
    const double waves = static_cast<double>(base_ctas) * s / static_cast<double>(capacity);
    const double quantisation = std::ceil(waves) / waves;
    const double partials = s > 1 ? s * G * (kD + 2) * 4.0 * 2 / (max_ctx * kD * 2.0 * 2) : 0.0;
    const double cost = quantisation * (1.0 + partials);
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      best = s;
    }
  }
  return best;
}

}  // namespace

bool PagedAttentionMmaSupported(const PagedAttentionParams& p) {
  if (p.q.dtype != tensor::DType::kBF16 || p.k_pages.dtype != tensor::DType::kBF16) return false;
  if (p.q.shape[2] != kD) return false;
  const int64_t hq = p.q.shape[1], hkv = p.k_pages.shape[2];
  if (hkv == 0 || hq % hkv != 0) return false;
  const int64_t G = hq / hkv;
  if (G > 16 || 16 % G != 0) return false;
  // 16-byte loads of every q row (a strided q must keep them aligned) and cp.async from every
  // key row.
  if (p.q_row_stride % 8 != 0) return false;
  return reinterpret_cast<uintptr_t>(p.k_pages.ptr) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.v_pages.ptr) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.q.ptr) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.out.ptr) % 16 == 0;
}

absl::Status PagedAttentionMma(const CudaContext& ctx, const PagedAttentionParams& p) {
  const int64_t T = p.q.shape[0], hq = p.q.shape[1], hkv = p.k_pages.shape[2];
  const int G = static_cast<int>(hq / hkv);
  const bool decode = p.max_q_len <= 1;
  const int rows_per_cta = decode ? Cfg<Layout::kKeysSplit>::kRows : Cfg<Layout::kRowsSplit>::kRows;
  const int tok_per_cta = rows_per_cta / G;
  const int row_tiles = std::max(1, (p.max_q_len + tok_per_cta - 1) / tok_per_cta);
  if (row_tiles > 65535 || static_cast<int64_t>(p.num_seqs) * hkv > 65535) {
    return absl::InvalidArgumentError("PagedAttention: batch too large for one launch");
  }
  const int max_ctx = std::max(1, p.max_context_len);
  const int64_t base_ctas = static_cast<int64_t>(p.num_seqs) * hkv * row_tiles;
  int per_sm = 1;
  GKA_RETURN_IF_ERROR(WithGroup(G, [&](auto g) -> absl::Status {
    constexpr int kG = decltype(g)::value;
    absl::StatusOr<int> n =
        decode ? Prepare<Layout::kKeysSplit, kG>() : Prepare<Layout::kRowsSplit, kG>();
    if (!n.ok()) return n.status();
    per_sm = *n;
    return absl::OkStatus();
  }));
  int splits;
  if (decode) {
    splits = DecodeSplits(base_ctas, static_cast<int64_t>(ctx.num_sms()) * per_sm, max_ctx, G);
  } else {
    // Prefill CTAs differ in work (causal), so just fill the GPU a few times over; each split
    // keeps at least 256 keys.
    const int64_t target = static_cast<int64_t>(ctx.num_sms()) * per_sm * 2;
    splits = static_cast<int>(
        std::min<int64_t>((target + base_ctas - 1) / base_ctas, (max_ctx + 255) / 256));
  }
  splits = std::max(1, std::min(splits, 1024));
  int kps = (max_ctx + splits - 1) / splits;
  kps = (kps + kKeyTile - 1) / kKeyTile * kKeyTile;
  splits = (max_ctx + kps - 1) / kps;

  MmaArgs args{.q = p.q.data<bf16>(),
               .q_stride = p.q_row_stride == 0 ? hq * kD : p.q_row_stride,
               .out = p.out.data<bf16>(),
               .k_pages = p.k_pages.data<bf16>(),
               .v_pages = p.v_pages.data<bf16>(),
               .page_table = p.page_table,
               .cu_q = p.cu_q,
               .context_lens = p.context_lens,
               .part_m = nullptr,
               .part_l = nullptr,
               .part_o = nullptr,
               .total_tokens = T,
               .max_pages = p.max_pages_per_seq,
               .hq = static_cast<int>(hq),
               .hkv = static_cast<int>(hkv),
               .page_size = static_cast<int>(p.k_pages.shape[1]),
               .num_splits = splits,
               .keys_per_split = kps,
               .num_row_tiles = row_tiles,
               .scale_log2 = p.scale * 1.4426950408889634f};
  const int64_t rows = T * hq;
  if (splits > 1) {
    const size_t bytes = sizeof(float) * static_cast<size_t>(splits) * rows * (kD + 2);
    GKA_ASSIGN_OR_RETURN(void* scratch, ctx.Scratch(bytes));
    args.part_o = static_cast<float*>(scratch);
    args.part_m = args.part_o + static_cast<size_t>(splits) * rows * kD;
    args.part_l = args.part_m + static_cast<size_t>(splits) * rows;
  }
  const dim3 grid(splits, row_tiles, p.num_seqs * static_cast<int>(hkv));
  GKA_RETURN_IF_ERROR(WithGroup(G, [&](auto g) -> absl::Status {
    constexpr int kG = decltype(g)::value;
    const size_t smem_k = Cfg<Layout::kKeysSplit>::kSmemBytes;
    const size_t smem_r = Cfg<Layout::kRowsSplit>::kSmemBytes;
    if (decode) {
      Launch(PagedAttentionMmaKernel<Layout::kKeysSplit, kG>, grid, kThreads, smem_k, ctx.stream(),
             args);
    } else {
      Launch(PagedAttentionMmaKernel<Layout::kRowsSplit, kG>, grid, kThreads, smem_r, ctx.stream(),
             args);
    }
    GKA_CUDA_RETURN_IF_LAUNCH_ERROR("PagedAttentionMmaKernel");
    return absl::OkStatus();
  }));
  if (splits > 1) {
    constexpr int kWarps = 8;
    Launch(CombineSplitsKernel, static_cast<unsigned>((rows + kWarps - 1) / kWarps), kWarps * 32, 0,
           ctx.stream(), args.part_m, args.part_l, args.part_o, args.out, rows, splits);
    GKA_CUDA_RETURN_IF_LAUNCH_ERROR("CombineSplitsKernel");
  }
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
