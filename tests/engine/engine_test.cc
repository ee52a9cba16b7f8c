// Engine consistency on the authors' tiny hybrid (tests/data/authors_tiny/hybrid_fp32):
// chunking, splitting, decode vs prefill, batching, export/import, per-sequence num_iter, and
// bad input that must leave every sequence untouched.
#include "common/engine/engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model/safetensors.h"
#include "tests/testing/golden_util.h"

namespace gka::engine {
namespace {

using testing::RelL2;

constexpr char kModel[] = "tests/data/authors_tiny/hybrid_fp32";

std::unique_ptr<Engine> MakeEngine(int slots = 4, int page_size = 16, int num_pages = 0) {
  auto cfg =
      model::ModelConfig::FromJsonFile(testing::RepoPath(std::string(kModel) + "/config.json"));
  GKA_CHECK(cfg.ok()) << cfg.status();
  auto ckpt = model::Checkpoint::Open(testing::RepoPath(kModel));
  GKA_CHECK(ckpt.ok()) << ckpt.status();
  auto eng = Engine::Create({.page_size = page_size,
                             .num_state_slots = slots,
                             .num_pages = num_pages,
                             .max_seq_len = 512},
                            *cfg, **ckpt);
  GKA_CHECK(eng.ok()) << eng.status();
  return std::move(*eng);
}

std::vector<int32_t> Prompt(int n, int seed) {
  std::vector<int32_t> ids;
  uint32_t x = 12345u + seed * 7919u;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    ids.push_back(static_cast<int32_t>((x >> 8) % 1024));
  }
  return ids;
}

// Feeds `ids` to a fresh sequence in chunks; returns the logits of every position.
std::vector<float> RunChunked(Engine& eng, SequenceId id, const std::vector<int32_t>& ids,
                              int chunk, int32_t num_iter = -1) {
  EXPECT_TRUE(eng.AddSequence(id).ok());
  std::vector<float> all;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    std::vector<int32_t> part(ids.begin() + i, ids.begin() + std::min(ids.size(), i + chunk));
    auto r = eng.Forward({{.id = id, .tokens = part, .num_iter = num_iter, .all_logits = true}});
    EXPECT_TRUE(r.ok()) << r.status();
    auto h = eng.LogitsToHost(*r);
    all.insert(all.end(), h->data<float>(), h->data<float>() + h->shape().numel());
  }
  return all;
}

std::vector<float> StateOf(Engine& eng, SequenceId id, const std::string& name) {
  auto st = eng.ExportSequence(id);
  GKA_CHECK(st.ok());
  for (auto& s : st->segments) {
    if (s.name == name) {
      return std::vector<float>(s.data.data<float>(),
                                s.data.data<float>() + s.data.shape().numel());
    }
  }
  GKA_CHECK(false) << "no segment " << name;
  return {};
}

TEST(EngineTest, ChunkSizesAndSplitPointsMatchOnePrefill) {
  auto eng = MakeEngine();
  const auto ids = Prompt(200, 1);
  const auto whole = RunChunked(*eng, SequenceId(0), ids, 200);
  const auto whole_hkk = StateOf(*eng, SequenceId(0), "layer3.h_kk");
  ASSERT_TRUE(eng->RemoveSequence(SequenceId(0)).ok());
  for (int chunk : {16, 64, 128, 37}) {
    const auto got = RunChunked(*eng, SequenceId(1), ids, chunk);
    EXPECT_LE(RelL2(got, whole), 1e-5) << "chunk " << chunk;
    EXPECT_LE(RelL2(StateOf(*eng, SequenceId(1), "layer3.h_kk"), whole_hkk), 1e-5);
    ASSERT_TRUE(eng->RemoveSequence(SequenceId(1)).ok());
  }
}

