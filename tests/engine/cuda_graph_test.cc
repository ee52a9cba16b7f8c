// Decode steps through CUDA graphs (EngineOptions::cuda_graphs) against the same engine run
// op by op (label gpu; skipped without a GPU).
//
// Two engines on one random head_dim-128 checkpoint (*-GKA-*-GKA, 8 q / 2 kv heads, the
// bf16 tensor-core attention path), one with graphs and one without, get the same steps:
// a varlen prefill, then decode batches of changing size (buckets 1, 2, 4, 8, 16, padded with
// empty sequences), a long prefill in between (workspace growth makes every graph stale),
// a sequence removed and its slot reused, contexts crossing a context bucket, per-sequence
// num_iter. Every step's logits must agree: fp32 within 2e-5 relative L2 (only the GEMM row
// count and the attention split count differ, i.e. summation order), bf16 within 2e-2 with
// argmax agreement >= 90% (those orders flip bf16 roundings, which then propagate). A graph
// that replayed stale metadata or pointers would be off by O(1). The graph engine must have
// captured and replayed graphs and recaptured after the long prefill.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/check.h"
#include "common/engine/engine.h"
#include "common/model/safetensors.h"
#include "common/model/tiny_model.h"
#include "kernels/registry.h"
#include "tests/testing/golden_util.h"

