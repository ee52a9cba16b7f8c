// The GEMM tuner (see gemm_tuner.h): cuBLASLt heuristic candidates timed once per shape.
//
// Layout: row-major y[M,N] = x[M,K]·w[N,K]ᵀ is column-major yᵀ[N,M] = op_T(w: K×N, ld K) ·
// xᵀ (K×M, ld K), as in gemm.cc's cublasGemmEx call, so both paths compute the same products.
#include "kernels/cuda/gemm_tuner.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_status.h"

namespace gka::kernels::cuda {
namespace {

using tensor::DType;

cudaDataType_t CudaType(DType d) { return d == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F; }
size_t ElemBytes(DType d) { return d == DType::kBF16 ? 2 : 4; }

// Largest power of two (≤ 256) dividing the address: cuBLASLt's alignment preference.
uint32_t Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

// Rows are tuned per bucket, timed at the bucket's top: decode batches change every step, and a
// graph bucket's padded size is one of these anyway.
int64_t RowBucket(int64_t m) {
  if (m <= 16) return 16;
  if (m <= 64) return (m + 15) / 16 * 16;
  if (m <= 256) return (m + 31) / 32 * 32;
  return (m + 63) / 64 * 64;
}

// A cuBLASLt-won tuner entry keeps its descriptors; the matrix layouts are re-set when M moves
// within the bucket (and the algorithm re-checked for that M).
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  LtDescriptors() = default;
  LtDescriptors(const LtDescriptors&) = delete;
  LtDescriptors& operator=(const LtDescriptors&) = delete;
  ~LtDescriptors() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (op != nullptr) cublasLtMatmulDescDestroy(op);
  }
};

absl::StatusOr<std::unique_ptr<LtDescriptors>> MakeDescriptors(int64_t m, int64_t n, int64_t k,
                                                               DType y) {
  auto d = std::make_unique<LtDescriptors>();
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t t = CUBLAS_OP_T, nt = CUBLAS_OP_N;
  GKA_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)));
  GKA_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &nt, sizeof(nt)));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&d->a, CUDA_R_16BF, k, n, k));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&d->b, CUDA_R_16BF, k, m, k));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&d->c, CudaType(y), n, m, n));
  return d;
}

absl::Status SetRows(LtDescriptors& d, int64_t m) {
  const uint64_t cols = static_cast<uint64_t>(m);
  GKA_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutSetAttribute(d.b, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof(cols)));
  GKA_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutSetAttribute(d.c, CUBLASLT_MATRIX_LAYOUT_COLS, &cols, sizeof(cols)));
  return absl::OkStatus();
}

std::string Describe(const cublasLtMatmulAlgo_t& algo) {
  int id = 0, tile = 0, splitk = 1, stages = 0;
  size_t got = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &got);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile),
                                       &got);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                       sizeof(splitk), &got);
  cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages,
                                       sizeof(stages), &got);
  return absl::StrCat("lt algo ", id, " tile ", tile, " stages ", stages, " splitK ",
                      std::max(splitk, 1));
}

struct Key {
  int64_t m_bucket, n, k;
  DType y;
  bool accumulate;
  uint32_t align_x, align_w, align_y;
  template <typename H>
  friend H AbslHashValue(H h, const Key& k) {
    return H::combine(std::move(h), k.m_bucket, k.n, k.k, k.y, k.accumulate, k.align_x, k.align_w,
                      k.align_y);
  }
  friend bool operator==(const Key& a, const Key& b) {
    return std::tie(a.m_bucket, a.n, a.k, a.y, a.accumulate, a.align_x, a.align_w, a.align_y) ==
           std::tie(b.m_bucket, b.n, b.k, b.y, b.accumulate, b.align_x, b.align_w, b.align_y);
  }
};

// What one tuned shape chose (logged at DEBUG: GKA_LOG_LEVEL=DEBUG).
struct Choice {
  int64_t m_bucket = 0, n = 0, k = 0;
  bool uses_default = true;  // cublasGemmEx won (or nothing beat it by the margin)
  double default_us = 0;     // cublasGemmEx at m_bucket rows
  double best_us = 0;        // the winner at m_bucket rows
  int candidates = 0;        // algorithms timed
  std::string algo;          // the winner, e.g. "lt algo 66 tile 27 stages 35 splitK 1"
};