TEST(EngineTest, TeacherForcedDecodeEqualsOnePrefill) {
  auto eng = MakeEngine();
  const auto ids = Prompt(80, 2);
  const auto whole = RunChunked(*eng, SequenceId(0), ids, 80);
  const auto stepped = RunChunked(*eng, SequenceId(1), ids, 64);  // 64 then 16
  ASSERT_TRUE(eng->RemoveSequence(SequenceId(1)).ok());
  // 64-token prefill, then 16 single-token decode steps.
  std::vector<int32_t> prompt(ids.begin(), ids.begin() + 64);
  auto decoded = RunChunked(*eng, SequenceId(1), prompt, 64);
  for (int i = 64; i < 80; ++i) {
    auto r = eng->Forward({{.id = SequenceId(1), .tokens = {ids[i]}}});
    ASSERT_TRUE(r.ok());
    auto h = eng->LogitsToHost(*r);
    decoded.insert(decoded.end(), h->data<float>(), h->data<float>() + h->shape().numel());
  }
  EXPECT_LE(RelL2(decoded, whole), 1e-5);
  EXPECT_LE(RelL2(stepped, whole), 1e-5);
}

TEST(EngineTest, BatchOfDifferentLengthsEqualsSeparateRunsBitwise) {
  auto eng = MakeEngine();
  const std::vector<std::vector<int32_t>> prompts = {Prompt(5, 3), Prompt(70, 4), Prompt(1, 5)};
  std::vector<std::vector<float>> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    alone.push_back(RunChunked(*eng, SequenceId(10 + i), prompts[i], 1000));
    ASSERT_TRUE(eng->RemoveSequence(SequenceId(10 + i)).ok());
  }
  std::vector<SequenceInput> batch;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(eng->AddSequence(SequenceId(i)).ok());
    batch.push_back({.id = SequenceId(i), .tokens = prompts[i], .all_logits = true});
  }
  auto r = eng->Forward(batch);
  ASSERT_TRUE(r.ok()) << r.status();
  auto h = eng->LogitsToHost(*r);
  const int64_t V = eng->vocab_size();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const float* rows = h->data<float>() + r->row_offsets[i] * V;
    ASSERT_EQ(alone[i].size(), (r->row_offsets[i + 1] - r->row_offsets[i]) * V);
    EXPECT_EQ(std::memcmp(rows, alone[i].data(), alone[i].size() * 4), 0) << "sequence " << i;
  }
}

TEST(EngineTest, DecodeLogitsAreBitwiseBatchInvariant) {
  auto eng = MakeEngine();
  const auto a = Prompt(30, 6), b = Prompt(90, 7), c = Prompt(3, 8);
  // Alone.
  RunChunked(*eng, SequenceId(0), a, 100);
  auto solo = eng->Forward({{.id = SequenceId(0), .tokens = {7}}});
  ASSERT_TRUE(solo.ok());
  auto solo_h = eng->LogitsToHost(*solo);
  // Same history, decoded beside two other sequences (one prefilling).
  RunChunked(*eng, SequenceId(1), a, 100);
  RunChunked(*eng, SequenceId(2), b, 100);
  ASSERT_TRUE(eng->AddSequence(SequenceId(3)).ok());
  auto mixed = eng->Forward({{.id = SequenceId(2), .tokens = {9}},
                             {.id = SequenceId(1), .tokens = {7}},
                             {.id = SequenceId(3), .tokens = c}});
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  auto mixed_h = eng->LogitsToHost(*mixed);
  const int64_t V = eng->vocab_size();
  EXPECT_EQ(
      std::memcmp(solo_h->data<float>(), mixed_h->data<float>() + mixed->row_offsets[1] * V, V * 4),
      0);
}

