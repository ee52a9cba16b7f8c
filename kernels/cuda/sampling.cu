// Token sampling on the GPU: penalties → temperature → top-k → top-p → min-p → seeded draw,
// the same function as the CPU reference (kernels/cpu/sampling.cc):
//   s_i = l_i / T (NaN → -inf), w_i = exp(s_i − max) in fp64; top-k keeps the k first in
//   (s desc, id asc) order; top-p the shortest such prefix of the survivors with mass ≥ p;
//   min-p drops w_i < min_p; the token is the first kept id whose running weight (ascending id)
//   exceeds u·(kept mass), u = Uniform(seed, step) (SplitMix64, below); greedy is the lowest-id
//   argmax; logprob is the log-softmax of s over ids < vocab_limit before the filters; the
//   num_top_logprobs alternatives are the first ids in (s desc, id asc) order with that
//   log-softmax.
//
// One 1024-thread CTA per sequence. The filters are cuts in the sorted order, found without
// sorting: the cut value by a 32-step bisection over the order-preserving integer image of s
// (each step one counting or fp64-mass pass over the row), then, inside the tie group at that
// value, the cut id by an 18-step bisection on ids. The draw is a block scan of fp64 chunk
// masses in id order. Sums run in a different order than the CPU's, so a cut or a draw can
// differ only when u or p falls within ~1e-16 relative of a boundary. Alternatives are k ≤ 20
// rounds of a block arg-max over the ids after the previous round's winner in that order
// (exact: comparisons only, so the ids equal the CPU's; logprobs differ by the sum order).
//
// Roofline: greedy reads B·V·4 bytes once (plus one fp64 exp per logit for the logprob);
// top-k / top-p add up to ~100 passes over each row, mostly L2 hits; k alternatives add k
// passes (20 at most: 20·V·4 bytes, ~12 MB for V = 152K, from L2). Sampling costs are
// negligible next to a decode step's GEMMs at these sizes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr int kThreads = 1024;

struct RowParams {
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
  float repetition_penalty;
  float presence_penalty;
  float frequency_penalty;
  int32_t pen_begin;  // range in the (token, count) penalty list
  int32_t pen_end;
  int32_t num_top;  // alternatives to report, 0..kMaxTopLogprobs
  uint64_t seed;
  uint64_t step;
};

__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
// The CPU reference's Uniform(seed, step): 53 random bits in [0, 1).
__device__ __forceinline__ double Uniform(uint64_t seed, uint64_t step) {
  const uint64_t z = SplitMix64(seed ^ SplitMix64(step ^ 0x5851F42D4C957F2Dull));
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

// Order-preserving map of a non-NaN float to uint32 (larger float → larger key).
__device__ __forceinline__ uint32_t OrderedKey(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

template <typename V>
__device__ V BlockSumT(V v, V* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  V t = lane < kThreads / 32 ? shared[lane] : V(0);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  __syncthreads();
  return t;
}

struct ArgMax {
  float v;
  int id;
};
__device__ __forceinline__ ArgMax Better(ArgMax a, ArgMax b) {
  return (b.v > a.v || (b.v == a.v && b.id < a.id)) ? b : a;
}
__device__ ArgMax BlockArgMax(ArgMax x, ArgMax* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    x = Better(x,
               ArgMax{__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.id, o)});
  }
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  ArgMax t = lane < kThreads / 32 ? shared[lane] : ArgMax{-INFINITY, 0x7fffffff};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    t = Better(t,
               ArgMax{__shfl_xor_sync(0xffffffffu, t.v, o), __shfl_xor_sync(0xffffffffu, t.id, o)});
  }
  __syncthreads();
  return t;
}

// A cut in (s desc, id asc) order: keeps key > k_cut, and key == k_cut with id <= id_cut.
struct Cut {
  uint32_t key = 0;
  int id = 0x7fffffff;
  __device__ bool Keeps(uint32_t k, int i) const { return k > key || (k == key && i <= id); }
};

