// CUDA kernel benchmarks (issue 4): every timing against its roofline.
//
// Ceilings measured first on this GPU: device-to-device copy bandwidth (bytes read + written)
// and the bf16 GEMM rate of cuBLAS alone. Each case then runs twice (two independent sessions
// of warm-up + timed iterations, median of per-iteration cudaEvent timings) and both medians are
// printed, so a difference smaller than the spread between the two is not believed.
//
//   cuda_kernels_bench [--quick] [--gka | --gka-prefill]
//     [--graphs] [--prefill-attn]
//     --quick: fewer iterations, for smoke runs; --gka: only the GKA core rows (after the copy
//     and GEMM ceilings); --gka-prefill: only the GKA prefill rows; --graphs: only a whole
//     decode step (TP8 rank shape) eager vs replayed as a CUDA graph; --prefill-attn: only
//     the prefill-attention rows (to profile them under ncu).
//
// Prints a table; rows marked GATE are the hard gates.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/perf/gpu/bench_check.h"
#include "tests/perf/gpu/bench_random.h"

namespace gka::gpu_testing {
namespace {

struct Row {
  std::string name;
  double us1 = 0, us2 = 0;
  double bytes = 0;  // minimum bytes moved (0: not bandwidth-judged)
  double flops = 0;  // useful FLOPs (0: not compute-judged)
  std::string note;  // target / roofline remark
};

class Bench {
 public:
  explicit Bench(bool quick) : quick_(quick) {
    auto be = kernels::cuda::CudaBackend::Create({});
    BENCH_CHECK(be.status());
    be_ = std::move(be).value();
    stream_ = static_cast<cudaStream_t>(
        static_cast<kernels::cuda::CudaBackend*>(be_.get())->stream_handle());
    CUDA_CHECK(cudaEventCreate(&e0_));
    CUDA_CHECK(cudaEventCreate(&e1_));
  }
  ~Bench() {
    cudaEventDestroy(e0_);
    cudaEventDestroy(e1_);
  }
  kernels::Backend& be() { return *be_; }
  cudaStream_t stream() const { return stream_; }
  std::string device_name() const {
    return std::string(static_cast<kernels::cuda::CudaBackend*>(be_.get())->device_name());
  }

  // Median µs of `iters` timed calls after `warmup` calls.
  double Median(int warmup, int iters, const std::function<void()>& fn) {
    for (int i = 0; i < warmup; ++i) fn();
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<double> t(iters);
    for (int i = 0; i < iters; ++i) {
      CUDA_CHECK(cudaEventRecord(e0_, stream_));
      fn();
      CUDA_CHECK(cudaEventRecord(e1_, stream_));
      CUDA_CHECK(cudaEventSynchronize(e1_));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, e0_, e1_));
      t[i] = ms * 1e3;
    }
    CUDA_CHECK(cudaGetLastError());
    std::nth_element(t.begin(), t.begin() + iters / 2, t.end());
    return t[iters / 2];
  }

  // Two sessions → one row.
  Row Run(const std::string& name, double bytes, double flops, int warmup, int iters,
          const std::function<void()>& fn, const std::string& note = "") {
    if (quick_) iters = std::max(3, iters / 4);
    Row r{name, Median(warmup, iters, fn), Median(warmup, iters, fn), bytes, flops, note};
    std::printf("  %-58s %10.1f %10.1f us\n", name.c_str(), r.us1, r.us2);
    std::fflush(stdout);
    rows_.push_back(r);
    return r;
  }

  void SetCeilings(double copy_gbs, double gemm_tflops) {
    copy_gbs_ = copy_gbs;
    gemm_tflops_ = gemm_tflops;
  }

  void PrintTable() const {
    std::printf("\n==== CUDA kernels (issue 4) on %s ====\n", device_name().c_str());
    std::printf("ceilings: D2D copy %.0f GB/s (read+write), cuBLAS bf16 GEMM %.0f TFLOP/s\n",
                copy_gbs_, gemm_tflops_);
    std::printf("%-58s | %9s | %9s | %10s | %8s | %s\n", "case", "run1 us", "run2 us", "achieved",
                "roofline", "note");
    for (const Row& r : rows_) {
      const double us = std::min(r.us1, r.us2);
      std::string ach = "", roof = "";
      if (r.bytes > 0) {
        const double gbs = r.bytes / (us * 1e-6) / 1e9;
        ach = absl::StrFormat("%.0f GB/s", gbs);
        roof = absl::StrFormat("%.0f%% bw", 100.0 * gbs / copy_gbs_);
      } else if (r.flops > 0) {
        const double tf = r.flops / (us * 1e-6) / 1e12;
        ach = absl::StrFormat("%.1f TF/s", tf);
        roof = absl::StrFormat("%.0f%% mma", 100.0 * tf / gemm_tflops_);
      }
      std::printf("%-58s | %9.1f | %9.1f | %10s | %8s | %s\n", r.name.c_str(), r.us1, r.us2,
                  ach.c_str(), roof.c_str(), r.note.c_str());
    }
  }

  // Device-generated random data (no host image: benchmarks never compare values).
  GpuTensor Random(const Shape& s, DType d, float scale = 1.0f, float mean = 0.0f) {
    GpuTensor t;
    auto buf = be_->Allocate(s, d);
    BENCH_CHECK(buf.status());
    t.buf = std::move(buf).value();
    CUDA_CHECK(RandomFillDevice(t.buf.view().ptr, s.numel(), d == DType::kBF16, rng_(), scale, mean,
                                stream_));
    return t;
  }
  DeviceBuffer Ints(const std::vector<int32_t>& v) { return UploadInts(*be_, v); }
  std::mt19937_64& rng() { return rng_; }
  bool quick() const { return quick_; }

 private:
  bool quick_;
  std::unique_ptr<kernels::Backend> be_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t e0_ = nullptr, e1_ = nullptr;
  std::vector<Row> rows_;
  double copy_gbs_ = 0, gemm_tflops_ = 0;
  std::mt19937_64 rng_{12345};
};

// ---- ceilings ---------------------------------------------------------------------------

double CopyBandwidth(Bench& b) {
  const size_t bytes = size_t{2} << 30;
  void *src = nullptr, *dst = nullptr;
  CUDA_CHECK(cudaMalloc(&src, bytes));
  CUDA_CHECK(cudaMalloc(&dst, bytes));
  CUDA_CHECK(cudaMemsetAsync(src, 1, bytes, b.stream()));
  const Row r = b.Run("D2D copy 2 GiB (cudaMemcpyAsync)", 2.0 * bytes, 0, 3, 20, [&] {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, b.stream()));
  });
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));
  return 2.0 * bytes / (std::min(r.us1, r.us2) * 1e-6) / 1e9;
}

