#include "common/model/weights.h"

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::model {
namespace {

using tensor::Buffer;
using tensor::DType;
using tensor::Shape;
using ::testing::HasSubstr;
using Json = nlohmann::json;

ModelConfig AuthorsHybrid() {
  absl::StatusOr<ModelConfig> c =
      ModelConfig::FromJsonFile(std::string(testing::kDataDir) + "/authors_hybrid_config.json");
  GKA_CHECK(c.ok()) << c.status();
  return *c;
}

std::map<std::string, Shape> AsMap(const std::vector<ExpectedTensor>& v) {
  std::map<std::string, Shape> m;
  for (const ExpectedTensor& e : v) m.emplace(e.name, e.shape);
  return m;
}

// The 32B model's config (model-spec §1), pattern alternating.
ModelConfig Config32B() {
  Json j = Json::parse(
      testing::ReadBytes(std::string(testing::kDataDir) + "/authors_hybrid_config.json"));
  j["vocab_size"] = 151936;
  j["hidden_size"] = 5120;
  j["intermediate_size"] = 25600;
  j["num_hidden_layers"] = 64;
  j["num_attention_heads"] = 64;
  j["num_key_value_heads"] = 8;
  j["head_dim"] = 128;
  std::string pattern;
  for (int i = 0; i < 64; ++i) pattern += (i ? "-" : "") + std::string(i % 2 ? "GKA" : "*");
  j["hybrid_override_pattern"] = pattern;
  j["gka_config"] = {{"hidden_size", 5120},
                     {"head_dim", 128},
                     {"num_q_heads", 64},
                     {"num_k_heads", 8},
                     {"num_v_heads", 8}};
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJsonString(j.dump());
  GKA_CHECK(c.ok()) << c.status();
  return *c;
}

TEST(ExpectedWeightShapesTest, MatchesModelSpecFor32B) {
  const std::map<std::string, Shape> s = AsMap(ExpectedWeightShapes(Config32B()));
  EXPECT_EQ(s.at("model.embed_tokens.weight"), Shape({151936, 5120}));
  EXPECT_EQ(s.at("lm_head.weight"), Shape({151936, 5120}));
  EXPECT_EQ(s.at("model.norm.weight"), Shape({5120}));
  EXPECT_EQ(s.at("model.layers.0.self_attn.q_proj.weight"), Shape({8192, 5120}));
  EXPECT_EQ(s.at("model.layers.0.self_attn.k_proj.weight"), Shape({1024, 5120}));
  EXPECT_EQ(s.at("model.layers.0.self_attn.o_proj.weight"), Shape({5120, 8192}));
  EXPECT_EQ(s.at("model.layers.0.self_attn.q_norm.weight"), Shape({128}));
  EXPECT_EQ(s.at("model.layers.0.mlp.down_proj.weight"), Shape({5120, 25600}));
  const std::string g = "model.layers.63.gka.";
  EXPECT_EQ(s.at(g + "q_proj.weight"), Shape({8192, 5120}));
  EXPECT_EQ(s.at(g + "k_proj.weight"), Shape({1024, 5120}));
  EXPECT_EQ(s.at(g + "v_proj.weight"), Shape({1024, 5120}));
  EXPECT_EQ(s.at(g + "a_proj.weight"), Shape({64, 5120}));
  EXPECT_EQ(s.at(g + "b_proj.bias"), Shape({64}));
  EXPECT_EQ(s.at(g + "alpha_proj.weight"), Shape({64, 5120}));
  EXPECT_EQ(s.at(g + "A_log"), Shape({64}));
  EXPECT_EQ(s.at(g + "dt_bias"), Shape({64}));
  EXPECT_EQ(s.at(g + "q_conv1d.weight"), Shape({8192, 1, 4}));
  EXPECT_EQ(s.at(g + "v_conv1d.weight"), Shape({1024, 1, 4}));
  EXPECT_EQ(s.at(g + "g_proj.weight"), Shape({8192, 5120}));
  EXPECT_EQ(s.at(g + "o_norm.weight"), Shape({128}));
  EXPECT_EQ(s.at(g + "o_proj.weight"), Shape({5120, 8192}));
  EXPECT_EQ(s.count("model.layers.1.self_attn.q_proj.weight"), 0u);
  EXPECT_EQ(s.count("model.layers.0.gka.q_proj.weight"), 0u);
  // 3 globals + 64 * 5 per layer + 32 * 6 attention + 32 * 16 GKA.
  EXPECT_EQ(s.size(), 3u + 64 * 5 + 32 * 6 + 32 * 16);
}

TEST(ExpectedWeightShapesTest, FlagsDropOptionalTensors) {
  ModelConfig c = AuthorsHybrid();
  const size_t full = ExpectedWeightShapes(c).size();
  c.tie_word_embeddings = true;
  c.gka.use_beta_gate = false;
  c.gka.use_alpha_connection = false;
  c.gka.use_v_conv = false;
  c.gka.use_gate = false;
  const std::map<std::string, Shape> s = AsMap(ExpectedWeightShapes(c));
  EXPECT_EQ(s.size(), full - 1 - 2 * 6);  // lm_head; per GKA layer b(2) alpha(2) v_conv g
  EXPECT_EQ(s.count("lm_head.weight"), 0u);
  EXPECT_EQ(s.count("model.layers.1.gka.b_proj.bias"), 0u);
  EXPECT_EQ(s.count("model.layers.1.gka.g_proj.weight"), 0u);
  EXPECT_EQ(s.count("model.layers.1.gka.q_conv1d.weight"), 1u);
}

// Writes a checkpoint for `config` with every expected tensor (f32 zeros), letting `edit`
// change the list first.
void WriteCheckpoint(
    const ModelConfig& config, const std::string& path,
    const std::function<void(std::vector<ExpectedTensor>&, std::map<std::string, DType>&)>& edit) {
  std::vector<ExpectedTensor> expected = ExpectedWeightShapes(config);
  std::map<std::string, DType> dtypes;
  edit(expected, dtypes);
  std::vector<Buffer> bufs;
  std::vector<NamedTensor> named;
  for (const ExpectedTensor& e : expected) {
    auto it = dtypes.find(e.name);
    bufs.push_back(Buffer::Allocate(e.shape, it == dtypes.end() ? DType::kBF16 : it->second));
    named.push_back({e.name, bufs.back().view()});
  }
  ASSERT_TRUE(WriteSafetensors(path, named).ok());
}

absl::Status Validate(const ModelConfig& config, const std::string& path) {
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(path);
  if (!c.ok()) return c.status();
  return ValidateCheckpoint(config, **c);
}

TEST(ValidateCheckpointTest, AcceptsCompleteCheckpointWithF32Gates) {
  testing::TempDir dir;
  const ModelConfig cfg = AuthorsHybrid();
  const std::string path = dir.Join("model.safetensors");
  WriteCheckpoint(cfg, path, [](auto& expected, auto& dtypes) {
    dtypes["model.layers.1.gka.A_log"] = DType::kF32;
    dtypes["model.layers.1.gka.dt_bias"] = DType::kF32;
    dtypes["model.layers.3.gka.A_log"] = DType::kF16;
    expected.push_back({"model.rotary_emb.inv_freq", Shape({32})});  // extra: tolerated
  });
  absl::Status s = Validate(cfg, dir.path());
  EXPECT_TRUE(s.ok()) << s;
}

TEST(ValidateCheckpointTest, NamesMissingWrongShapeAndWrongDtype) {
  testing::TempDir dir;
  const ModelConfig cfg = AuthorsHybrid();
  const std::string path = dir.Join("model.safetensors");
  WriteCheckpoint(cfg, path, [](auto& expected, auto& dtypes) {
    std::erase_if(expected, [](const ExpectedTensor& e) {
      return e.name == "model.layers.3.gka.g_proj.weight";
    });
    for (ExpectedTensor& e : expected) {
      if (e.name == "model.layers.1.gka.q_conv1d.weight") e.shape = Shape({256, 4});
    }
    dtypes["model.layers.2.self_attn.k_norm.weight"] = DType::kI32;
  });
  absl::Status s = Validate(cfg, dir.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("3 problem(s)"));
  EXPECT_THAT(s.message(), HasSubstr("'model.layers.3.gka.g_proj.weight' [256, 256] is missing"));
  EXPECT_THAT(s.message(), HasSubstr("'model.layers.1.gka.q_conv1d.weight' in " + path +
                                     " has shape [256, 4], expected [256, 1, 4]"));
  EXPECT_THAT(s.message(), HasSubstr("'model.layers.2.self_attn.k_norm.weight' in " + path +
                                     " has dtype I32, expected BF16, F16 or F32"));
}

TEST(ValidateCheckpointTest, ConfigMismatchIsReported) {
  // A plain (all-attention) checkpoint against the hybrid config: missing GKA tensors.
  testing::TempDir dir;
  absl::StatusOr<ModelConfig> plain =
      ModelConfig::FromJsonFile(std::string(testing::kDataDir) + "/authors_plain_config.json");
  ASSERT_TRUE(plain.ok());
  WriteCheckpoint(*plain, dir.Join("model.safetensors"), [](auto&, auto&) {});
  absl::Status s = Validate(AuthorsHybrid(), dir.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("*-GKA-*-GKA"));
  EXPECT_THAT(s.message(), HasSubstr("... and"));  // more than 8 problems, list cut
}

class LoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // m: [3, 4] f32 with value 10*r + c; h: same values in bf16; i: int64 [2].
    Buffer m = Buffer::Allocate({3, 4}, DType::kF32);
    Buffer h = Buffer::Allocate({3, 4}, DType::kBF16);
    Buffer f16 = Buffer::Allocate({3, 4}, DType::kF16);
    Buffer conv = Buffer::Allocate({4, 1, 2}, DType::kF32);
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 4; ++c) {
        m.data<float>()[r * 4 + c] = 10.f * r + c;
        h.data<uint16_t>()[r * 4 + c] = tensor::FloatToBF16(10.f * r + c + 0.5f);
        f16.data<uint16_t>()[r * 4 + c] = tensor::FloatToF16(-(10.f * r + c));
      }
    }
    for (int i = 0; i < 8; ++i) conv.data<float>()[i] = static_cast<float>(i);
    Buffer ids = Buffer::Allocate({2}, DType::kI64);
    ids.data<int64_t>()[1] = 151645;
    ASSERT_TRUE(WriteSafetensors(dir_.Join("model.safetensors"), {{"m", m.view()},
                                                                  {"h", h.view()},
                                                                  {"f16", f16.view()},
                                                                  {"conv", conv.view()},
                                                                  {"ids", ids.view()}})
                    .ok());
    absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_.path());
    ASSERT_TRUE(c.ok()) << c.status();
    ckpt_ = *std::move(c);
  }
  testing::TempDir dir_;
  std::unique_ptr<Checkpoint> ckpt_;
};

