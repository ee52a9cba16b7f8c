// The fp32 CPU engine against the model authors' own implementation (their GKA layer, fla
// kernels in strict fp32, transformers' Qwen3 attention) on their tiny checkpoint in the real
// release format. Data: tests/data/authors_tiny (tools/golden/trim_authors_golden.py).
//
// Pass bar (model-spec §10, fp32 everywhere): relative L2 ≤ 1e-4 on logits and on every state.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/engine/engine.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "tests/testing/golden_util.h"

namespace gka {
namespace {

using engine::Engine;
using engine::SequenceId;
using testing::Argmax;
using testing::ReadF32;
using testing::ReadIds;
using testing::RelL2;

constexpr double kTol = 1e-4;
constexpr int kGenTokens = 16;

struct Model {
  model::ModelConfig config;
  std::unique_ptr<Engine> engine;
};

Model Load(const std::string& dir, int32_t num_iter) {
  Model m;
  auto cfg = model::ModelConfig::FromJsonFile(testing::RepoPath(dir + "/config.json"));
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  m.config = *cfg;
  auto ckpt = model::Checkpoint::Open(testing::RepoPath(dir));
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  auto eng = Engine::Create(
      {.num_state_slots = 2, .max_seq_len = 512, .default_num_iter = num_iter}, m.config, **ckpt);
  EXPECT_TRUE(eng.ok()) << eng.status();
  m.engine = std::move(*eng);
  return m;
}

const model::SafetensorsFile& Golden() {
  static auto* file = [] {
    auto f = model::SafetensorsFile::Open(
        testing::RepoPath("tests/data/authors_tiny/golden.safetensors"));
    GKA_CHECK(f.ok()) << f.status();
    return f->release();
  }();
  return *file;
}

// Compares the exported state of `seq` with the golden's `<prefix>.layer{l}.*` (authors'
// conv caches keep 4 columns, newest last; ours keep the last 3).
void CompareStates(Engine& eng, SequenceId seq, const std::string& prefix, bool has_h_kk) {
  const model::SafetensorsFile& g = Golden();
  auto st = eng.ExportSequence(seq);
  ASSERT_TRUE(st.ok()) << st.status();
  int compared = 0;
  for (const engine::StateSegment& s : st->segments) {
    const std::string key = absl::StrCat(prefix, ".", s.name);
    if (!g.Contains(key)) continue;
    if (!has_h_kk && absl::EndsWith(s.name, "h_kk")) continue;
    std::vector<float> want = ReadF32(g, key);
    const float* got = s.data.data<float>();
    std::vector<float> mine(got, got + s.data.shape().numel());
    if (absl::StrContains(s.name, "conv_")) {
      // [C, 4] newest last → [C, 3] = columns 1..3.
      std::vector<float> trimmed;
      for (size_t c = 0; c < want.size() / 4; ++c) {
        for (int j = 1; j < 4; ++j) trimmed.push_back(want[c * 4 + j]);
      }
      want = trimmed;
    }
    ASSERT_EQ(mine.size(), want.size()) << key;
    EXPECT_LE(RelL2(mine, want), kTol) << key;
    ++compared;
  }
  EXPECT_GT(compared, 0) << "no golden states under " << prefix;
}

// Adds sequence 0 and prefills `prompt`: every position's logits, [T, V] fp32.
absl::StatusOr<std::vector<float>> PrefillLogits(Engine& eng, const std::vector<int32_t>& prompt) {
  GKA_RETURN_IF_ERROR(eng.AddSequence(SequenceId(0)));
  GKA_ASSIGN_OR_RETURN(engine::StepResult step,
                       eng.Forward({{.id = SequenceId(0), .tokens = prompt, .all_logits = true}}));
  GKA_ASSIGN_OR_RETURN(tensor::Buffer logits, eng.LogitsToHost(step));
  const float* l = logits.data<float>();
  return std::vector<float>(l, l + prompt.size() * eng.vocab_size());
}

// Decode step i of sequence 0 feeds gen[i] (teacher-forced on the golden's tokens): the
// steps' logits, [kGenTokens, V] fp32; step i's argmax should be gen[i + 1].
absl::StatusOr<std::vector<float>> DecodeLogits(Engine& eng, const std::vector<int32_t>& gen) {
  std::vector<float> out;
  for (int i = 0; i < kGenTokens; ++i) {
    GKA_ASSIGN_OR_RETURN(engine::StepResult step,
                         eng.Forward({{.id = SequenceId(0), .tokens = {gen[i]}}}));
    GKA_ASSIGN_OR_RETURN(tensor::Buffer h, eng.LogitsToHost(step));
    out.insert(out.end(), h.data<float>(), h.data<float>() + eng.vocab_size());
  }
  return out;
}

struct Case {
  int num_iter;
  int length;
};

class AuthorsHybridTest : public ::testing::TestWithParam<Case> {};

TEST_P(AuthorsHybridTest, PrefillGreedyDecodeAndStates) {
  const Case c = GetParam();
  Model m = Load("tests/data/authors_tiny/hybrid_fp32", c.num_iter);
  Engine& eng = *m.engine;
  const model::SafetensorsFile& g = Golden();
  const std::string p = absl::StrCat("hyb.fp32ieee.it", c.num_iter, ".L", c.length, ".");
  const std::vector<int32_t> prompt = ReadIds(g, absl::StrCat("prompt.L", c.length));
  const std::vector<int32_t> gen = ReadIds(g, p + "gen_tokens");
  const int64_t V = eng.vocab_size();

  absl::StatusOr<std::vector<float>> prefill = PrefillLogits(eng, prompt);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  EXPECT_LE(RelL2(*prefill, ReadF32(g, p + "prefill_logits")), kTol);
  // t_0 = argmax of the last prefill logit.
  EXPECT_EQ(Argmax(absl::MakeSpan(*prefill).subspan((c.length - 1) * V, V)), gen[0]);

  if (g.Contains(p + "prefill_state.layer1.h_kv")) {
    CompareStates(eng, SequenceId(0), p + "prefill_state", c.num_iter != 0);
  }

  // Decode step i feeds t_i; its logits give t_{i+1}.
  absl::StatusOr<std::vector<float>> decode = DecodeLogits(eng, gen);
  ASSERT_TRUE(decode.ok()) << decode.status();
  for (int i = 0; i + 1 < kGenTokens; ++i) {
    EXPECT_EQ(Argmax(absl::MakeSpan(*decode).subspan(i * V, V)), gen[i + 1]) << "step " << i;
  }
  EXPECT_LE(RelL2(*decode, ReadF32(g, p + "decode_logits")), kTol);
  if (g.Contains(p + "final_state.layer1.h_kv")) {
    CompareStates(eng, SequenceId(0), p + "final_state", c.num_iter != 0);
  }
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (int it : {30, 10, 1, 0}) {
    for (int len : {1, 7, 64, 200}) cases.push_back({it, len});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllLengthsAndIters, AuthorsHybridTest, ::testing::ValuesIn(AllCases()),
                         [](const auto& info) {
                           return absl::StrCat("it", info.param.num_iter, "_L", info.param.length);
                         });

class AuthorsPlainTest : public ::testing::TestWithParam<int> {};

// The all-attention variant: a plain Qwen3 check against transformers (exact in fp32).
TEST_P(AuthorsPlainTest, PrefillAndGreedyDecode) {
  const int len = GetParam();
  Model m = Load("tests/data/authors_tiny/plain_fp32", -1);
  Engine& eng = *m.engine;
  const model::SafetensorsFile& g = Golden();
  const std::string p = absl::StrCat("plain.fp32.L", len, ".");
  const std::vector<int32_t> prompt = ReadIds(g, absl::StrCat("prompt.L", len));
  const std::vector<int32_t> gen = ReadIds(g, p + "gen_tokens");
  absl::StatusOr<std::vector<float>> prefill = PrefillLogits(eng, prompt);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  EXPECT_LE(RelL2(*prefill, ReadF32(g, p + "prefill_logits")), kTol);
  absl::StatusOr<std::vector<float>> decode = DecodeLogits(eng, gen);
  ASSERT_TRUE(decode.ok()) << decode.status();
  EXPECT_LE(RelL2(*decode, ReadF32(g, p + "decode_logits")), kTol);
}

INSTANTIATE_TEST_SUITE_P(AllLengths, AuthorsPlainTest, ::testing::Values(1, 7, 64, 200));

}  // namespace
}  // namespace gka