struct Entry {
  Choice choice;
  cublasLtMatmulAlgo_t algo{};
  std::unique_ptr<LtDescriptors> desc;  // null when cublasGemmEx won
  int64_t rows = 0;                     // M the layouts describe now
  bool rows_ok = false;                 // the algorithm passed cublasLtMatmulAlgoCheck at rows
};

// A candidate must beat cublasGemmEx by this fraction to be used: below it the timing noise
// would flip the choice between runs for nothing.
constexpr double kMinGain = 0.03;
constexpr int kTimedRuns = 3;

}  // namespace

struct GemmTuner::Impl {
  cublasLtHandle_t lt = nullptr;
  std::vector<cudaEvent_t> events;  // 2 per timed run, grown on demand
  absl::flat_hash_map<Key, Entry> cache;
  ~Impl() {
    for (cudaEvent_t e : events) cudaEventDestroy(e);
    if (lt != nullptr) cublasLtDestroy(lt);
  }

  absl::Status EnsureEvents(size_t n) {
    while (events.size() < n) {
      cudaEvent_t e = nullptr;
      GKA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
      events.push_back(e);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Entry> Tune(const CudaContext& ctx, const Key& key, const void* w,
                             int max_candidates);
};

absl::StatusOr<std::unique_ptr<GemmTuner>> GemmTuner::Create(const Options& options) {
  Options o = options;
  if (const char* env = std::getenv("GKA_GEMM_TUNE"); env != nullptr) {
    o.enabled = std::strcmp(env, "0") != 0;
  }
  auto impl = std::make_unique<Impl>();
  if (o.enabled) GKA_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&impl->lt));
  return std::unique_ptr<GemmTuner>(new GemmTuner(o, std::move(impl)));
}

GemmTuner::GemmTuner(const Options& options, std::unique_ptr<Impl> impl)
    : options_(options), impl_(std::move(impl)) {}
GemmTuner::~GemmTuner() = default;