double CublasRate(Bench& b, int m, int n, int k, const char* label) {
  GpuTensor x = b.Random(Shape{m, k}, DType::kBF16);
  GpuTensor w = b.Random(Shape{n, k}, DType::kBF16, 0.02f);
  auto y = b.be().Allocate(Shape{m, n}, DType::kBF16);
  BENCH_CHECK(y.status());
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetStream(h, b.stream());
  void* ws = nullptr;
  CUDA_CHECK(cudaMalloc(&ws, 32 << 20));
  cublasSetWorkspace(h, ws, 32 << 20);
  const float alpha = 1, beta = 0;
  const Row r =
      b.Run(absl::StrCat("cuBLAS alone bf16 ", label, " ", m, "x", n, "x", k), 0, 2.0 * m * n * k,
            3, 20, [&] {
              cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w.view().ptr, CUDA_R_16BF,
                           k, x.view().ptr, CUDA_R_16BF, k, &beta, y->view().ptr, CUDA_R_16BF, n,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
            });
  cublasDestroy(h);
  CUDA_CHECK(cudaFree(ws));
  return 2.0 * m * n * k / (std::min(r.us1, r.us2) * 1e-6) / 1e12;
}

// ---- GEMM through the backend vs cuBLAS alone ------------------------------------------

void GemmRows(Bench& b) {
  struct G {
    int m, n, k;
    const char* what;
  };
  for (const G& g :
       {G{64, 6400, 5120, "decode gate_up TP8"}, G{64, 5120, 3200, "decode down TP8"},
        G{64, 18992, 5120, "decode lm_head shard"}, G{4096, 6400, 5120, "prefill gate_up TP8"}}) {
    GpuTensor x = b.Random(Shape{g.m, g.k}, DType::kBF16);
    GpuTensor w = b.Random(Shape{g.n, g.k}, DType::kBF16, 0.02f);
    auto y = b.be().Allocate(Shape{g.m, g.n}, DType::kBF16);
    BENCH_CHECK(y.status());
    const double weight_bytes = 2.0 * g.n * g.k + 2.0 * g.m * (g.k + g.n);
    const bool decode = g.m <= 256;
    b.Run(absl::StrCat("Gemm (backend) ", g.what, " ", g.m, "x", g.n, "x", g.k),
          decode ? weight_bytes : 0, decode ? 0 : 2.0 * g.m * g.n * g.k, 3, 30,
          [&] { BENCH_CHECK(b.be().Gemm({.x = x.view(), .w = w.view(), .y = y->view()})); });
    CublasRate(b, g.m, g.n, g.k, g.what);
  }
}

// ---- GKA core ----------------------------------------------------------------------------

struct GkaBuffers {
  GpuTensor q, k, v, alpha, g, hkk, hkv;
  DeviceBuffer out, slots, cu, iters;
};

GkaBuffers MakeGka(Bench& b, int64_t N, int64_t H, int64_t T_total, std::vector<int32_t> cu,
                   int iters) {
  const int64_t D = 128;
  GkaBuffers g;
  g.q = b.Random(Shape{T_total, H, D}, DType::kF32, 0.09f);
  g.k = b.Random(Shape{T_total, H, D}, DType::kF32, 0.09f);
  g.v = b.Random(Shape{T_total, H, D}, DType::kF32);
  g.alpha = b.Random(Shape{T_total, H}, DType::kF32, 0.2f, 0.5f);
  g.g = b.Random(Shape{T_total, H}, DType::kF32, 0.01f, -0.05f);
  // h_kk: small positive noise around 0.01 (finite solves, no denormals), h_kv random.
  g.hkk = b.Random(Shape{N, H, D, D}, DType::kF32, 0.001f, 0.01f);
  g.hkv = b.Random(Shape{N, H, D, D}, DType::kF32);
  auto out = b.be().Allocate(Shape{T_total, H, D}, DType::kF32);
  BENCH_CHECK(out.status());
  g.out = std::move(out).value();
  std::vector<int32_t> slots(N);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), b.rng());
  g.slots = b.Ints(slots);
  g.cu = b.Ints(cu);
  g.iters = b.Ints(std::vector<int32_t>(N, iters));
  return g;
}

void GkaCoreRun(Bench& b, const GkaBuffers& g, int N, int max_len) {
  BENCH_CHECK(b.be().GkaCore({.q = g.q.view(),
                              .k = g.k.view(),
                              .v = g.v.view(),
                              .alpha = g.alpha.view(),
                              .g = g.g.view(),
                              .out = g.out.view(),
                              .h_kk = g.hkk.view(),
                              .h_kv = g.hkv.view(),
                              .slots = g.slots.data<int32_t>(),
                              .cu_seqlens = g.cu.data<int32_t>(),
                              .num_iter = g.iters.data<int32_t>(),
                              .num_seqs = N,
                              .max_seqlen = max_len,
                              .ridge_ratio = 0.02f,
                              .scale = 0.08838834764831845f,
                              .decay_kk = true}));
}

void GkaDecodeRows(Bench& b) {
  struct C {
    int N, H, iters;
    double target_us, triton_us;
    bool gate;
  };
  for (const C& c : {C{128, 16, 30, 246, 369, true}, C{128, 16, 10, 200, 216, false},
                     C{256, 64, 30, 1680, 2523, false}}) {
    std::vector<int32_t> cu(c.N + 1);
    std::iota(cu.begin(), cu.end(), 0);
    GkaBuffers g = MakeGka(b, c.N, c.H, c.N, cu, c.iters);
    const double bytes = 4.0 * c.N * c.H * 128 * 128 * 4;  // h_kk, h_kv read + written
    b.Run(
        absl::StrFormat("%sGKA decode N=%d H=%d num_iter=%d", c.gate ? "GATE " : "", c.N, c.H,
                        c.iters),
        bytes, 0, 3, 30, [&] { GkaCoreRun(b, g, c.N, 1); },
        absl::StrFormat("target <= %.0f us (authors' Triton %.0f us)", c.target_us, c.triton_us));
  }
}