TEST_F(LoadTest, LoadAsF32ConvertsHalfTypes) {
  absl::StatusOr<Buffer> h = LoadAsF32(*ckpt_, "h");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->dtype(), DType::kF32);
  EXPECT_EQ(h->shape(), Shape({3, 4}));
  EXPECT_EQ(h->data<float>()[6], 12.5f);
  absl::StatusOr<Buffer> f = LoadAsF32(*ckpt_, "f16");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data<float>()[11], -23.f);
  absl::StatusOr<Buffer> m = LoadAsF32(*ckpt_, "m");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->data<float>()[5], 11.f);
}

TEST_F(LoadTest, LoadConvertsF32ToBF16) {
  absl::StatusOr<Buffer> b = LoadTensor(*ckpt_, "m", DType::kBF16);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->dtype(), DType::kBF16);
  EXPECT_EQ(tensor::BF16ToFloat(b->data<uint16_t>()[7]), 13.f);
}

TEST_F(LoadTest, SlicesRowsAndColumns) {
  absl::StatusOr<Buffer> rows = LoadSlice(*ckpt_, "m", Slice{0, 1, 3}, DType::kF32);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->shape(), Shape({2, 4}));
  EXPECT_EQ(std::vector<float>(rows->data<float>(), rows->data<float>() + 8),
            std::vector<float>({10, 11, 12, 13, 20, 21, 22, 23}));

  absl::StatusOr<Buffer> cols = LoadSlice(*ckpt_, "h", Slice{1, 2, 4}, DType::kF32);
  ASSERT_TRUE(cols.ok()) << cols.status();
  EXPECT_EQ(cols->shape(), Shape({3, 2}));
  EXPECT_EQ(std::vector<float>(cols->data<float>(), cols->data<float>() + 6),
            std::vector<float>({2.5, 3.5, 12.5, 13.5, 22.5, 23.5}));

  // Conv weights [channels, 1, K]: a rank's channels are rows.
  absl::StatusOr<Slice> half = EvenSlice(4, 0, 1, 2);
  ASSERT_TRUE(half.ok());
  absl::StatusOr<Buffer> conv = LoadSlice(*ckpt_, "conv", *half, DType::kF32);
  ASSERT_TRUE(conv.ok()) << conv.status();
  EXPECT_EQ(conv->shape(), Shape({2, 1, 2}));
  EXPECT_EQ(std::vector<float>(conv->data<float>(), conv->data<float>() + 4),
            std::vector<float>({4, 5, 6, 7}));

  absl::StatusOr<Buffer> empty = LoadSlice(*ckpt_, "m", Slice{1, 2, 2}, DType::kF32);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->shape(), Shape({3, 0}));
}