absl::StatusOr<Entry> GemmTuner::Impl::Tune(const CudaContext& ctx, const Key& key, const void* w,
                                            int max_candidates) {
  const int64_t M = key.m_bucket, N = key.n, K = key.k;
  GKA_ASSIGN_OR_RETURN(std::unique_ptr<LtDescriptors> desc, MakeDescriptors(M, N, K, key.y));
  cublasLtMatmulPreference_t pref = nullptr;
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  struct PrefCleanup {
    cublasLtMatmulPreference_t p;
    ~PrefCleanup() { cublasLtMatmulPreferenceDestroy(p); }
  } pref_cleanup{pref};
  const uint64_t ws_bytes = ctx.cublas_workspace_bytes();
  // fp32 partials only: INPLACE adds split-K partials in the bf16 output.
  const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof(schemes)));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_w, sizeof(uint32_t)));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_x, sizeof(uint32_t)));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_y, sizeof(uint32_t)));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_y, sizeof(uint32_t)));
  std::vector<cublasLtMatmulHeuristicResult_t> heur(32);
  int found = 0;
  GKA_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulAlgoGetHeuristic(lt, desc->op, desc->a, desc->b, desc->c, desc->c, pref,
                                     static_cast<int>(heur.size()), heur.data(), &found));
  std::vector<cublasLtMatmulAlgo_t> candidates;
  for (int i = 0; i < found; ++i) {
    if (heur[i].state == CUBLAS_STATUS_SUCCESS) candidates.push_back(heur[i].algo);
  }
  // Split-K variants of the heuristic's first picks: at M ≤ 256 a 128-wide tile over N gives
  // fewer CTAs than SMs for N ≤ 16K; splitting K fills the machine.
  const size_t first = std::min<size_t>(candidates.size(), 4);
  for (size_t i = 0; i < first; ++i) {
    int splitk_cap = 0;
    size_t got = 0;
    cublasLtMatmulAlgoCapGetAttribute(&candidates[i], CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_cap,
                                      sizeof(splitk_cap), &got);
    if (!splitk_cap) continue;
    for (int s : {2, 3, 4, 6, 8}) {
      cublasLtMatmulAlgo_t v = candidates[i];
      const uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
      if (cublasLtMatmulAlgoConfigSetAttribute(&v, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &s,
                                               sizeof(s)) != CUBLAS_STATUS_SUCCESS ||
          cublasLtMatmulAlgoConfigSetAttribute(&v, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                               sizeof(scheme)) != CUBLAS_STATUS_SUCCESS) {
        continue;
      }
      cublasLtMatmulHeuristicResult_t check{};
      if (cublasLtMatmulAlgoCheck(lt, desc->op, desc->a, desc->b, desc->c, desc->c, &v, &check) ==
              CUBLAS_STATUS_SUCCESS &&
          check.workspaceSize <= ws_bytes) {
        candidates.push_back(v);
      }
    }
  }
  if (static_cast<int>(candidates.size()) > max_candidates) candidates.resize(max_candidates);

  // Scratch: x [M,K] bf16 | y [M,N] | an L2 flush region (2 × L2), each at the caller's
  // pointer alignment (so the heuristic's alignment promise holds). The weight is the caller's
  // own (read only); the flush before each run evicts it, as the model's step does by streaming
  // every other weight and the KV cache in between.
  int l2 = 0;
  GKA_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, ctx.device()));
  auto round_up = [](size_t b) { return (b + 511) / 256 * 256; };  // + 256: room to misalign
  const size_t x_bytes = round_up(M * K * 2), y_bytes = round_up(M * N * ElemBytes(key.y));
  const size_t flush_bytes = round_up(2 * static_cast<size_t>(l2));
  GKA_ASSIGN_OR_RETURN(void* scratch, ctx.Scratch(x_bytes + y_bytes + flush_bytes));
  char* base = static_cast<char*>(scratch);
  void* x = base + key.align_x % 256;
  void* y = base + x_bytes + key.align_y % 256;
  void* flush = base + x_bytes + y_bytes;
  // Finite inputs (garbage bits could be NaN: harmless for timing, but keep it clean).
  GKA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(base, 0, x_bytes + y_bytes, ctx.stream()));

  const float alpha = 1.0f, beta = key.accumulate ? 1.0f : 0.0f;
  const int n_cand = static_cast<int>(candidates.size()) + 1;  // + cublasGemmEx, index 0
  GKA_RETURN_IF_ERROR(EnsureEvents(static_cast<size_t>(2 * n_cand * kTimedRuns)));
  auto run = [&](int c) -> absl::Status {
    if (c == 0) {
      GKA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
          ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
          static_cast<int>(K), &alpha, w, CUDA_R_16BF, static_cast<int>(K), x, CUDA_R_16BF,
          static_cast<int>(K), &beta, y, CudaType(key.y), static_cast<int>(N), CUBLAS_COMPUTE_32F,
          CUBLAS_GEMM_DEFAULT));
      return absl::OkStatus();
    }
    GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(
        lt, desc->op, &alpha, w, desc->a, x, desc->b, &beta, y, desc->c, y, desc->c,
        &candidates[c - 1], ctx.cublas_workspace(), ctx.cublas_workspace_bytes(), ctx.stream()));
    return absl::OkStatus();
  };
  std::vector<bool> usable(n_cand, true);
  for (int c = 0; c < n_cand; ++c) {
    usable[c] = run(c).ok();  // warm-up (and a last validity check)
    for (int r = 0; r < kTimedRuns && usable[c]; ++r) {
      GKA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(flush, r, flush_bytes, ctx.stream()));
      GKA_CUDA_RETURN_IF_ERROR(cudaEventRecord(events[2 * (c * kTimedRuns + r)], ctx.stream()));
      GKA_RETURN_IF_ERROR(run(c));
      GKA_CUDA_RETURN_IF_ERROR(cudaEventRecord(events[2 * (c * kTimedRuns + r) + 1], ctx.stream()));
    }
  }
  GKA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream()));
  if (!usable[0]) return absl::InternalError("GemmTuner: cublasGemmEx failed while timing");
  std::vector<double> us(n_cand, 1e30);
  for (int c = 0; c < n_cand; ++c) {
    if (!usable[c]) continue;
    for (int r = 0; r < kTimedRuns; ++r) {
      float ms = 0;
      GKA_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, events[2 * (c * kTimedRuns + r)],
                                                    events[2 * (c * kTimedRuns + r) + 1]));
      us[c] = std::min(us[c], 1000.0 * ms);  // the best run: noise only ever adds time
    }
  }
  int best = 0;
  for (int c = 1; c < n_cand; ++c) {
    if (us[c] < us[best]) best = c;
  }
  Entry e;
  e.choice.m_bucket = M;
  e.choice.n = N;
  e.choice.k = K;
  e.choice.default_us = us[0];
  e.choice.candidates = n_cand - 1;
  if (best != 0 && us[best] < (1.0 - kMinGain) * us[0]) {
    e.choice.uses_default = false;
    e.choice.best_us = us[best];
    e.choice.algo = Describe(candidates[best - 1]);
    e.algo = candidates[best - 1];
    e.desc = std::move(desc);
    e.rows = M;
    e.rows_ok = true;
  } else {
    e.choice.best_us = us[0];
    e.choice.algo = "cublasGemmEx default";
  }
  GKA_LOG(DEBUG) << "GemmTuner: M<=" << M << " N=" << N << " K=" << K << " y "
                 << tensor::DTypeName(key.y) << (key.accumulate ? " beta=1" : "")
                 << ": cublasGemmEx " << us[0] << " us, best " << e.choice.best_us << " us ("
                 << e.choice.algo << ", " << n_cand - 1 << " candidates)";
  return e;
}