// Fused input projections (one GEMM over the stacked q|k|v and q|k|v|a|b|alpha|g weights,
// consumers reading strided column ranges) against one GEMM per projection into packed
// buffers: each output is the same dot product, so the logits must agree bitwise, for
// prefill, mixed and decode steps, with every optional GKA projection present and with all
// of them absent (size-0 parts, and v read packed without the v conv).
TEST(EngineTest, FusedProjectionsMatchUnfusedBitwise) {
  for (const bool all_flags : {true, false}) {
    auto cfg =
        model::ModelConfig::FromJsonFile(testing::RepoPath(std::string(kModel) + "/config.json"));
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    if (!all_flags) {
      // The checkpoint's extra tensors (b_proj, alpha_proj, g_proj, v_conv1d) are ignored.
      cfg->gka.use_beta_gate = false;
      cfg->gka.use_alpha_connection = false;
      cfg->gka.use_gate = false;
      cfg->gka.use_v_conv = false;
    }
    auto ckpt = model::Checkpoint::Open(testing::RepoPath(kModel));
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    std::vector<std::vector<float>> steps[2];  // [unfused, fused] logits of every step
    for (const bool fuse : {false, true}) {
      auto eng = Engine::Create(
          {.num_state_slots = 4, .max_seq_len = 256, .fuse_projections = fuse}, *cfg, **ckpt);
      ASSERT_TRUE(eng.ok()) << eng.status();
      Engine& e = **eng;
      auto step = [&](const std::vector<SequenceInput>& batch) {
        auto r = e.Forward(batch);
        ASSERT_TRUE(r.ok()) << r.status();
        auto h = e.LogitsToHost(*r);
        ASSERT_TRUE(h.ok());
        steps[fuse].emplace_back(h->data<float>(), h->data<float>() + h->shape().numel());
      };
      for (int i = 0; i < 3; ++i) ASSERT_TRUE(e.AddSequence(SequenceId(i)).ok());
      step({{.id = SequenceId(0), .tokens = Prompt(37, 11), .all_logits = true},
            {.id = SequenceId(1), .tokens = Prompt(5, 12), .all_logits = true}});
      step({{.id = SequenceId(0), .tokens = {3}},
            {.id = SequenceId(2), .tokens = Prompt(20, 13), .all_logits = true}});
      for (int t = 0; t < 3; ++t) {
        step({{.id = SequenceId(0), .tokens = {t + 1}},
              {.id = SequenceId(1), .tokens = {t + 2}},
              {.id = SequenceId(2), .tokens = {t + 3}}});
      }
    }
    ASSERT_EQ(steps[0].size(), steps[1].size());
    for (size_t s = 0; s < steps[0].size(); ++s) {
      ASSERT_EQ(steps[0][s].size(), steps[1][s].size());
      EXPECT_EQ(std::memcmp(steps[0][s].data(), steps[1][s].data(), steps[0][s].size() * 4), 0)
          << "step " << s << (all_flags ? "" : " (optional GKA projections off)");
    }
  }
}

TEST(EngineTest, ExportImportMidwayEqualsUninterruptedRun) {
  auto eng = MakeEngine(/*slots=*/4, /*page_size=*/16);
  const auto ids = Prompt(60, 9);
  const auto whole = RunChunked(*eng, SequenceId(0), ids, 60);
  std::vector<int32_t> head(ids.begin(), ids.begin() + 37), tail(ids.begin() + 37, ids.end());
  RunChunked(*eng, SequenceId(1), head, 37);
  auto state = eng->ExportSequence(SequenceId(1));
  ASSERT_TRUE(state.ok());
  ASSERT_TRUE(eng->RemoveSequence(SequenceId(1)).ok());
  // A second engine stands in for the decode worker.
  auto other = MakeEngine(/*slots=*/2, /*page_size=*/16);
  ASSERT_EQ(other->LayoutHash(), eng->LayoutHash());
  ASSERT_TRUE(other->ImportSequence(SequenceId(5), *state).ok());
  auto r = other->Forward({{.id = SequenceId(5), .tokens = tail, .all_logits = true}});
  ASSERT_TRUE(r.ok()) << r.status();
  auto h = other->LogitsToHost(*r);
  const int64_t V = eng->vocab_size();
  EXPECT_EQ(std::memcmp(h->data<float>(), whole.data() + 37 * V, tail.size() * V * 4), 0);
}