// Prefill rows. Sequences longer than 64 tokens take the chunk-parallel path; its solver is
// chosen by GKA_CUDA_GKA_PREFILL (tf32x3 tensor cores by default, fp32 CUDA cores, or
// sequential = the token-sequential kernel for every length), printed in the row name.
void GkaPrefillRows(Bench& b) {
  const char* env = std::getenv("GKA_CUDA_GKA_PREFILL");
  const std::string path = env != nullptr && *env != 0 ? env : "default";
  struct C {
    int seqs, len, iters;
    double target_ms;
  };
  const int T16 = b.quick() ? 2048 : 16384;
  for (const C& c : {C{1, T16, 30, 3.6}, C{1, T16, 10, 2.0}, C{8, 2048, 30, 0}, C{1, 1024, 30, 0},
                     C{1, 128, 30, 0}, C{1, 64, 30, 0}}) {
    const int T = c.seqs * c.len;
    std::vector<int32_t> cu(c.seqs + 1);
    for (int i = 0; i <= c.seqs; ++i) cu[i] = i * c.len;
    GkaBuffers g = MakeGka(b, c.seqs, 16, T, cu, c.iters);
    // The chunked path's useful FLOPs (gka_prefill.cu roofline): 3.6 MFLOP·(N + 2) per
    // 64-token chunk and head.
    const double chunks = c.seqs * std::ceil(c.len / 64.0);
    const double flops = chunks * 16 * 2.0 * (c.iters + 2) *
                         (64.0 * 128 * 128 + 64.0 * 64 * 128 + 64.0 * 64 * 128 / 2);
    const bool slow = path == "sequential" && T >= 16384;
    b.Run(
        absl::StrFormat("GKA prefill %dx%d H=16 num_iter=%d [%s]", c.seqs, c.len, c.iters,
                        path.c_str()),
        0, flops, 1, slow ? 2 : 5, [&] { GkaCoreRun(b, g, c.seqs, c.len); },
        c.target_ms > 0 ? absl::StrFormat("target <= %.1f ms; FP32 FMA peak 67 TF/s", c.target_ms)
                        : std::string("FP32 FMA peak 67 TF/s"));
  }
}

// ---- attention ---------------------------------------------------------------------------

struct KvCache {
  GpuTensor kp, vp;
  DeviceBuffer table, cu, ctx;
  int max_pages;
};

KvCache MakeCache(Bench& b, int B, int ctx, int hkv, int ps, const std::vector<int32_t>& cu_q) {
  KvCache c;
  const int np = (ctx + ps - 1) / ps;
  c.max_pages = np;
  const int64_t pages = static_cast<int64_t>(B) * np;
  c.kp = b.Random(Shape{pages, ps, hkv, 128}, DType::kBF16);
  c.vp = b.Random(Shape{pages, ps, hkv, 128}, DType::kBF16);
  std::vector<int32_t> perm(pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), b.rng());
  c.table = b.Ints(perm);  // B × np, pages scattered
  c.cu = b.Ints(cu_q);
  c.ctx = b.Ints(std::vector<int32_t>(B, ctx));
  return c;
}

void AttentionRows(Bench& b, bool decode = true) {
  // Decode: batch 64 at 16K context, per-rank (TP 8: Hq 8, Hkv 1) and whole-model heads.
  for (int hkv : decode ? std::vector<int>{1, 8} : std::vector<int>{}) {
    for (int ps : {16, 64}) {
      const int B = 64, ctx = 16384, hq = 8 * hkv;
      std::vector<int32_t> cu(B + 1);
      std::iota(cu.begin(), cu.end(), 0);
      KvCache c = MakeCache(b, B, ctx, hkv, ps, cu);
      GpuTensor q = b.Random(Shape{B, hq, 128}, DType::kBF16);
      auto out = b.be().Allocate(Shape{B, hq, 128}, DType::kBF16);
      BENCH_CHECK(out.status());
      const double bytes = 2.0 * B * ctx * hkv * 128 * 2;
      b.Run(
          absl::StrFormat("%sPaged decode attn B=64 ctx=16K Hq=%d Hkv=%d page=%d",
                          hkv == 1 && ps == 16 ? "GATE " : "", hq, hkv, ps),
          bytes, 0, 3, 20,
          [&] {
            BENCH_CHECK(b.be().PagedAttention({.q = q.view(),
                                               .out = out->view(),
                                               .k_pages = c.kp.view(),
                                               .v_pages = c.vp.view(),
                                               .page_table = c.table.data<int32_t>(),
                                               .cu_q = c.cu.data<int32_t>(),
                                               .context_lens = c.ctx.data<int32_t>(),
                                               .num_seqs = B,
                                               .max_pages_per_seq = c.max_pages,
                                               .max_q_len = 1,
                                               .max_context_len = ctx,
                                               .scale = 0.08838834764831845f}));
          },
          "target >= 80% of copy bandwidth");
    }
  }
  // Prefill: one 16K prompt, causal.
  for (int hkv : {1, 8}) {
    const int T = 16384, hq = 8 * hkv;
    KvCache c = MakeCache(b, 1, T, hkv, 64, {0, T});
    GpuTensor q = b.Random(Shape{T, hq, 128}, DType::kBF16);
    auto out = b.be().Allocate(Shape{T, hq, 128}, DType::kBF16);
    BENCH_CHECK(out.status());
    const double flops = 4.0 * (double(T) * T / 2) * 128 * hq;
    b.Run(
        absl::StrFormat("Paged prefill attn T=16K causal Hq=%d Hkv=%d", hq, hkv), 0, flops, 2, 5,
        [&] {
          BENCH_CHECK(b.be().PagedAttention({.q = q.view(),
                                             .out = out->view(),
                                             .k_pages = c.kp.view(),
                                             .v_pages = c.vp.view(),
                                             .page_table = c.table.data<int32_t>(),
                                             .cu_q = c.cu.data<int32_t>(),
                                             .context_lens = c.ctx.data<int32_t>(),
                                             .num_seqs = 1,
                                             .max_pages_per_seq = c.max_pages,
                                             .max_q_len = T,
                                             .max_context_len = T,
                                             .scale = 0.08838834764831845f}));
        },
        "target >= 50% of bf16 GEMM rate");
  }
}

// ---- small ops at decode batch 64 ----------------------------------------------------------