absl::StatusOr<bool> GemmTuner::Run(const CudaContext& ctx, const GemmParams& p) {
  if (!options_.enabled || p.x.dtype != DType::kBF16 || p.w.dtype != DType::kBF16) return false;
  const int64_t M = p.x.shape[0], K = p.x.shape[1], N = p.w.shape[0];
  if (M > options_.max_rows) return false;
  const Key key{.m_bucket = RowBucket(M),
                .n = N,
                .k = K,
                .y = p.y.dtype,
                .accumulate = p.beta != 0.0f,
                .align_x = Alignment(p.x.ptr),
                .align_w = Alignment(p.w.ptr),
                .align_y = Alignment(p.y.ptr)};
  auto it = impl_->cache.find(key);
  if (it == impl_->cache.end()) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    GKA_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(ctx.stream(), &capture));
    if (capture != cudaStreamCaptureStatusNone) return false;  // no timing inside a capture
    GKA_ASSIGN_OR_RETURN(Entry e, impl_->Tune(ctx, key, p.w.ptr, options_.max_candidates));
    it = impl_->cache.emplace(key, std::move(e)).first;
  }
  Entry& e = it->second;
  if (e.desc == nullptr) return false;
  if (e.rows != M) {
    GKA_RETURN_IF_ERROR(SetRows(*e.desc, M));
    e.rows = M;
    cublasLtMatmulHeuristicResult_t check{};
    e.rows_ok = cublasLtMatmulAlgoCheck(impl_->lt, e.desc->op, e.desc->a, e.desc->b, e.desc->c,
                                        e.desc->c, &e.algo, &check) == CUBLAS_STATUS_SUCCESS &&
                check.workspaceSize <= ctx.cublas_workspace_bytes();
  }
  if (!e.rows_ok) return false;
  const float alpha = 1.0f, beta = p.beta;
  GKA_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(impl_->lt, e.desc->op, &alpha, p.w.ptr, e.desc->a,
                                            p.x.ptr, e.desc->b, &beta, p.y.ptr, e.desc->c, p.y.ptr,
                                            e.desc->c, &e.algo, ctx.cublas_workspace(),
                                            ctx.cublas_workspace_bytes(), ctx.stream()));
  return true;
}

}  // namespace gka::kernels::cuda