TEST_F(LoadTest, ErrorsNameTensorAndFile) {
  const std::string file = dir_.Join("model.safetensors");
  absl::StatusOr<Buffer> b = LoadSlice(*ckpt_, "m", Slice{1, 2, 5}, DType::kF32);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("'m' in " + file));
  EXPECT_THAT(b.status().message(), HasSubstr("[3, 4]"));
  EXPECT_EQ(LoadSlice(*ckpt_, "m", Slice{2, 0, 1}, DType::kF32).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadSlice(*ckpt_, "m", Slice{0, -1, 1}, DType::kF32).status().code(),
            absl::StatusCode::kInvalidArgument);

  b = LoadAsF32(*ckpt_, "ids");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("'ids' in " + file + " is I64"));
  absl::StatusOr<Buffer> ids = LoadTensor(*ckpt_, "ids", DType::kI64);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->data<int64_t>()[1], 151645);

  b = LoadAsF32(*ckpt_, "absent");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(b.status().message(), HasSubstr("'absent'"));
}

TEST(EvenSliceTest, SplitsAndRejects) {
  absl::StatusOr<Slice> s = EvenSlice(8192, 0, 3, 8);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->dim, 0);
  EXPECT_EQ(s->begin, 3072);
  EXPECT_EQ(s->end, 4096);
  EXPECT_EQ(EvenSlice(8, 1, 0, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(EvenSlice(8, 1, 0, 3).status().message(), HasSubstr("does not divide"));
  EXPECT_EQ(EvenSlice(8, 0, 2, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EvenSlice(8, 0, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gka::model