namespace gka::engine {
namespace {

using testing::RelL2;

class CudaGraphTest : public ::testing::TestWithParam<tensor::DType> {
 protected:
  static void SetUpTestSuite() {
    if (!kernels::CudaAvailable()) return;
    dir_ = (std::filesystem::temp_directory_path() /
            absl::StrCat("gka_cuda_graph_test_", ::getpid()))
               .string();
    model::TinyModelOptions o;
    o.pattern = "*-GKA-*-GKA";
    o.hidden_size = 256;
    o.intermediate_size = 512;
    o.num_attention_heads = 8;
    o.num_key_value_heads = 2;
    o.head_dim = 128;
    o.vocab_size = 4096;
    o.weight_dtype = tensor::DType::kF32;
    o.seed = 7;
    GKA_CHECK_OK(model::MakeTinyModel(o, dir_));
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void SetUp() override {
    if (!kernels::CudaAvailable()) GTEST_SKIP() << "no CUDA device (or CUDA not built)";
  }

  static std::unique_ptr<Engine> Make(tensor::DType dtype, bool graphs) {
    auto cfg = model::ModelConfig::FromJsonFile(dir_ + "/config.json");
    GKA_CHECK(cfg.ok()) << cfg.status();
    auto ckpt = model::Checkpoint::Open(dir_);
    GKA_CHECK(ckpt.ok()) << ckpt.status();
    auto eng = Engine::Create({.backend = kernels::BackendKind::kCuda,
                               .dtype = dtype,
                               .page_size = 16,
                               .num_state_slots = 12,
                               .max_seq_len = 2048,
                               .cuda_graphs = graphs},
                              *cfg, **ckpt);
    GKA_CHECK(eng.ok()) << eng.status();
    return std::move(*eng);
  }

  static std::string dir_;
};
std::string CudaGraphTest::dir_;

std::vector<int32_t> Tokens(int n, uint32_t seed) {
  std::vector<int32_t> ids;
  uint32_t x = 2654435761u * (seed + 1);
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    ids.push_back(static_cast<int32_t>((x >> 8) % 4096));
  }
  return ids;
}

int32_t Argmax(const float* row, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 1; i < n; ++i) best = row[i] > row[best] ? static_cast<int32_t>(i) : best;
  return best;
}

TEST_P(CudaGraphTest, DecodeGraphsMatchOpByOp) {
  const tensor::DType dtype = GetParam();
  const bool f32 = dtype == tensor::DType::kF32;
  const double tol = f32 ? 2e-5 : 2e-2;
  std::unique_ptr<Engine> eager = Make(dtype, false), graph = Make(dtype, true);
  ASSERT_FALSE(eager->graph_stats().enabled);
  ASSERT_TRUE(graph->graph_stats().enabled) << "graphs not enabled on the CUDA backend";
  const int64_t V = graph->vocab_size();

  double worst = 0;
  int64_t rows = 0, agree = 0;
  int step_no = 0;
  // Runs one Forward on both engines and compares the logits.
  auto step = [&](const std::vector<SequenceInput>& batch) {
    auto a = eager->Forward(batch);
    auto b = graph->Forward(batch);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(a->row_offsets, b->row_offsets);
    auto ha = eager->LogitsToHost(*a);
    auto hb = graph->LogitsToHost(*b);
    ASSERT_TRUE(ha.ok() && hb.ok());
    const int64_t n = ha->shape().numel();
    ASSERT_EQ(n, hb->shape().numel());
    const float* pa = ha->data<float>();
    const float* pb = hb->data<float>();
    for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(std::isfinite(pb[i])) << "step " << step_no;
    const double e = RelL2(absl::MakeSpan(pb, n), absl::MakeSpan(pa, n));
    EXPECT_LE(e, tol) << "step " << step_no << " (batch " << batch.size() << ")";
    worst = std::max(worst, e);
    for (int64_t r = 0; r < n / V; ++r) {
      ++rows;
      agree += Argmax(pa + r * V, V) == Argmax(pb + r * V, V);
    }
    ++step_no;
  };
  auto add = [&](int id) {
    ASSERT_TRUE(eager->AddSequence(SequenceId(id)).ok());
    ASSERT_TRUE(graph->AddSequence(SequenceId(id)).ok());
  };
  // One decode token per listed sequence; num_iter varies per sequence (30, 10, default).
  uint32_t tok_seed = 1000;
  auto decode = [&](const std::vector<int>& ids) {
    std::vector<SequenceInput> batch;
    for (int id : ids) {
      batch.push_back({.id = SequenceId(id),
                       .tokens = Tokens(1, tok_seed++),
                       .num_iter = id % 3 == 0 ? 30 : id % 3 == 1 ? 10 : -1});
    }
    step(batch);
  };

  // Varlen prefill of 10 sequences (op by op in both engines).
  const int lens[] = {1, 5, 17, 40, 100, 250, 300, 7, 63, 129};
  std::vector<SequenceInput> prefill;
  for (int i = 0; i < 10; ++i) {
    add(i);
    prefill.push_back({.id = SequenceId(i), .tokens = Tokens(lens[i], i)});
  }
  step(prefill);
  if (HasFatalFailure()) return;
  // Decode batches of every bucket, each bucket seen at least twice (capture, then replay).
  const std::vector<std::vector<int>> batches = {
      {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {9, 3, 5, 1, 7},
      {2, 4, 6, 8, 0},                 {5},                            {6},
      {1, 2},                          {3, 4},                         {0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
      {9, 8, 7},                       {7, 8, 9}};
  for (const auto& b : batches) {
    decode(b);
    if (HasFatalFailure()) return;
  }
  const Engine::GraphStats before = graph->graph_stats();
  EXPECT_GE(before.captures, 4);
  EXPECT_GE(before.replays, 4);
  // A long prefill grows the workspace: every graph goes stale and is captured again.
  add(10);
  step({{.id = SequenceId(10), .tokens = Tokens(1100, 10)}});
  // Remove one sequence and reuse its slot.
  ASSERT_TRUE(eager->RemoveSequence(SequenceId(4)).ok());
  ASSERT_TRUE(graph->RemoveSequence(SequenceId(4)).ok());
  add(11);
  step({{.id = SequenceId(11), .tokens = Tokens(33, 11)}});
  // Sequence 10 sits at 1100 tokens: its steps use the context bucket 1280, the short-only
  // batches before used 256 and 320.
  for (int s = 0; s < 6; ++s) {
    decode({10, 11, 0, 1, 2, 3, 5, 6, 7, 8, 9});
    if (HasFatalFailure()) return;
    decode({10, 11});
    if (HasFatalFailure()) return;
  }
  const Engine::GraphStats after = graph->graph_stats();
  EXPECT_GT(after.captures, before.captures) << "no recapture after the workspace grew";
  EXPECT_GE(after.replays, before.replays + 8);
  EXPECT_GE(static_cast<double>(agree) / rows, f32 ? 0.999 : 0.90);
  std::printf(
      "[ cuda graph ] %s: %d steps, worst rel L2 graph vs op-by-op %.2e, argmax agreement "
      "%.1f%% over %lld rows; %lld captures, %lld replays, %lld eager steps, %lld live graphs, "
      "%lld nodes in the last\n",
      f32 ? "fp32" : "bf16", step_no, worst, 100.0 * agree / rows, static_cast<long long>(rows),
      static_cast<long long>(after.captures), static_cast<long long>(after.replays),
      static_cast<long long>(after.eager_steps), static_cast<long long>(after.live_graphs),
      static_cast<long long>(after.last_nodes));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaGraphTest,
                         ::testing::Values(tensor::DType::kF32, tensor::DType::kBF16),
                         [](const auto& info) {
                           return info.param == tensor::DType::kF32 ? "fp32" : "bf16";
                         });

}  // namespace
}  // namespace gka::engine