void SmallOpRows(Bench& b) {
  const int64_t T = 64, hidden = 5120, F = 3200;
  GpuTensor x = b.Random(Shape{T, hidden}, DType::kBF16);
  GpuTensor res = b.Random(Shape{T, hidden}, DType::kBF16);
  GpuTensor w = b.Random(Shape{hidden}, DType::kF32, 0.1f, 1.0f);
  auto y = b.be().Allocate(Shape{T, hidden}, DType::kBF16);
  b.Run("RmsNorm fused residual 64x5120 bf16", 2.0 * T * hidden * 4, 0, 5, 50, [&] {
    BENCH_CHECK(b.be().RmsNorm(
        {.x = x.view(), .residual = res.view(), .weight = w.view(), .out = y->view()}));
  });
  GpuTensor gu = b.Random(Shape{T, 2 * F}, DType::kBF16);
  auto act = b.be().Allocate(Shape{T, F}, DType::kBF16);
  b.Run("SiluMul 64x(2x3200) bf16", 2.0 * T * 3 * F, 0, 5, 50,
        [&] { BENCH_CHECK(b.be().SiluMul({.gate_up = gu.view(), .out = act->view()})); });
  // Prefill-sized streaming ops, where bandwidth is measurable (not launch bound).
  const int64_t TP = 16384;
  GpuTensor xp = b.Random(Shape{TP, hidden}, DType::kBF16);
  GpuTensor rp = b.Random(Shape{TP, hidden}, DType::kBF16);
  auto yp = b.be().Allocate(Shape{TP, hidden}, DType::kBF16);
  b.Run("RmsNorm fused residual 16384x5120 bf16", 2.0 * TP * hidden * 4, 0, 3, 20, [&] {
    BENCH_CHECK(b.be().RmsNorm(
        {.x = xp.view(), .residual = rp.view(), .weight = w.view(), .out = yp->view()}));
  });
  GpuTensor gup = b.Random(Shape{TP, 2 * F}, DType::kBF16);
  auto actp = b.be().Allocate(Shape{TP, F}, DType::kBF16);
  b.Run("SiluMul 16384x(2x3200) bf16", 2.0 * TP * 3 * F, 0, 3, 20,
        [&] { BENCH_CHECK(b.be().SiluMul({.gate_up = gup.view(), .out = actp->view()})); });
  GpuTensor q = b.Random(Shape{TP, 8, 128}, DType::kBF16);
  GpuTensor k = b.Random(Shape{TP, 1, 128}, DType::kBF16);
  GpuTensor qw = b.Random(Shape{128}, DType::kF32, 0.1f, 1.0f);
  std::vector<int32_t> pos(TP);
  std::iota(pos.begin(), pos.end(), 0);
  DeviceBuffer pos_dev = b.Ints(pos);
  b.Run("QkNormRope 16384 x (8+1) x 128 bf16", 2.0 * TP * 9 * 128 * 2, 0, 3, 20, [&] {
    BENCH_CHECK(b.be().QkNormRope({.q = q.view(),
                                   .k = k.view(),
                                   .q_weight = qw.view(),
                                   .k_weight = qw.view(),
                                   .positions = pos_dev.data<int32_t>(),
                                   .theta = 5e6f}));
  });
  // GKA elementwise ops at 16 heads (TP 8 per-rank at 64 heads would be 8).
  const int64_t H = 16, C = 2048;
  GpuTensor raw = b.Random(Shape{TP, C}, DType::kBF16);
  GpuTensor cw = b.Random(Shape{C, 4}, DType::kF32, 0.3f);
  GpuTensor cst = b.Random(Shape{1, C, 3}, DType::kF32);
  auto conv_out = b.be().Allocate(Shape{TP, C}, DType::kF32);
  DeviceBuffer zero = b.Ints({0}), cu = b.Ints({0, static_cast<int32_t>(TP)});
  b.Run("CausalConv 16384x2048 bf16->f32", TP * C * (2.0 + 4.0), 0, 3, 20, [&] {
    BENCH_CHECK(b.be().CausalConv({.x = raw.view(),
                                   .out = conv_out->view(),
                                   .weight = cw.view(),
                                   .state = cst.view(),
                                   .slots = zero.data<int32_t>(),
                                   .cu_seqlens = cu.data<int32_t>(),
                                   .num_seqs = 1}));
  });
  GpuTensor core = b.Random(Shape{TP * H, 128}, DType::kF32);
  GpuTensor z = b.Random(Shape{TP * H, 128}, DType::kBF16);
  auto gated = b.be().Allocate(Shape{TP * H, 128}, DType::kBF16);
  b.Run("GatedRmsNorm 16384x16x128 f32,bf16->bf16", TP * H * 128 * (4.0 + 2 + 2), 0, 3, 20, [&] {
    BENCH_CHECK(b.be().GatedRmsNorm(
        {.x = core.view(), .gate = z.view(), .weight = qw.view(), .out = gated->view()}));
  });
}

void SampleRows(Bench& b) {
  const int64_t B = 64, V = 151936;
  GpuTensor logits = b.Random(Shape{B, V}, DType::kF32, 2.0f);
  std::vector<kernels::SamplingConfig> greedy(B, {.temperature = 0.0f});
  std::vector<kernels::SamplingConfig> topp(B, {.temperature = 0.8f, .top_k = 50, .top_p = 0.9f});
  // OpenAI top_logprobs at its limit: 20 more passes over each row.
  std::vector<kernels::SamplingConfig> top20(
      B, {.temperature = 0.0f, .num_top_logprobs = kernels::kMaxTopLogprobs});
  std::vector<uint64_t> steps(B, 1);
  std::vector<int32_t> ids(B), top_ids(B * kernels::kMaxTopLogprobs);
  std::vector<float> top_lps(B * kernels::kMaxTopLogprobs);
  for (auto* cfg : {&greedy, &topp, &top20}) {
    b.Run(cfg == &greedy ? "Sample greedy B=64 V=151936"
          : cfg == &topp ? "Sample top-k 50 top-p 0.9 B=64"
                         : "Sample greedy + top_logprobs 20 B=64",
          B * V * 4.0, 0, 2, 10, [&] {
            BENCH_CHECK(b.be().Sample({.logits = logits.view(),
                                       .configs = cfg->data(),
                                       .steps = steps.data(),
                                       .out_ids = ids.data(),
                                       .out_top_ids = top_ids.data(),
                                       .out_top_logprobs = top_lps.data(),
                                       .num_seqs = static_cast<int32_t>(B)}));
          });
  }
}

// ---- one decode step of the 32B model on one GPU, broken down by op ----------------------
//
// Batch 64 at 4K context, TP = 1 shapes (hidden 5120, 64 q / 8 KV heads, FFN 25600, 64 GKA
// heads, num_iter 30), bf16 weights and activations, fp32 GKA state. The whole model does not
// fit one 80 GB GPU with its KV cache, so one attention layer and one GKA layer are timed op
// by op (each op twice, as everywhere) and scaled by the 32 + 32 layers of the real pattern;
// embedding, final norm, lm_head and greedy sampling are added once. The op sequence is the
// engine's (common/engine/engine.cc).
struct StepOp {
  std::string name;
  double us;  // min of the two runs
  int calls;  // per decode step
};