struct Row {
  const float* logits;
  int n;
  float inv_t;
  double max_s;
  __device__ float S(int i) const {
    const float l = logits[i];
    return l != l ? -INFINITY : l * inv_t;
  }
};

__global__ void __launch_bounds__(kThreads)
    SampleKernel(float* logits, int64_t V, int n, const RowParams* __restrict__ rows,
                 const int32_t* __restrict__ pen_tokens, const int32_t* __restrict__ pen_counts,
                 int32_t* __restrict__ out_ids, float* __restrict__ out_logprobs,
                 int32_t* __restrict__ top_ids, float* __restrict__ top_logprobs) {
  PdlEnter();
  __shared__ float red_f[32];
  __shared__ double red_d[32];
  __shared__ ArgMax red_am[32];
  __shared__ double scan[kThreads];
  __shared__ int chosen;
  const int b = blockIdx.x, tid = threadIdx.x;
  const RowParams rp = rows[b];
  float* lrow = logits + static_cast<int64_t>(b) * V;
  // [kMaxTopLogprobs] of this row, or null when no row asked for alternatives. Unreported
  // entries read -1 / -inf; the block arg-maxes below order these stores before any round's.
  int32_t* row_top_ids = top_ids ? top_ids + static_cast<int64_t>(b) * kMaxTopLogprobs : nullptr;
  float* row_top_lps =
      top_logprobs ? top_logprobs + static_cast<int64_t>(b) * kMaxTopLogprobs : nullptr;
  if (row_top_ids != nullptr && tid < kMaxTopLogprobs) {
    row_top_ids[tid] = -1;
    row_top_lps[tid] = -INFINITY;
  }

  // Penalties on the raw logits, once per distinct history token (CPU order and rounding).
  for (int i = rp.pen_begin + tid; i < rp.pen_end; i += kThreads) {
    float& l = lrow[pen_tokens[i]];
    float v = l;
    if (rp.repetition_penalty != 1.0f) {
      v = v > 0.0f ? v / rp.repetition_penalty : v * rp.repetition_penalty;
    }
    l = v - rp.frequency_penalty * static_cast<float>(pen_counts[i]) - rp.presence_penalty;
  }
  __syncthreads();

  const bool greedy = rp.temperature == 0.0f;
  Row row{lrow, n, greedy ? 1.0f : 1.0f / rp.temperature, 0.0};
  ArgMax best{-INFINITY, 0x7fffffff};
  for (int i = tid; i < n; i += kThreads) best = Better(best, ArgMax{row.S(i), i});
  best = BlockArgMax(best, red_am);
  // The k most likely ids, one block arg-max per rank over the ids that come after the last
  // winner in (s desc, id asc) order. Called by every thread (the arg-max synchronises).
  auto report_top = [&](auto&& logprob_of) {
    if (row_top_ids == nullptr) return;
    float last_v = INFINITY;
    int last_id = -1;
    for (int j = 0; j < rp.num_top; ++j) {
      ArgMax m{-INFINITY, 0x7fffffff};
      for (int i = tid; i < n; i += kThreads) {
        const float v = row.S(i);
        if (v < last_v || (v == last_v && i > last_id)) m = Better(m, ArgMax{v, i});
      }
      m = BlockArgMax(m, red_am);
      if (m.id == 0x7fffffff) break;  // fewer ids than k (the same answer in every thread)
      if (tid == 0) {
        row_top_ids[j] = m.id;
        row_top_lps[j] = logprob_of(m.id);
      }
      last_v = m.v;
      last_id = m.id;
    }
  };
  if (best.v == -INFINITY) {
    report_top([](int) { return -INFINITY; });
    if (tid == 0) {
      out_ids[b] = 0;
      out_logprobs[b] = -INFINITY;
    }
    return;
  }
  row.max_s = best.v;
  auto weight = [&](int i) { return exp(static_cast<double>(row.S(i)) - row.max_s); };
  double total = 0.0;
  for (int i = tid; i < n; i += kThreads) total += weight(i);
  total = BlockSumT(total, red_d);
  const double log_total = log(total);
  auto logprob = [&](int id) {
    return static_cast<float>(static_cast<double>(row.S(id)) - row.max_s - log_total);
  };
  report_top(logprob);
  if (greedy) {
    if (tid == 0) {
      out_ids[b] = best.id;
      out_logprobs[b] = logprob(best.id);
    }
    return;
  }

  // Counting (as float: exact below 2^24) and fp64 mass over tokens passing `pred`.
  auto count_if = [&](auto&& pred) {
    float c = 0.0f;
    for (int i = tid; i < n; i += kThreads) c += pred(OrderedKey(row.S(i)), i) ? 1.0f : 0.0f;
    return BlockSumT(c, red_f);
  };
  auto mass_if = [&](auto&& pred) {
    double m = 0.0;
    for (int i = tid; i < n; i += kThreads) {
      if (pred(OrderedKey(row.S(i)), i)) m += weight(i);
    }
    return BlockSumT(m, red_d);
  };
  // Largest key K with f(K) true, f monotone (true at lo).
  auto bisect_key = [&](uint32_t lo, auto&& f) {
    uint32_t hi = 0xffffffffu;
    while (lo < hi) {
      const uint32_t mid = static_cast<uint32_t>((uint64_t{lo} + hi + 1) / 2);
      if (f(mid))
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo;
  };
  // Smallest id x with g(x) true, g monotone (true at n - 1).
  auto bisect_id = [&](auto&& g) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (g(mid))
        hi = mid;
      else
        lo = mid + 1;
    }
    return lo;
  };

  Cut top_k, top_p;  // default cuts keep everything
  if (rp.top_k > 0 && rp.top_k < n) {
    const float k = static_cast<float>(rp.top_k);
    top_k.key = bisect_key(
        0, [&](uint32_t K) { return count_if([&](uint32_t key, int) { return key >= K; }) >= k; });
    const float above = count_if([&](uint32_t key, int) { return key > top_k.key; });
    const float need = k - above;  // ties at the cut value, lowest ids first
    top_k.id = bisect_id([&](int x) {
      return count_if([&](uint32_t key, int i) { return key == top_k.key && i <= x; }) >= need;
    });
  }
  if (rp.top_p < 1.0f) {
    const double kept = mass_if([&](uint32_t key, int i) { return top_k.Keeps(key, i); });
    const double target = static_cast<double>(rp.top_p) * kept;
    top_p.key = bisect_key(0, [&](uint32_t K) {
      return mass_if([&](uint32_t key, int i) { return key >= K && top_k.Keeps(key, i); }) >=
             target;
    });
    const double above =
        mass_if([&](uint32_t key, int i) { return key > top_p.key && top_k.Keeps(key, i); });
    // Every tie at the cut value has the same weight; take them in id order until the
    // running mass reaches the target (at least one: the crossing token is kept).
    top_p.id = bisect_id([&](int x) {
      return mass_if([&](uint32_t key, int i) {
               return key == top_p.key && i <= x && top_k.Keeps(key, i);
             }) + above >=
             target;
    });
  }
  const double min_p = rp.min_p;
  auto keep = [&](int i) {
    const uint32_t key = OrderedKey(row.S(i));
    if (!top_k.Keeps(key, i) || !top_p.Keeps(key, i)) return 0.0;
    const double w = weight(i);
    return (min_p > 0.0 && w < min_p) ? 0.0 : w;
  };

  // Inverse CDF in id order: each thread owns a contiguous chunk of ids.
  const int chunk = (n + kThreads - 1) / kThreads;
  const int i0 = tid * chunk, i1 = min(n, i0 + chunk);
  double local = 0.0;
  for (int i = i0; i < i1; ++i) local += keep(i);
  scan[tid] = local;
  __syncthreads();
  for (int o = 1; o < kThreads; o <<= 1) {  // inclusive Hillis-Steele scan
    const double add = tid >= o ? scan[tid - o] : 0.0;
    __syncthreads();
    scan[tid] += add;
    __syncthreads();
  }
  const double target = Uniform(rp.seed, rp.step) * scan[kThreads - 1];
  const double before = tid > 0 ? scan[tid - 1] : 0.0;
  if (tid == 0) chosen = best.id;  // rounding fallback: the most likely token
  __syncthreads();
  if (local > 0.0 && target < scan[tid] && target >= before) {
    double cum = before;
    for (int i = i0; i < i1; ++i) {
      const double w = keep(i);
      if (w == 0.0) continue;
      cum += w;
      if (cum > target) {
        chosen = i;
        break;
      }
    }
  }
  __syncthreads();
  if (tid == 0) {
    out_ids[b] = chosen;
    out_logprobs[b] = logprob(chosen);
  }
}

}  // namespace