// The layer observer runs after each layer's writes: at layer l's call, layer l's KV pages and
// GKA/conv state already hold their values after the whole Forward, and layer l + 1's do not
// yet (what the prefill worker's streamed hand-off relies on).
TEST(EngineTest, LayerObserverSeesEachLayerFinalInOrder) {
  auto eng = MakeEngine();
  const SequenceId id(3);
  ASSERT_TRUE(eng->AddSequence(id).ok());
  const auto ids = Prompt(40, 5);
  // Two chunks: the second step's observer sees the first chunk's pages already written.
  ASSERT_TRUE(eng->Forward({{.id = id, .tokens = {ids.begin(), ids.begin() + 17}}}).ok());
  const int layers = eng->dims().num_layers;
  auto of_layer = [](const SequenceState& st, int l) {
    std::vector<std::vector<char>> out;
    const std::string prefix = absl::StrCat("layer", l, ".");
    for (const StateSegment& seg : st.segments) {
      if (!absl::StartsWith(seg.name, prefix)) continue;
      out.emplace_back(seg.data.data<char>(), seg.data.data<char>() + seg.data.nbytes());
    }
    return out;
  };
  std::vector<int32_t> seen;
  std::vector<std::vector<std::vector<char>>> at_call(layers), next_at_call(layers);
  eng->SetLayerObserver([&](int32_t l) {
    seen.push_back(l);
    absl::StatusOr<SequenceState> st = eng->ExportSequence(id);
    ASSERT_TRUE(st.ok()) << st.status();
    at_call[l] = of_layer(*st, l);
    if (l + 1 < layers) next_at_call[l] = of_layer(*st, l + 1);
  });
  ASSERT_TRUE(eng->Forward({{.id = id, .tokens = {ids.begin() + 17, ids.end()}}}).ok());
  eng->SetLayerObserver(nullptr);
  std::vector<int32_t> expected(layers);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(seen, expected);
  auto final_state = eng->ExportSequence(id);
  ASSERT_TRUE(final_state.ok());
  for (int l = 0; l < layers; ++l) {
    EXPECT_EQ(at_call[l], of_layer(*final_state, l)) << "layer " << l << " changed after its call";
    if (l + 1 < layers) {
      EXPECT_NE(next_at_call[l], of_layer(*final_state, l + 1))
          << "layer " << l + 1 << " was already final at layer " << l << "'s call";
    }
  }
}

TEST(EngineTest, ImportRejectsForeignLayout) {
  auto eng = MakeEngine(4, 16);
  RunChunked(*eng, SequenceId(0), Prompt(20, 1), 20);
  auto state = eng->ExportSequence(SequenceId(0));
  ASSERT_TRUE(state.ok());
  auto other = MakeEngine(4, /*page_size=*/32);
  EXPECT_NE(other->LayoutHash(), eng->LayoutHash());
  const auto status = other->ImportSequence(SequenceId(1), *state);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_FALSE(other->HasSequence(SequenceId(1)));
  EXPECT_EQ(other->free_slots(), 4);
}

TEST(EngineTest, PerSequenceNumIterInOneBatch) {
  auto eng = MakeEngine();
  const auto ids = Prompt(40, 11);
  const auto it0 = RunChunked(*eng, SequenceId(0), ids, 40, /*num_iter=*/0);
  const auto it30 = RunChunked(*eng, SequenceId(1), ids, 40, /*num_iter=*/30);
  EXPECT_GT(RelL2(it0, it30), 1e-3);  // the knob matters
  // num_iter 0 still maintains h_kk; the first GKA layer's state does not depend on N.
  const auto hkk0 = StateOf(*eng, SequenceId(0), "layer1.h_kk");
  EXPECT_EQ(hkk0, StateOf(*eng, SequenceId(1), "layer1.h_kk"));
  double norm = 0;
  for (float v : hkk0) norm += v * v;
  EXPECT_GT(norm, 0);
  // Mixed in one batch: each sequence gets its own N, bitwise as when run alone.
  ASSERT_TRUE(eng->AddSequence(SequenceId(2)).ok());
  ASSERT_TRUE(eng->AddSequence(SequenceId(3)).ok());
  auto r = eng->Forward({{.id = SequenceId(2), .tokens = ids, .num_iter = 0, .all_logits = true},
                         {.id = SequenceId(3), .tokens = ids, .num_iter = 30, .all_logits = true}});
  ASSERT_TRUE(r.ok());
  auto h = eng->LogitsToHost(*r);
  const int64_t V = eng->vocab_size();
  EXPECT_EQ(std::memcmp(h->data<float>(), it0.data(), 40 * V * 4), 0);
  EXPECT_EQ(std::memcmp(h->data<float>() + 40 * V, it30.data(), 40 * V * 4), 0);
}