void DecodeStepBreakdown(Bench& b) {
  const int64_t B = 64, hidden = 5120, D = 128, hq = 64, hkv = 8, ffn = 25600, H = 64;
  const int ctx = 4096, ps = 16, V = 151936, layers_each = 32;
  const DType A = DType::kBF16, F32 = DType::kF32;
  std::vector<StepOp> ops;
  auto time = [&](const std::string& name, int calls, const std::function<void()>& fn) {
    const Row r = b.Run("step: " + name, 0, 0, 3, 20, fn);
    ops.push_back({name, std::min(r.us1, r.us2), calls});
  };
  auto alloc = [&](Shape s, DType d) {
    auto buf = b.be().Allocate(s, d);
    BENCH_CHECK(buf.status());
    return std::move(buf).value();
  };
  auto gemm = [&](const std::string& name, int calls, const TensorView& x, int64_t n,
                  DeviceBuffer& y) {
    GpuTensor w = b.Random(Shape{n, x.shape[1]}, A, 0.02f);
    y = alloc(Shape{x.shape[0], n}, y.empty() ? A : y.view().dtype);
    time(name, calls, [&] { BENCH_CHECK(b.be().Gemm({.x = x, .w = w.view(), .y = y.view()})); });
  };
  GpuTensor h = b.Random(Shape{B, hidden}, A), res = b.Random(Shape{B, hidden}, A);
  GpuTensor norm_w = b.Random(Shape{hidden}, F32, 0.1f, 1.0f);
  DeviceBuffer xn = alloc(Shape{B, hidden}, A);
  auto rms = [&](const std::string& name) {
    time(name, 4 * layers_each + 1, [&] {
      BENCH_CHECK(b.be().RmsNorm(
          {.x = h.view(), .residual = res.view(), .weight = norm_w.view(), .out = xn.view()}));
    });
  };
  std::vector<int32_t> iota(B);
  std::iota(iota.begin(), iota.end(), 0);
  DeviceBuffer cu = b.Ints([&] {
    std::vector<int32_t> c(B + 1);
    std::iota(c.begin(), c.end(), 0);
    return c;
  }());

  // Global ops.
  GpuTensor table = b.Random(Shape{V, hidden}, A);
  DeviceBuffer ids = b.Ints(iota);
  DeviceBuffer emb = alloc(Shape{B, hidden}, A);
  time("Embedding", 1, [&] {
    BENCH_CHECK(
        b.be().Embedding({.table = table.view(), .ids = ids.data<int32_t>(), .out = emb.view()}));
  });
  DeviceBuffer logits;
  logits = alloc(Shape{1}, F32);
  gemm("lm_head Gemm 5120->151936 (F32 logits)", 1, xn.view(), V, logits);
  std::vector<kernels::SamplingConfig> greedy(B, {.temperature = 0.0f});
  std::vector<uint64_t> steps(B, 0);
  std::vector<int32_t> out_ids(B);
  time("Sample greedy", 1, [&] {
    BENCH_CHECK(b.be().Sample({.logits = logits.view(),
                               .configs = greedy.data(),
                               .steps = steps.data(),
                               .out_ids = out_ids.data(),
                               .num_seqs = static_cast<int32_t>(B)}));
  });

  // Attention layer.
  rms("RmsNorm + residual (2 per layer, + final)");
  DeviceBuffer q, k, v, o, gu, act, mlp_out;
  gemm("attn q_proj 5120->8192", layers_each, xn.view(), hq * D, q);
  gemm("attn k_proj 5120->1024", layers_each, xn.view(), hkv * D, k);
  gemm("attn v_proj 5120->1024", layers_each, xn.view(), hkv * D, v);
  GpuTensor qkw = b.Random(Shape{D}, F32, 0.1f, 1.0f);
  std::vector<int32_t> pos(B, ctx - 1);
  DeviceBuffer pos_dev = b.Ints(pos);
  const TensorView q3{q.view().ptr, A, Shape{B, hq, D}, q.view().device};
  const TensorView k3{k.view().ptr, A, Shape{B, hkv, D}, k.view().device};
  const TensorView v3{v.view().ptr, A, Shape{B, hkv, D}, v.view().device};
  time("QkNormRope", layers_each, [&] {
    BENCH_CHECK(b.be().QkNormRope({.q = q3,
                                   .k = k3,
                                   .q_weight = qkw.view(),
                                   .k_weight = qkw.view(),
                                   .positions = pos_dev.data<int32_t>(),
                                   .theta = 5e6f}));
  });
  KvCache c = MakeCache(b, B, ctx, hkv, ps, [&] {
    std::vector<int32_t> cq(B + 1);
    std::iota(cq.begin(), cq.end(), 0);
    return cq;
  }());
  std::vector<int32_t> slot_map(B);
  for (int64_t i = 0; i < B; ++i) slot_map[i] = static_cast<int32_t>(i * (ctx / ps) * ps);
  DeviceBuffer slot_dev = b.Ints(slot_map);
  time("KvCacheWrite", layers_each, [&] {
    BENCH_CHECK(b.be().KvCacheWrite({.k = k3,
                                     .v = v3,
                                     .k_pages = c.kp.view(),
                                     .v_pages = c.vp.view(),
                                     .slot_mapping = slot_dev.data<int32_t>()}));
  });
  DeviceBuffer attn = alloc(Shape{B, hq, D}, A);
  time("PagedAttention decode ctx 4K Hq64/Hkv8", layers_each, [&] {
    BENCH_CHECK(b.be().PagedAttention({.q = q3,
                                       .out = attn.view(),
                                       .k_pages = c.kp.view(),
                                       .v_pages = c.vp.view(),
                                       .page_table = c.table.data<int32_t>(),
                                       .cu_q = c.cu.data<int32_t>(),
                                       .context_lens = c.ctx.data<int32_t>(),
                                       .num_seqs = static_cast<int32_t>(B),
                                       .max_pages_per_seq = c.max_pages,
                                       .max_q_len = 1,
                                       .max_context_len = ctx,
                                       .scale = 0.08838834764831845f}));
  });
  const TensorView attn2{attn.view().ptr, A, Shape{B, hq * D}, attn.view().device};
  gemm("o_proj 8192->5120 (attn and GKA)", 2 * layers_each, attn2, hidden, o);
  gemm("MLP gate_up 5120->51200", 2 * layers_each, xn.view(), 2 * ffn, gu);
  act = alloc(Shape{B, ffn}, A);
  time("SiluMul 25600", 2 * layers_each,
       [&] { BENCH_CHECK(b.be().SiluMul({.gate_up = gu.view(), .out = act.view()})); });
  gemm("MLP down 25600->5120", 2 * layers_each, act.view(), hidden, mlp_out);

  // GKA layer (attention-shaped q/k/v/o GEMMs are the same shapes: counted above for o_proj).
  DeviceBuffer gq, gk, gv, ga, gb, gc, gz;
  gemm("gka q_proj 5120->8192", layers_each, xn.view(), H * D, gq);
  gemm("gka k_proj 5120->1024", layers_each, xn.view(), hkv * D, gk);
  gemm("gka v_proj 5120->1024", layers_each, xn.view(), hkv * D, gv);
  gemm("gka a/b/alpha_proj 5120->64 (x3)", 3 * layers_each, xn.view(), H, ga);
  gemm("gka g_proj 5120->8192", layers_each, xn.view(), H * D, gz);
  GpuTensor cw = b.Random(Shape{H * D, 4}, F32, 0.3f);
  GpuTensor cst = b.Random(Shape{B, H * D, 3}, F32);
  DeviceBuffer qc = alloc(Shape{B, H * D}, F32), kc = alloc(Shape{B, hkv * D}, F32),
               vc = alloc(Shape{B, hkv * D}, F32);
  DeviceBuffer slots = b.Ints(iota);
  time("CausalConv q (8192 ch)", layers_each, [&] {
    BENCH_CHECK(b.be().CausalConv({.x = gq.view(),
                                   .out = qc.view(),
                                   .weight = cw.view(),
                                   .state = cst.view(),
                                   .slots = slots.data<int32_t>(),
                                   .cu_seqlens = cu.data<int32_t>(),
                                   .num_seqs = static_cast<int32_t>(B)}));
  });
  GpuTensor cw2 = b.Random(Shape{hkv * D, 4}, F32, 0.3f);
  GpuTensor cst2 = b.Random(Shape{B, hkv * D, 3}, F32);
  time("CausalConv k, v (1024 ch, x2)", 2 * layers_each, [&] {
    BENCH_CHECK(b.be().CausalConv({.x = gk.view(),
                                   .out = kc.view(),
                                   .weight = cw2.view(),
                                   .state = cst2.view(),
                                   .slots = slots.data<int32_t>(),
                                   .cu_seqlens = cu.data<int32_t>(),
                                   .num_seqs = static_cast<int32_t>(B)}));
  });
  GpuTensor alog = b.Random(Shape{H}, F32, 0.5f, 1.0f), dtb = b.Random(Shape{H}, F32, 0.5f, -4.f);
  DeviceBuffer qh = alloc(Shape{B, H, D}, F32), kh = alloc(Shape{B, H, D}, F32),
               vh = alloc(Shape{B, H, D}, F32), al = alloc(Shape{B, H}, F32),
               gg = alloc(Shape{B, H}, F32);
  time("GkaGates", layers_each, [&] {
    BENCH_CHECK(b.be().GkaGates({.q_conv = qc.view(),
                                 .k_conv = kc.view(),
                                 .v_conv = vc.view(),
                                 .a = ga.view(),
                                 .b = ga.view(),
                                 .c = ga.view(),
                                 .a_log = alog.view(),
                                 .dt_bias = dtb.view(),
                                 .b_bias = alog.view(),
                                 .alpha_bias = alog.view(),
                                 .q_out = qh.view(),
                                 .k_out = kh.view(),
                                 .v_out = vh.view(),
                                 .alpha = al.view(),
                                 .g = gg.view()}));
  });
  GkaBuffers st = MakeGka(
      b, B, H, B,
      [&] {
        std::vector<int32_t> cq(B + 1);
        std::iota(cq.begin(), cq.end(), 0);
        return cq;
      }(),
      30);
  time("GkaCore decode 64 seqs x 64 heads num_iter 30", layers_each,
       [&] { GkaCoreRun(b, st, static_cast<int>(B), 1); });
  DeviceBuffer gated = alloc(Shape{B * H, D}, A);
  GpuTensor onw = b.Random(Shape{D}, F32, 0.1f, 1.0f);
  const TensorView z2{gz.view().ptr, A, Shape{B * H, D}, gz.view().device};
  const TensorView core2{st.out.view().ptr, F32, Shape{B * H, D}, st.out.view().device};
  time("GatedRmsNorm", layers_each, [&] {
    BENCH_CHECK(
        b.be().GatedRmsNorm({.x = core2, .gate = z2, .weight = onw.view(), .out = gated.view()}));
  });

  double total = 0;
  for (const StepOp& op : ops) total += op.us * op.calls;
  std::printf("\n==== one decode step, 32B shape (TP 1), batch 64, ctx 4K, on %s ====\n",
              b.device_name().c_str());
  std::printf("%-48s | %9s | %5s | %10s | %6s\n", "op", "us/call", "calls", "us/step", "share");
  std::sort(ops.begin(), ops.end(),
            [](const StepOp& x, const StepOp& y) { return x.us * x.calls > y.us * y.calls; });
  for (const StepOp& op : ops) {
    std::printf("%-48s | %9.1f | %5d | %10.1f | %5.1f%%\n", op.name.c_str(), op.us, op.calls,
                op.us * op.calls, 100.0 * op.us * op.calls / total);
  }
  std::printf("%-48s | %9s | %5s | %10.1f | (%.1f tok/s at batch 64)\n", "total", "", "", total,
              64.0 / (total * 1e-6));
}