absl::Status Sample(const CudaContext& ctx, const SampleParams& p) {
  constexpr absl::string_view kOp = "Sample";
  GKA_RETURN_IF_ERROR(CheckRank(p.logits, 2, kOp, "logits"));
  GKA_RETURN_IF_ERROR(CheckDType(p.logits, {tensor::DType::kF32}, kOp, "logits"));
  const int64_t B = p.logits.shape[0], V = p.logits.shape[1];
  if (p.num_seqs != B) {
    return absl::InvalidArgumentError(
        absl::StrCat("Sample: num_seqs ", p.num_seqs, " but logits has ", B, " rows"));
  }
  if (p.vocab_limit < 0 || p.vocab_limit > V) {
    return absl::InvalidArgumentError(
        absl::StrCat("Sample: vocab_limit ", p.vocab_limit, " must be in [0, V = ", V, "]"));
  }
  if (B == 0) return absl::OkStatus();
  if (p.configs == nullptr || p.steps == nullptr || p.out_ids == nullptr) {
    return absl::InvalidArgumentError("Sample: configs, steps and out_ids are required");
  }
  const int64_t n = p.vocab_limit > 0 ? p.vocab_limit : V;
  if (n <= 0 || n > (1 << 24)) {
    return absl::InvalidArgumentError("Sample: vocabulary must hold 1 .. 2^24 ids");
  }
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.logits, kOp, "logits"));

  // Host side: per-row parameters and each row's distinct history tokens with counts.
  std::vector<RowParams> rows(B);
  std::vector<int32_t> tokens, counts;
  bool any_top = false;
  for (int64_t b = 0; b < B; ++b) {
    const SamplingConfig& c = p.configs[b];
    if (!(c.temperature >= 0.0f) || !std::isfinite(c.temperature) || c.top_k < 0 ||
        !(c.top_p > 0.0f && c.top_p <= 1.0f) || !(c.min_p >= 0.0f && c.min_p <= 1.0f) ||
        !(c.repetition_penalty > 0.0f) || !std::isfinite(c.repetition_penalty) ||
        !std::isfinite(c.presence_penalty) || !std::isfinite(c.frequency_penalty) ||
        c.num_top_logprobs < 0 || c.num_top_logprobs > kMaxTopLogprobs) {
      return absl::InvalidArgumentError(
          absl::StrCat("Sample: sequence ", b, ": invalid sampling config"));
    }
    RowParams& r = rows[b];
    std::memset(&r, 0, sizeof(r));
    r.temperature = c.temperature;
    r.top_k = c.top_k;
    r.top_p = c.top_p;
    r.min_p = c.min_p;
    r.repetition_penalty = c.repetition_penalty;
    r.presence_penalty = c.presence_penalty;
    r.frequency_penalty = c.frequency_penalty;
    r.seed = c.seed;
    r.step = p.steps[b];
    r.num_top = c.num_top_logprobs;
    any_top = any_top || c.num_top_logprobs > 0;
    r.pen_begin = static_cast<int32_t>(tokens.size());
    const bool penalties =
        c.repetition_penalty != 1.0f || c.presence_penalty != 0.0f || c.frequency_penalty != 0.0f;
    if (p.history_offsets != nullptr && penalties) {
      std::vector<int32_t> ids(p.history + p.history_offsets[b],
                               p.history + p.history_offsets[b + 1]);
      std::sort(ids.begin(), ids.end());
      for (size_t i = 0; i < ids.size();) {
        size_t j = i;
        while (j < ids.size() && ids[j] == ids[i]) ++j;
        if (ids[i] < 0 || ids[i] >= V) {
          return absl::InvalidArgumentError(
              absl::StrCat("Sample: history id ", ids[i], " is outside [0, ", V, ")"));
        }
        tokens.push_back(ids[i]);
        counts.push_back(static_cast<int32_t>(j - i));
        i = j;
      }
    }
    r.pen_end = static_cast<int32_t>(tokens.size());
  }
  if (any_top && (p.out_top_ids == nullptr || p.out_top_logprobs == nullptr)) {
    return absl::InvalidArgumentError(
        "Sample: out_top_ids and out_top_logprobs are required when a sequence asks for "
        "num_top_logprobs > 0");
  }
  // One upload: rows, tokens, counts; then room for the outputs (ids, logprobs, and with
  // alternatives [B, kMaxTopLogprobs] ids and logprobs).
  const size_t rows_bytes = sizeof(RowParams) * B;
  const size_t tok_bytes = sizeof(int32_t) * tokens.size();
  const size_t out_off = (rows_bytes + 2 * tok_bytes + 15) / 16 * 16;
  const size_t top_count = any_top ? static_cast<size_t>(B) * kMaxTopLogprobs : 0;
  const size_t total = out_off + 2 * sizeof(int32_t) * (B + top_count) + 16;
  std::vector<unsigned char> host(out_off, 0);
  std::memcpy(host.data(), rows.data(), rows_bytes);
  if (tok_bytes > 0) {
    std::memcpy(host.data() + rows_bytes, tokens.data(), tok_bytes);
    std::memcpy(host.data() + rows_bytes + tok_bytes, counts.data(), tok_bytes);
  }
  GKA_ASSIGN_OR_RETURN(void* scratch, ctx.Scratch(total));
  auto* dev = static_cast<unsigned char*>(scratch);
  GKA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dev, host.data(), out_off, cudaMemcpyHostToDevice, ctx.stream()));
  auto* d_ids = reinterpret_cast<int32_t*>(dev + out_off);
  auto* d_lp = reinterpret_cast<float*>(dev + out_off + sizeof(int32_t) * B);
  auto* d_top_ids =
      any_top ? reinterpret_cast<int32_t*>(dev + out_off + 2 * sizeof(int32_t) * B) : nullptr;
  auto* d_top_lps = any_top ? reinterpret_cast<float*>(dev + out_off + 2 * sizeof(int32_t) * B +
                                                       sizeof(int32_t) * top_count)
                            : nullptr;
  Launch(SampleKernel, static_cast<unsigned>(B), kThreads, 0, ctx.stream(), p.logits.data<float>(),
         V, static_cast<int>(n), reinterpret_cast<const RowParams*>(dev),
         reinterpret_cast<const int32_t*>(dev + rows_bytes),
         reinterpret_cast<const int32_t*>(dev + rows_bytes + tok_bytes), d_ids, d_lp, d_top_ids,
         d_top_lps);
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("SampleKernel");
  std::vector<float> lp(B);
  GKA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(p.out_ids, d_ids, sizeof(int32_t) * B, cudaMemcpyDeviceToHost, ctx.stream()));
  GKA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(lp.data(), d_lp, sizeof(float) * B, cudaMemcpyDeviceToHost, ctx.stream()));
  if (any_top) {
    GKA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(p.out_top_ids, d_top_ids, sizeof(int32_t) * top_count,
                                             cudaMemcpyDeviceToHost, ctx.stream()));
    GKA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(p.out_top_logprobs, d_top_lps,
                                             sizeof(float) * top_count, cudaMemcpyDeviceToHost,
                                             ctx.stream()));
  }
  GKA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream()));
  if (p.out_logprobs != nullptr) std::copy(lp.begin(), lp.end(), p.out_logprobs);
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