TEST(EngineTest, SampleReportsTheTopLogprobsOfEachSequence) {
  auto eng = MakeEngine();
  ASSERT_TRUE(eng->AddSequence(SequenceId(0)).ok());
  ASSERT_TRUE(eng->AddSequence(SequenceId(1)).ok());
  auto r = eng->Forward({{.id = SequenceId(0), .tokens = Prompt(9, 3)},
                         {.id = SequenceId(1), .tokens = Prompt(5, 4)}});
  ASSERT_TRUE(r.ok()) << r.status();
  auto h = eng->LogitsToHost(*r);  // [2, V]: the last row of each sequence
  ASSERT_TRUE(h.ok());
  const int64_t V = eng->vocab_size();
  const std::vector<Engine::SampleRequest> requests = {
      {.config = {.temperature = 0.0f, .num_top_logprobs = 5}},
      {.config = {.temperature = 0.7f, .seed = 9}}};
  auto sampled = eng->Sample(*r, requests, /*vocab_limit=*/0);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  // Reference: the log-softmax of sequence 0's logits, most likely first.
  const float* row = h->data<float>();
  double max = row[0], sum = 0;
  for (int64_t i = 0; i < V; ++i) max = std::max<double>(max, row[i]);
  for (int64_t i = 0; i < V; ++i) sum += std::exp(row[i] - max);
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return row[a] > row[b]; });
  const Engine::Sampled& s0 = (*sampled)[0];
  ASSERT_EQ(s0.top.size(), 5u);
  for (int j = 0; j < 5; ++j) {
    EXPECT_EQ(s0.top[j].token, order[j]) << j;
    EXPECT_NEAR(s0.top[j].logprob, row[order[j]] - max - std::log(sum), 1e-5) << j;
  }
  EXPECT_EQ(s0.token, s0.top[0].token);  // greedy
  EXPECT_EQ(s0.logprob, s0.top[0].logprob);
  EXPECT_TRUE((*sampled)[1].top.empty());  // asked for none
}

TEST(EngineTest, BadInputChangesNothing) {
  auto eng = MakeEngine(/*slots=*/2, /*page_size=*/16, /*num_pages=*/8);
  RunChunked(*eng, SequenceId(0), Prompt(10, 1), 10);
  const auto before = eng->ExportSequence(SequenceId(0));
  ASSERT_TRUE(before.ok());
  const int free_pages = eng->free_pages();

  auto bad_id = eng->Forward({{.id = SequenceId(0), .tokens = {1, 5000}}});
  EXPECT_EQ(bad_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_id.status().message()), ::testing::HasSubstr("5000"));
  auto unknown =
      eng->Forward({{.id = SequenceId(0), .tokens = {1}}, {.id = SequenceId(9), .tokens = {1}}});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  auto empty = eng->Forward({{.id = SequenceId(0), .tokens = {}}});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  auto dup =
      eng->Forward({{.id = SequenceId(0), .tokens = {1}}, {.id = SequenceId(0), .tokens = {2}}});
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  auto too_many_pages = eng->Forward({{.id = SequenceId(0), .tokens = Prompt(200, 2)}});
  EXPECT_EQ(too_many_pages.status().code(), absl::StatusCode::kResourceExhausted);
  auto too_long = eng->Forward({{.id = SequenceId(0), .tokens = Prompt(600, 2)}});
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kOutOfRange);
  auto bad_iter = eng->Forward({{.id = SequenceId(0), .tokens = {1}, .num_iter = -5}});
  EXPECT_EQ(bad_iter.status().code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(*eng->SequenceLength(SequenceId(0)), 10);
  EXPECT_EQ(eng->free_pages(), free_pages);
  const auto after = eng->ExportSequence(SequenceId(0));
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->segments.size(), before->segments.size());
  for (size_t i = 0; i < after->segments.size(); ++i) {
    EXPECT_EQ(std::memcmp(after->segments[i].data.data<void>(),
                          before->segments[i].data.data<void>(), before->segments[i].data.nbytes()),
              0)
        << after->segments[i].name;
  }
  EXPECT_EQ(eng->AddSequence(SequenceId(0)).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(eng->AddSequence(SequenceId(1)).ok());
  EXPECT_EQ(eng->AddSequence(SequenceId(2)).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(eng->RemoveSequence(SequenceId(7)).code(), absl::StatusCode::kNotFound);
}

TEST(EngineTest, CpuRejectsBf16) {
  auto cfg =
      model::ModelConfig::FromJsonFile(testing::RepoPath(std::string(kModel) + "/config.json"));
  auto ckpt = model::Checkpoint::Open(testing::RepoPath(kModel));
  auto eng = Engine::Create({.dtype = tensor::DType::kBF16}, *cfg, **ckpt);
  EXPECT_EQ(eng.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(eng.status().message()), ::testing::HasSubstr("fp32"));
}

}  // namespace
}  // namespace gka::engine