// ---- a whole decode step as one CUDA graph ------------------------------------------------

// One TP = 8 rank of the 32B model (hidden 5120; 8 query / 1 KV heads per attention layer; 8
// GKA heads; FFN 3200; lm_head shard 18992), 32 attention + 32 GKA layers with distinct weights,
// ctx 4K, bf16, num_iter 30: every op of a decode step except sampling, issued op by op
// (eager) and replayed as one captured CUDA graph. The difference is the host launch cost the
// graph removes; the ops are the backend's (parity-tested one by one), so this also shows the
// decode path is capturable as the backend documents.
void DecodeGraphRows(Bench& b, int64_t B) {
  const int64_t hidden = 5120, D = 128, hq = 8, hkv = 1, H = 8, ffn = 3200, V = 18992;
  const int ctx = 4096, ps = 16, layers = 64;
  const DType A = DType::kBF16, F32 = DType::kF32;
  auto alloc = [&](Shape s, DType d) {
    auto buf = b.be().Allocate(s, d);
    BENCH_CHECK(buf.status());
    return std::move(buf).value();
  };
  auto weight = [&](int64_t n, int64_t k) { return b.Random(Shape{n, k}, A, 0.02f); };
  std::vector<int32_t> iota(B), cu_v(B + 1);
  std::iota(iota.begin(), iota.end(), 0);
  std::iota(cu_v.begin(), cu_v.end(), 0);
  DeviceBuffer ids = b.Ints(iota), cu = b.Ints(cu_v), slots = b.Ints(iota);
  DeviceBuffer pos = b.Ints(std::vector<int32_t>(B, ctx - 1));
  std::vector<int32_t> slot_map(B);
  for (int64_t i = 0; i < B; ++i) slot_map[i] = static_cast<int32_t>(i * (ctx / ps) * ps);
  DeviceBuffer slot_dev = b.Ints(slot_map);

  struct Layer {
    bool gka;
    GpuTensor n1, n2, wq, wk, wv, wo, wgu, wd, wa, wb, wc, wg, qkw, cwq, cwk, cwv, alog, dtb;
    GpuTensor cq, ck, cv;  // conv states
    KvCache kv;
    GkaBuffers st;
  };
  std::vector<Layer> L(layers);
  for (int l = 0; l < layers; ++l) {
    Layer& y = L[l];
    y.gka = l % 2 == 1;
    y.n1 = b.Random(Shape{hidden}, F32, 0.1f, 1.0f);
    y.n2 = b.Random(Shape{hidden}, F32, 0.1f, 1.0f);
    y.wq = weight(hq * D, hidden);
    y.wk = weight(hkv * D, hidden);
    y.wv = weight(hkv * D, hidden);
    y.wo = weight(hidden, hq * D);
    y.wgu = weight(2 * ffn, hidden);
    y.wd = weight(hidden, ffn);
    y.qkw = b.Random(Shape{D}, F32, 0.1f, 1.0f);  // q/k norm or o_norm weight
    if (y.gka) {
      y.wa = weight(H, hidden);
      y.wb = weight(H, hidden);
      y.wc = weight(H, hidden);
      y.wg = weight(H * D, hidden);
      y.cwq = b.Random(Shape{hq * D, 4}, F32, 0.3f);
      y.cwk = b.Random(Shape{hkv * D, 4}, F32, 0.3f);
      y.cwv = b.Random(Shape{hkv * D, 4}, F32, 0.3f);
      y.cq = b.Random(Shape{B, hq * D, 3}, F32);
      y.ck = b.Random(Shape{B, hkv * D, 3}, F32);
      y.cv = b.Random(Shape{B, hkv * D, 3}, F32);
      y.alog = b.Random(Shape{H}, F32, 0.5f, 1.0f);
      y.dtb = b.Random(Shape{H}, F32, 0.5f, -4.f);
      y.st = MakeGka(b, B, H, B, cu_v, 30);
    } else {
      y.kv = MakeCache(b, static_cast<int>(B), ctx, static_cast<int>(hkv), ps, cu_v);
    }
  }
  GpuTensor table = b.Random(Shape{V, hidden}, A), lm = weight(V, hidden);
  GpuTensor fnorm = b.Random(Shape{hidden}, F32, 0.1f, 1.0f);
  DeviceBuffer h = alloc(Shape{B, hidden}, A), res = alloc(Shape{B, hidden}, A),
               xn = alloc(Shape{B, hidden}, A), mix = alloc(Shape{B, hidden}, A);
  DeviceBuffer q = alloc(Shape{B, hq * D}, A), k = alloc(Shape{B, hkv * D}, A),
               v = alloc(Shape{B, hkv * D}, A), attn = alloc(Shape{B, hq * D}, A);
  DeviceBuffer gu = alloc(Shape{B, 2 * ffn}, A), act = alloc(Shape{B, ffn}, A);
  DeviceBuffer ga = alloc(Shape{B, H}, A), gb = alloc(Shape{B, H}, A), gc = alloc(Shape{B, H}, A),
               gz = alloc(Shape{B, H * D}, A);
  DeviceBuffer qc = alloc(Shape{B, hq * D}, F32), kc = alloc(Shape{B, hkv * D}, F32),
               vc = alloc(Shape{B, hkv * D}, F32);
  DeviceBuffer gated = alloc(Shape{B, H * D}, A), logits = alloc(Shape{B, V}, F32);
  BENCH_CHECK(b.be().Fill(res.view(), 0.0f));
  auto view3 = [](const DeviceBuffer& x, int64_t h3) {
    return TensorView{x.view().ptr, x.view().dtype, Shape{x.view().shape[0], h3, 128},
                      x.view().device};
  };
  auto& be = b.be();
  auto step = [&] {
    BENCH_CHECK(be.Embedding({.table = table.view(), .ids = ids.data<int32_t>(), .out = h.view()}));
    for (Layer& y : L) {
      BENCH_CHECK(be.RmsNorm(
          {.x = h.view(), .residual = res.view(), .weight = y.n1.view(), .out = xn.view()}));
      BENCH_CHECK(be.Gemm({.x = xn.view(), .w = y.wq.view(), .y = q.view()}));
      BENCH_CHECK(be.Gemm({.x = xn.view(), .w = y.wk.view(), .y = k.view()}));
      BENCH_CHECK(be.Gemm({.x = xn.view(), .w = y.wv.view(), .y = v.view()}));
      if (!y.gka) {
        BENCH_CHECK(be.QkNormRope({.q = view3(q, hq),
                                   .k = view3(k, hkv),
                                   .q_weight = y.qkw.view(),
                                   .k_weight = y.qkw.view(),
                                   .positions = pos.data<int32_t>(),
                                   .theta = 5e6f}));
        BENCH_CHECK(be.KvCacheWrite({.k = view3(k, hkv),
                                     .v = view3(v, hkv),
                                     .k_pages = y.kv.kp.view(),
                                     .v_pages = y.kv.vp.view(),
                                     .slot_mapping = slot_dev.data<int32_t>()}));
        BENCH_CHECK(be.PagedAttention({.q = view3(q, hq),
                                       .out = view3(attn, hq),
                                       .k_pages = y.kv.kp.view(),
                                       .v_pages = y.kv.vp.view(),
                                       .page_table = y.kv.table.data<int32_t>(),
                                       .cu_q = y.kv.cu.data<int32_t>(),
                                       .context_lens = y.kv.ctx.data<int32_t>(),
                                       .num_seqs = static_cast<int32_t>(B),
                                       .max_pages_per_seq = y.kv.max_pages,
                                       .max_q_len = 1,
                                       .max_context_len = ctx,
                                       .scale = 0.08838834764831845f}));
        BENCH_CHECK(be.Gemm({.x = attn.view(), .w = y.wo.view(), .y = mix.view()}));
      } else {
        BENCH_CHECK(be.Gemm({.x = xn.view(), .w = y.wa.view(), .y = ga.view()}));
        BENCH_CHECK(be.Gemm({.x = xn.view(), .w = y.wb.view(), .y = gb.view()}));
        BENCH_CHECK(be.Gemm({.x = xn.view(), .w = y.wc.view(), .y = gc.view()}));
        BENCH_CHECK(be.Gemm({.x = xn.view(), .w = y.wg.view(), .y = gz.view()}));
        struct Conv {
          DeviceBuffer &x, &out;
          GpuTensor &w, &st;
        };
        for (const Conv& c :
             {Conv{q, qc, y.cwq, y.cq}, Conv{k, kc, y.cwk, y.ck}, Conv{v, vc, y.cwv, y.cv}}) {
          BENCH_CHECK(be.CausalConv({.x = c.x.view(),
                                     .out = c.out.view(),
                                     .weight = c.w.view(),
                                     .state = c.st.view(),
                                     .slots = slots.data<int32_t>(),
                                     .cu_seqlens = cu.data<int32_t>(),
                                     .num_seqs = static_cast<int32_t>(B)}));
        }
        BENCH_CHECK(be.GkaGates({.q_conv = qc.view(),
                                 .k_conv = kc.view(),
                                 .v_conv = vc.view(),
                                 .a = ga.view(),
                                 .b = gb.view(),
                                 .c = gc.view(),
                                 .a_log = y.alog.view(),
                                 .dt_bias = y.dtb.view(),
                                 .b_bias = y.alog.view(),
                                 .alpha_bias = y.alog.view(),
                                 .q_out = y.st.q.view(),
                                 .k_out = y.st.k.view(),
                                 .v_out = y.st.v.view(),
                                 .alpha = y.st.alpha.view(),
                                 .g = y.st.g.view()}));
        GkaCoreRun(b, y.st, static_cast<int>(B), 1);
        const TensorView core{y.st.out.view().ptr, F32, Shape{B * H, D}, y.st.out.view().device};
        const TensorView gated2{gated.view().ptr, A, Shape{B * H, D}, gated.view().device};
        const TensorView z2{gz.view().ptr, A, Shape{B * H, D}, gz.view().device};
        BENCH_CHECK(
            be.GatedRmsNorm({.x = core, .gate = z2, .weight = y.qkw.view(), .out = gated2}));
        BENCH_CHECK(be.Gemm({.x = gated.view(), .w = y.wo.view(), .y = mix.view()}));
      }
      BENCH_CHECK(be.RmsNorm(
          {.x = mix.view(), .residual = res.view(), .weight = y.n2.view(), .out = xn.view()}));
      BENCH_CHECK(be.Gemm({.x = xn.view(), .w = y.wgu.view(), .y = gu.view()}));
      BENCH_CHECK(be.SiluMul({.gate_up = gu.view(), .out = act.view()}));
      BENCH_CHECK(be.Gemm({.x = act.view(), .w = y.wd.view(), .y = h.view()}));
    }
    BENCH_CHECK(be.RmsNorm(
        {.x = h.view(), .residual = res.view(), .weight = fnorm.view(), .out = xn.view()}));
    BENCH_CHECK(be.Gemm({.x = xn.view(), .w = lm.view(), .y = logits.view()}));
  };
  const std::string shape = absl::StrFormat("TP8 rank, 64 layers, batch %d, ctx 4K", B);
  b.Run("decode step eager (" + shape + ")", 0, 0, 3, 20, step);
  // Capture after the eager warm-up: scratch (split-KV attention) has grown to its size.
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(b.stream(), cudaStreamCaptureModeThreadLocal));
  step();
  CUDA_CHECK(cudaStreamEndCapture(b.stream(), &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  size_t nodes = 0;
  CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
  b.Run(absl::StrFormat("decode step CUDA graph, %d nodes (%s)", nodes, shape), 0, 0, 3, 20,
        [&] { CUDA_CHECK(cudaGraphLaunch(exec, b.stream())); });
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
}

}  // namespace
}  // namespace gka::gpu_testing

