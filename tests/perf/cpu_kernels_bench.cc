// CPU reference kernel micro benchmarks: Gemm, PagedAttention decode, GkaCore decode.
// Counters: GFLOP/s (Gemm, GkaCore) and keys/s (attention). The CPU backend is the
// reference for correctness; these numbers say how large a model it can run in tests.
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
namespace {

// A host F32 tensor with random values in [-1, 1).
struct Tensor {
  tensor::Shape shape;
  std::vector<float> values;
  explicit Tensor(tensor::Shape s, uint32_t seed = 1) : shape(s), values(s.numel()) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& v : values) v = dist(rng);
  }
  tensor::TensorView view() { return {values.data(), tensor::DType::kF32, shape}; }
};

void Check(benchmark::State& state, const absl::Status& s) {
  if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
}

// Args: M, N, K.
void BM_Gemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor x({m, k}), w({n, k}, 2), y({m, n});
  for (auto _ : state) {
    Check(state, Gemm({.x = x.view(), .w = w.view(), .y = y.view()}));
    benchmark::DoNotOptimize(y.values.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Gemm)
    ->Args({1, 4096, 4096})
    ->Args({8, 4096, 4096})
    ->Args({64, 2048, 2048})
    ->Args({256, 1024, 1024})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Decode: one query per sequence. Args: batch, context length. Per-rank shape of the 32B
// model at TP = 8: Hq = 8, Hkv = 1, D = 128; page size 16.
void BM_PagedAttentionDecode(benchmark::State& state) {
  constexpr int kHq = 8, kHkv = 1, kD = 128, kPage = 16;
  const int batch = state.range(0), context = state.range(1);
  const int pages_per_seq = (context + kPage - 1) / kPage;
  Tensor k_pages({batch * pages_per_seq, kPage, kHkv, kD}, 2);
  Tensor v_pages({batch * pages_per_seq, kPage, kHkv, kD}, 3);
  Tensor q({batch, kHq, kD}), out({batch, kHq, kD});
  std::vector<int32_t> page_table(batch * pages_per_seq);
  std::iota(page_table.begin(), page_table.end(), 0);
  std::vector<int32_t> cu_q(batch + 1), context_lens(batch, context);
  std::iota(cu_q.begin(), cu_q.end(), 0);
  for (auto _ : state) {
    Check(state, PagedAttention({.q = q.view(),
                                 .out = out.view(),
                                 .k_pages = k_pages.view(),
                                 .v_pages = v_pages.view(),
                                 .page_table = page_table.data(),
                                 .cu_q = cu_q.data(),
                                 .context_lens = context_lens.data(),
                                 .num_seqs = batch,
                                 .max_pages_per_seq = pages_per_seq,
                                 .max_q_len = 1,
                                 .max_context_len = context,
                                 .scale = 1.0f / std::sqrt(float{kD})}));
    benchmark::DoNotOptimize(out.values.data());
  }
  state.counters["keys/s"] = benchmark::Counter(
      static_cast<double>(batch) * context * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PagedAttentionDecode)
    ->Args({1, 1024})
    ->Args({1, 8192})
    ->Args({8, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Decode: one token per sequence, H = 8 heads, num_iter 30. Args: batch, head_dim.
void BM_GkaCoreDecode(benchmark::State& state) {
  constexpr int kH = 8, kNumIter = 30;
  const int batch = state.range(0), d = state.range(1);
  Tensor q({batch, kH, d}), k({batch, kH, d}, 2), v({batch, kH, d}, 3);
  Tensor alpha({batch, kH}, 4), g({batch, kH}, 5), out({batch, kH, d});
  for (float& x : g.values) x = -0.01f * std::abs(x);  // decays close to 1 keep h_kk alive
  for (float& x : alpha.values) x = 0.5f + 0.4f * x;
  // Unit q̂ and small k̃ as GkaGates would produce.
  for (int row = 0; row < batch * kH; ++row) {
    float qn = 0.0f, kn = 0.0f;
    for (int j = 0; j < d; ++j) {
      qn += q.values[row * d + j] * q.values[row * d + j];
      kn += k.values[row * d + j] * k.values[row * d + j];
    }
    for (int j = 0; j < d; ++j) {
      q.values[row * d + j] /= std::sqrt(qn);
      k.values[row * d + j] *= 0.5f / std::sqrt(kn);
    }
  }
  Tensor h_kk({batch, kH, d, d}, 6), h_kv({batch, kH, d, d}, 7);
  for (float& x : h_kk.values) x = 0.0f;
  std::vector<int32_t> slots(batch), cu(batch + 1), num_iter(batch, kNumIter);
  std::iota(slots.begin(), slots.end(), 0);
  std::iota(cu.begin(), cu.end(), 0);
  for (auto _ : state) {
    Check(state, GkaCore({.q = q.view(),
                          .k = k.view(),
                          .v = v.view(),
                          .alpha = alpha.view(),
                          .g = g.view(),
                          .out = out.view(),
                          .h_kk = h_kk.view(),
                          .h_kv = h_kv.view(),
                          .slots = slots.data(),
                          .cu_seqlens = cu.data(),
                          .num_iter = num_iter.data(),
                          .num_seqs = batch,
                          .max_seqlen = 1,
                          .ridge_ratio = 0.02f,
                          .scale = 1.0f / std::sqrt(float(d))}));
    benchmark::DoNotOptimize(out.values.data());
  }
  // Per head-token: N solver mat-vecs plus the two state updates and the readout (≈ 2·D² each).
  const double flops = 2.0 * (kNumIter + 3) * d * d * kH * batch;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(batch) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GkaCoreDecode)
    ->Args({1, 64})
    ->Args({1, 128})
    ->Args({8, 64})
    ->Args({8, 128})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace gka::kernels::cpu
