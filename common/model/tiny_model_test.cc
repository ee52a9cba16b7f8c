#include "common/model/tiny_model.h"

#include <cmath>
#include <filesystem>
#include <string>

#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "common/model/test_util.h"
#include "common/model/weights.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::model {
namespace {

using tensor::DType;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Small vocabulary: fast, and the special ids fall outside it.
TinyModelOptions SmallOptions() {
  TinyModelOptions o;
  o.vocab_size = 512;
  return o;
}

struct Stats {
  double mean = 0, stddev = 0, min = 1e30, max = -1e30;
};

Stats StatsOf(const Checkpoint& c, const std::string& name) {
  absl::StatusOr<tensor::Buffer> b = LoadAsF32(c, name);
  GKA_CHECK(b.ok()) << b.status();
  Stats s;
  const int64_t n = b->shape().numel();
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = b->data<float>()[i];
    sum += v;
    sq += v * v;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
  }
  s.mean = sum / n;
  s.stddev = std::sqrt(std::max(0.0, sq / n - s.mean * s.mean));
  return s;
}

TEST(TinyModelTest, WritesAValidCheckpoint) {
  testing::TempDir dir;
  ASSERT_TRUE(MakeTinyModel(SmallOptions(), dir.path()).ok());
  absl::StatusOr<ModelConfig> cfg = ModelConfig::FromJsonFile(dir.Join("config.json"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->model_type, "hybrid_qwen3");
  EXPECT_EQ(cfg->LayoutString(), "*-GKA-*-GKA");
  EXPECT_EQ(cfg->hidden_size, 128);
  EXPECT_EQ(cfg->q_dim(), 512);
  EXPECT_EQ(cfg->gka.dims().num_heads, 8);
  EXPECT_DOUBLE_EQ(cfg->rope_theta, 5e6);
  EXPECT_EQ(cfg->max_position_embeddings, 4096);
  EXPECT_FALSE(cfg->bos_token_id.has_value());  // 151643 is outside a 512 vocabulary
  EXPECT_EQ(cfg->dtype, "bfloat16");

  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::Status valid = ValidateCheckpoint(*cfg, **ckpt);
  EXPECT_TRUE(valid.ok()) << valid;
  EXPECT_EQ((*ckpt)->names().size(), ExpectedWeightShapes(*cfg).size());
  EXPECT_EQ((*ckpt)->Get("model.layers.1.gka.A_log")->dtype, DType::kBF16);
  EXPECT_EQ((*ckpt)->files()[0]->metadata().at("format"), "pt");

  absl::StatusOr<GenerationDefaults> gen = GenerationDefaults::FromModelDir(dir.path());
  ASSERT_TRUE(gen.ok()) << gen.status();
  EXPECT_TRUE(gen->eos_token_ids.empty());
  EXPECT_DOUBLE_EQ(gen->temperature.value_or(0), 0.6);
  EXPECT_FALSE(std::filesystem::exists(dir.Join("tokenizer.json")));
}

TEST(TinyModelTest, WeightsFollowTheReferenceDistributions) {
  testing::TempDir dir;
  TinyModelOptions o = SmallOptions();
  o.weight_dtype = DType::kF32;
  ASSERT_TRUE(MakeTinyModel(o, dir.path()).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->Get("lm_head.weight")->dtype, DType::kF32);

  const Stats a_log = StatsOf(**c, "model.layers.1.gka.A_log");  // log U(1, 16)
  EXPECT_GE(a_log.min, 0.0);
  EXPECT_LE(a_log.max, std::log(16.0));
  const Stats dt = StatsOf(**c, "model.layers.3.gka.dt_bias");  // softplus^-1 of [1e-3, 0.1]
  EXPECT_GE(dt.min, std::log(std::expm1(1e-3)) - 1e-3);
  EXPECT_LE(dt.max, std::log(std::expm1(0.1)) + 1e-3);
  const Stats conv = StatsOf(**c, "model.layers.1.gka.q_conv1d.weight");  // U(-0.5, 0.5)
  EXPECT_GE(conv.min, -0.5);
  EXPECT_LE(conv.max, 0.5);
  EXPECT_NEAR(conv.stddev, 1.0 / std::sqrt(12.0), 0.02);
  const Stats norm = StatsOf(**c, "model.layers.0.input_layernorm.weight");  // 1 + N(0, .1)
  EXPECT_NEAR(norm.mean, 1.0, 0.05);
  EXPECT_NEAR(norm.stddev, 0.1, 0.03);
  const Stats emb = StatsOf(**c, "model.embed_tokens.weight");  // N(0, 1)
  EXPECT_NEAR(emb.mean, 0.0, 0.02);
  EXPECT_NEAR(emb.stddev, 1.0, 0.02);
  const Stats down = StatsOf(**c, "model.layers.2.mlp.down_proj.weight");  // N(0, 1/sqrt(512))
  EXPECT_NEAR(down.stddev, 1.0 / std::sqrt(512.0), 0.003);
  const Stats bias = StatsOf(**c, "model.layers.1.gka.b_proj.bias");  // N(0, 0.5)
  EXPECT_GT(bias.stddev, 0.2);
  EXPECT_LT(bias.stddev, 0.9);
}

TEST(TinyModelTest, DeterministicPerSeed) {
  testing::TempDir a, b, c;
  TinyModelOptions o = SmallOptions();
  ASSERT_TRUE(MakeTinyModel(o, a.path()).ok());
  ASSERT_TRUE(MakeTinyModel(o, b.path()).ok());
  o.seed = 1;
  ASSERT_TRUE(MakeTinyModel(o, c.path()).ok());
  const std::string wa = testing::ReadBytes(a.Join("model.safetensors"));
  EXPECT_EQ(wa, testing::ReadBytes(b.Join("model.safetensors")));
  EXPECT_NE(wa, testing::ReadBytes(c.Join("model.safetensors")));
  EXPECT_EQ(testing::ReadBytes(a.Join("config.json")), testing::ReadBytes(c.Join("config.json")));
}

TEST(TinyModelTest, CustomPatternAndTiedEmbeddings) {
  testing::TempDir dir;
  TinyModelOptions o = SmallOptions();
  o.pattern = "GKA-GKA-*";
  o.tie_word_embeddings = true;
  o.num_iter = 10;
  ASSERT_TRUE(MakeTinyModel(o, dir.path()).ok());
  absl::StatusOr<ModelConfig> cfg = ModelConfig::FromJsonFile(dir.Join("config.json"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_THAT(cfg->GkaLayerIndices(), ElementsAre(0, 1));
  EXPECT_EQ(cfg->gka.num_iter, 10);
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->Contains("lm_head.weight"));
  EXPECT_TRUE(ValidateCheckpoint(*cfg, **c).ok());
}

TEST(TinyModelTest, CopiesTokenizerFiles) {
  testing::TempDir tok, dir;
  testing::WriteBytes(tok.Join("tokenizer.json"), "{\"model\": {}}");
  testing::WriteBytes(tok.Join("tokenizer_config.json"), "{}");
  TinyModelOptions o = SmallOptions();
  o.tokenizer_dir = tok.path();
  ASSERT_TRUE(MakeTinyModel(o, dir.Join("nested/out")).ok());
  EXPECT_EQ(testing::ReadBytes(dir.Join("nested/out/tokenizer.json")), "{\"model\": {}}");
  EXPECT_TRUE(std::filesystem::exists(dir.Join("nested/out/tokenizer_config.json")));

  o.tokenizer_dir = dir.Join("no-tokenizer-here");
  absl::Status s = MakeTinyModel(o, dir.Join("other"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("tokenizer.json"));
}

TEST(TinyModelTest, BadOptionsAreInvalidArgument) {
  testing::TempDir dir;
  TinyModelOptions o = SmallOptions();
  o.pattern = "*-M2";
  absl::Status s = MakeTinyModel(o, dir.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'M2'"));
  o = SmallOptions();
  o.num_key_value_heads = 3;
  s = MakeTinyModel(o, dir.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("num_key_value_heads"));
  o = SmallOptions();
  o.weight_dtype = DType::kI32;
  EXPECT_EQ(MakeTinyModel(o, dir.path()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir.Join("model.safetensors")));
}

// The default (real-vocabulary) model: the size the header promises, real special ids.
TEST(TinyModelTest, DefaultModelHasRealVocabulary) {
  testing::TempDir dir;
  ASSERT_TRUE(MakeTinyModel(TinyModelOptions{}, dir.path()).ok());
  absl::StatusOr<ModelConfig> cfg = ModelConfig::FromJsonFile(dir.Join("config.json"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->vocab_size, 151936);
  EXPECT_EQ(cfg->bos_token_id, 151643);
  EXPECT_THAT(cfg->eos_token_ids, ElementsAre(151645));
  absl::StatusOr<GenerationDefaults> gen = GenerationDefaults::FromModelDir(dir.path());
  ASSERT_TRUE(gen.ok());
  EXPECT_THAT(gen->eos_token_ids, ElementsAre(151645, 151643));
  const auto size = std::filesystem::file_size(dir.Join("model.safetensors"));
  EXPECT_GT(size, 77'000'000u);
  EXPECT_LT(size, 82'000'000u);
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(ValidateCheckpoint(*cfg, **c).ok());
}

}  // namespace
}  // namespace gka::model