int main(int argc, char** argv) {
  using namespace gka::gpu_testing;
  bool quick = false, gka_only = false, prefill_only = false, graphs = false, prefill_attn = false;
  for (int i = 1; i < argc; ++i) {
    quick |= std::strcmp(argv[i], "--quick") == 0;
    gka_only |= std::strcmp(argv[i], "--gka") == 0;
    prefill_only |= std::strcmp(argv[i], "--gka-prefill") == 0;
    graphs |= std::strcmp(argv[i], "--graphs") == 0;
    // Only the prefill-attention rows (for profiling them under ncu).
    prefill_attn |= std::strcmp(argv[i], "--prefill-attn") == 0;
  }
  if (gka::kernels::cuda::CudaDeviceCount() == 0) {
    std::printf("no CUDA device: nothing to benchmark\n");
    return 0;
  }
  Bench b(quick);
  std::printf("device: %s\n", b.device_name().c_str());
  if (graphs) {
    for (int64_t batch : {1, 64}) DecodeGraphRows(b, batch);
    b.PrintTable();
    return 0;
  }
  if (prefill_attn) {
    AttentionRows(b, /*decode=*/false);
    b.PrintTable();
    return 0;
  }
  if (prefill_only) {
    GkaPrefillRows(b);
    b.PrintTable();
    return 0;
  }
  const double copy = CopyBandwidth(b);
  const double gemm = CublasRate(b, 8192, 8192, 8192, "peak");
  b.SetCeilings(copy, gemm);
  GkaDecodeRows(b);
  if (!gka_only) {
    AttentionRows(b);
    GemmRows(b);
    SmallOpRows(b);
    SampleRows(b);
  }
  GkaPrefillRows(b);
  b.PrintTable();
  if (!gka_only) DecodeStepBreakdown(b);
  return 0;
}
