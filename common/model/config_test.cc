#include "common/model/config.h"

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

Json AuthorsHybrid() {
  return Json::parse(
      testing::ReadBytes(std::string(testing::kDataDir) + "/authors_hybrid_config.json"));
}

absl::StatusOr<ModelConfig> Parse(const Json& j) { return ModelConfig::FromJsonString(j.dump()); }

TEST(ModelConfigTest, ParsesAuthorsHybridConfig) {
  absl::StatusOr<ModelConfig> c =
      ModelConfig::FromJsonFile(std::string(testing::kDataDir) + "/authors_hybrid_config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "hybrid_qwen3");
  EXPECT_EQ(c->dtype, "float32");
  EXPECT_EQ(c->vocab_size, 1024);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->intermediate_size, 512);
  EXPECT_EQ(c->num_hidden_layers, 4);
  EXPECT_EQ(c->num_attention_heads, 4);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->q_dim(), 256);
  EXPECT_EQ(c->kv_dim(), 128);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->rope_theta, 5e6);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->bos_token_id.has_value());
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_THAT(c->layer_kinds, ElementsAre(LayerKind::kAttention, LayerKind::kGka,
                                          LayerKind::kAttention, LayerKind::kGka));
  EXPECT_THAT(c->GkaLayerIndices(), ElementsAre(1, 3));
  EXPECT_THAT(c->AttentionLayerIndices(), ElementsAre(0, 2));
  EXPECT_EQ(c->num_gka_layers(), 2);
  EXPECT_EQ(c->LayoutString(), "*-GKA-*-GKA");

  const GkaConfig& g = c->gka;
  EXPECT_EQ(g.num_iter, 30);
  EXPECT_DOUBLE_EQ(g.ridge_strength, 0.02);
  EXPECT_EQ(g.conv_size, 4);
  EXPECT_EQ(g.solver_type, "chebyshev");
  EXPECT_TRUE(g.use_alpha_connection && g.use_beta_gate && g.use_gate && g.use_v_conv);
  const GkaDims d = g.dims();
  EXPECT_EQ(d.num_q_heads, 4);
  EXPECT_EQ(d.num_k_heads, 2);
  EXPECT_EQ(d.num_v_heads, 2);
  EXPECT_EQ(d.num_heads, 4);
  EXPECT_EQ(d.head_dim, 64);
  EXPECT_EQ(d.q_dim, 256);
  EXPECT_EQ(d.k_dim, 128);
  EXPECT_EQ(d.v_dim, 128);
  EXPECT_EQ(d.expanded_dim, 256);
}

TEST(ModelConfigTest, ParsesAuthorsPlainConfigWithGkaDerivedFromBase) {
  absl::StatusOr<ModelConfig> c =
      ModelConfig::FromJsonFile(std::string(testing::kDataDir) + "/authors_plain_config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->LayoutString(), "*-*-*-*");
  EXPECT_TRUE(c->GkaLayerIndices().empty());
  EXPECT_EQ(c->gka.num_q_heads, 4);
  EXPECT_EQ(c->gka.num_k_heads, 2);
  EXPECT_EQ(c->gka.head_dim, 64);
  EXPECT_EQ(c->gka.hidden_size, 256);
}

TEST(ModelConfigTest, RopeThetaForms) {
  Json j = AuthorsHybrid();
  j.erase("rope_parameters");
  j["rope_theta"] = 1e6;
  j["rope_scaling"] = nullptr;
  absl::StatusOr<ModelConfig> legacy = Parse(j);
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_DOUBLE_EQ(legacy->rope_theta, 1e6);

  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e6}};
  absl::StatusOr<ModelConfig> both = Parse(j);  // rope_parameters wins
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_DOUBLE_EQ(both->rope_theta, 5e6);

  j["rope_parameters"] = {{"rope_type", "default"}};  // no theta inside: top level used
  absl::StatusOr<ModelConfig> fallback = Parse(j);
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_DOUBLE_EQ(fallback->rope_theta, 1e6);

  j.erase("rope_parameters");
  j.erase("rope_theta");
  absl::StatusOr<ModelConfig> none = Parse(j);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_DOUBLE_EQ(none->rope_theta, 10000.0);

  for (const Json& ok_scaling : {Json(nullptr), Json::object(), Json({{"rope_type", "default"}})}) {
    j["rope_scaling"] = ok_scaling;
    EXPECT_TRUE(Parse(j).ok()) << ok_scaling.dump();
  }
}

TEST(ModelConfigTest, RejectsRopeVariants) {
  Json j = AuthorsHybrid();
  j["rope_parameters"]["rope_type"] = "yarn";
  absl::StatusOr<ModelConfig> c = Parse(j);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(c.status().message(), HasSubstr("rope_parameters.rope_type"));
  EXPECT_THAT(c.status().message(), HasSubstr("yarn"));

  j = AuthorsHybrid();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  c = Parse(j);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(c.status().message(), HasSubstr("rope_scaling"));
}

TEST(ModelConfigTest, PatternIsAuthoritativeOverLayerTypes) {
  Json j = AuthorsHybrid();
  j["hybrid_override_pattern"] = "GKA-*-*-GKA";
  j["layer_types"] = {"*", "*", "*", "*"};
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->LayoutString(), "GKA-*-*-GKA");

  for (const Json& missing : {Json(nullptr), Json("")}) {  // no pattern: layer_types
    j["hybrid_override_pattern"] = missing;
    j["layer_types"] = {"full_attention", "GKA", "GKA", "*"};
    c = Parse(j);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->LayoutString(), "*-GKA-GKA-*");
  }

  j.erase("hybrid_override_pattern");
  j.erase("layer_types");
  c = Parse(j);  // neither: all attention
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->LayoutString(), "*-*-*-*");
}

TEST(ModelConfigTest, RejectsUnknownLayerSymbolsNamingSymbolAndLayer) {
  for (const char* symbol : {"M2", "GDN", "BMF", "SWA", "GKA*", "*DA", "gka", "", "X"}) {
    Json j = AuthorsHybrid();
    j["hybrid_override_pattern"] = std::string("*-GKA-") + symbol + "-GKA";
    absl::StatusOr<ModelConfig> c = Parse(j);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << symbol;
    EXPECT_THAT(c.status().message(), HasSubstr(std::string("'") + symbol + "'"));
    EXPECT_THAT(c.status().message(), HasSubstr("layer 2"));
    EXPECT_THAT(c.status().message(), HasSubstr("hybrid_override_pattern"));

    j.erase("hybrid_override_pattern");
    j["layer_types"] = {"*", "GKA", "*", symbol};
    c = Parse(j);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << symbol;
    EXPECT_THAT(c.status().message(), HasSubstr("layer 3"));
    EXPECT_THAT(c.status().message(), HasSubstr("layer_types"));
  }
}

TEST(ModelConfigTest, RejectsLayerCountMismatch) {
  Json j = AuthorsHybrid();
  j["hybrid_override_pattern"] = "*-GKA-*";
  absl::StatusOr<ModelConfig> c = Parse(j);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("3 layers"));
  EXPECT_THAT(c.status().message(), HasSubstr("num_hidden_layers is 4"));
}

TEST(ModelConfigTest, GkaOverridesMergeOverGkaConfig) {
  Json j = AuthorsHybrid();
  j["gka_overrides"] = {{"num_iter", 10}};
  j["gka_config"]["ridge_strength"] = 0.05;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->gka.num_iter, 10);
  EXPECT_DOUBLE_EQ(c->gka.ridge_strength, 0.05);  // untouched by the override
  EXPECT_EQ(c->gka.num_q_heads, 4);

  j.erase("gka_config");  // defaults, then overrides; heads from the base config
  j["gka_overrides"] = {{"num_iter", 0}, {"use_gate", false}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->gka.num_iter, 0);
  EXPECT_FALSE(c->gka.use_gate);
  EXPECT_DOUBLE_EQ(c->gka.ridge_strength, 0.02);
  EXPECT_EQ(c->gka.conv_size, 4);
  EXPECT_EQ(c->gka.num_k_heads, 2);
}

TEST(ModelConfigTest, DerivedDefaults) {
  Json j = AuthorsHybrid();
  j.erase("head_dim");
  j.erase("num_key_value_heads");
  j["gka_config"]["num_k_heads"] = nullptr;  // null means "from the base config"
  j["gka_config"]["num_v_heads"] = nullptr;
  j["gka_config"]["head_dim"] = nullptr;
  j.erase("max_position_embeddings");
  j["eos_token_id"] = Json::array({5, 7});
  j["bos_token_id"] = 3;
  absl::StatusOr<ModelConfig> c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);            // 256 / 4
  EXPECT_EQ(c->num_key_value_heads, 4);  // = num_attention_heads
  EXPECT_EQ(c->gka.num_k_heads, 4);
  EXPECT_EQ(c->gka.head_dim, 64);
  EXPECT_EQ(c->max_position_embeddings, 32768);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(5, 7));
  EXPECT_EQ(c->bos_token_id, 3);
  j["eos_token_id"] = 9;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(9));
}

struct BadCase {
  std::string what;
  std::function<void(Json&)> mutate;
  std::string key;  // must appear in the message
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;
};

TEST(ModelConfigTest, BadConfigsNameTheKey) {
  const absl::StatusCode kUnimpl = absl::StatusCode::kUnimplemented;
  const std::vector<BadCase> cases = {
      {"negative vocab", [](Json& j) { j["vocab_size"] = -1; }, "vocab_size"},
      {"zero hidden", [](Json& j) { j["hidden_size"] = 0; }, "hidden_size"},
      {"string size", [](Json& j) { j["intermediate_size"] = "512"; }, "intermediate_size"},
      {"missing layers", [](Json& j) { j.erase("num_hidden_layers"); }, "num_hidden_layers"},
      {"zero heads", [](Json& j) { j["num_attention_heads"] = 0; }, "num_attention_heads"},
      {"zero kv heads", [](Json& j) { j["num_key_value_heads"] = 0; }, "num_key_value_heads"},
      {"kv heads not dividing", [](Json& j) { j["num_key_value_heads"] = 3; },
       "num_key_value_heads"},
      {"negative head_dim", [](Json& j) { j["head_dim"] = -64; }, "head_dim"},
      {"odd head_dim", [](Json& j) { j["head_dim"] = 63; }, "head_dim"},
      {"fractional int", [](Json& j) { j["hidden_size"] = 256.5; }, "hidden_size"},
      {"bool as int", [](Json& j) { j["vocab_size"] = true; }, "vocab_size"},
      {"negative eps", [](Json& j) { j["rms_norm_eps"] = -1.0; }, "rms_norm_eps"},
      {"string bool", [](Json& j) { j["tie_word_embeddings"] = "no"; }, "tie_word_embeddings"},
      {"zero positions", [](Json& j) { j["max_position_embeddings"] = 0; },
       "max_position_embeddings"},
      {"string theta", [](Json& j) { j["rope_parameters"]["rope_theta"] = "big"; },
       "rope_parameters.rope_theta"},
      {"zero theta", [](Json& j) { j["rope_parameters"]["rope_theta"] = 0; },
       "rope_parameters.rope_theta"},
      {"list rope", [](Json& j) { j["rope_parameters"] = Json::array(); }, "rope_parameters"},
      {"eos outside vocab", [](Json& j) { j["eos_token_id"] = 5000; }, "eos_token_id"},
      {"eos list of strings", [](Json& j) { j["eos_token_id"] = {"a"}; }, "eos_token_id[0]"},
      {"string bos", [](Json& j) { j["bos_token_id"] = "a"; }, "bos_token_id"},
      {"numeric pattern", [](Json& j) { j["hybrid_override_pattern"] = 5; },
       "hybrid_override_pattern"},
      {"string layer_types",
       [](Json& j) {
         j.erase("hybrid_override_pattern");
         j["layer_types"] = "*";
       },
       "layer_types"},
      {"gka not object", [](Json& j) { j["gka_config"] = "x"; }, "gka_config"},
      {"negative num_iter", [](Json& j) { j["gka_config"]["num_iter"] = -1; },
       "gka_config.num_iter"},
      {"null num_iter", [](Json& j) { j["gka_config"]["num_iter"] = nullptr; },
       "gka_config.num_iter"},
      {"override float num_iter",
       [](Json& j) {
         j["gka_overrides"] = {{"num_iter", 1.5}};
       },
       "gka_overrides.num_iter"},
      {"negative override",
       [](Json& j) {
         j["gka_overrides"] = {{"num_iter", -2}};
       },
       "gka_overrides.num_iter"},
      {"conv_size 1", [](Json& j) { j["gka_config"]["conv_size"] = 1; }, "gka_config.conv_size"},
      {"zero ridge", [](Json& j) { j["gka_config"]["ridge_strength"] = 0; },
       "gka_config.ridge_strength"},
      {"zero norm eps", [](Json& j) { j["gka_config"]["norm_eps"] = 0.0; }, "gka_config.norm_eps"},
      {"zero chunk", [](Json& j) { j["gka_config"]["chunk_size"] = 0; }, "gka_config.chunk_size"},
      {"other solver", [](Json& j) { j["gka_config"]["solver_type"] = "cg"; },
       "gka_config.solver_type"},
      {"k != v heads", [](Json& j) { j["gka_config"]["num_k_heads"] = 1; },
       "gka_config.num_k_heads"},
      {"heads not dividing H",
       [](Json& j) {
         j["gka_config"]["num_q_heads"] = 6;
         j["gka_config"]["num_k_heads"] = 4;
         j["gka_config"]["num_v_heads"] = 4;
       },
       "gka_config.num_k_heads"},
      {"zero gka heads", [](Json& j) { j["gka_config"]["num_q_heads"] = 0; },
       "gka_config.num_q_heads"},
      {"zero gka head_dim", [](Json& j) { j["gka_config"]["head_dim"] = 0; },
       "gka_config.head_dim"},
      {"gka hidden mismatch", [](Json& j) { j["gka_config"]["hidden_size"] = 128; },
       "gka_config.hidden_size"},
      {"string flag", [](Json& j) { j["gka_config"]["use_gate"] = "yes"; }, "gka_config.use_gate"},
      {"kv_proj_rank", [](Json& j) { j["gka_config"]["kv_proj_rank"] = 16; },
       "gka_config.kv_proj_rank", kUnimpl},
      {"kv_proj_rank override",
       [](Json& j) {
         j["gka_overrides"] = {{"kv_proj_rank", 8}};
       },
       "gka_overrides.kv_proj_rank", kUnimpl},
      {"conv bias", [](Json& j) { j["gka_config"]["conv_bias"] = true; }, "gka_config.conv_bias",
       kUnimpl},
      {"attention bias", [](Json& j) { j["attention_bias"] = true; }, "attention_bias", kUnimpl},
      {"gelu", [](Json& j) { j["hidden_act"] = "gelu"; }, "hidden_act", kUnimpl},
      {"sliding window", [](Json& j) { j["use_sliding_window"] = true; }, "use_sliding_window",
       kUnimpl},
  };
  for (const BadCase& bad : cases) {
    Json j = AuthorsHybrid();
    bad.mutate(j);
    absl::StatusOr<ModelConfig> c = ModelConfig::FromJsonString(j.dump(), "dir/config.json");
    EXPECT_EQ(c.status().code(), bad.code) << bad.what << ": " << c.status();
    EXPECT_THAT(c.status().message(), HasSubstr("'" + bad.key + "'")) << bad.what;
    EXPECT_THAT(c.status().message(), HasSubstr("dir/config.json")) << bad.what;
  }
}

TEST(ModelConfigTest, RejectsBrokenDocuments) {
  absl::StatusOr<ModelConfig> c = ModelConfig::FromJsonString("{\"vocab_size\": 3,", "x.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("x.json is not valid JSON"));
  c = ModelConfig::FromJsonString("[1, 2]", "x.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("JSON object"));
  c = ModelConfig::FromJsonFile("/nonexistent/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/config.json"));
}

TEST(GenerationDefaultsTest, ParsesBothReleaseForms) {
  absl::StatusOr<GenerationDefaults> authors = GenerationDefaults::FromJsonFile(
      std::string(testing::kDataDir) + "/authors_generation_config.json");
  ASSERT_TRUE(authors.ok()) << authors.status();
  EXPECT_FALSE(authors->temperature || authors->top_k || authors->top_p || authors->do_sample);
  EXPECT_TRUE(authors->eos_token_ids.empty());

  absl::StatusOr<GenerationDefaults> qwen = GenerationDefaults::FromJsonString(R"({
      "bos_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643],
      "pad_token_id": 151643, "temperature": 0.6, "top_k": 20, "top_p": 0.95})");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->do_sample, true);
  EXPECT_DOUBLE_EQ(*qwen->temperature, 0.6);
  EXPECT_EQ(qwen->top_k, 20);
  EXPECT_DOUBLE_EQ(*qwen->top_p, 0.95);
  EXPECT_EQ(qwen->bos_token_id, 151643);
  EXPECT_THAT(qwen->eos_token_ids, ElementsAre(151645, 151643));

  absl::StatusOr<GenerationDefaults> single =
      GenerationDefaults::FromJsonString(R"({"eos_token_id": 151645})");
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_THAT(single->eos_token_ids, ElementsAre(151645));
}

TEST(GenerationDefaultsTest, BadValuesNameTheKey) {
  for (const auto& [text, key] : std::vector<std::pair<std::string, std::string>>{
           {R"({"temperature": "hot"})", "temperature"},
           {R"({"temperature": -1})", "temperature"},
           {R"({"top_k": 2.5})", "top_k"},
           {R"({"top_p": 0})", "top_p"},
           {R"({"eos_token_id": [1, "x"]})", "eos_token_id[1]"},
           {R"({"do_sample": 1})", "do_sample"}}) {
    absl::StatusOr<GenerationDefaults> g =
        GenerationDefaults::FromJsonString(text, "m/generation_config.json");
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(g.status().message(), HasSubstr("'" + key + "'")) << text;
    EXPECT_THAT(g.status().message(), HasSubstr("m/generation_config.json")) << text;
  }
}

TEST(GenerationDefaultsTest, MissingFileInModelDirGivesEmptyDefaults) {
  testing::TempDir dir;
  absl::StatusOr<GenerationDefaults> g = GenerationDefaults::FromModelDir(dir.path());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_FALSE(g->temperature.has_value());
  testing::WriteBytes(dir.Join("generation_config.json"), R"({"top_k": 5})");
  g = GenerationDefaults::FromModelDir(dir.path());
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->top_k, 5);
}

}  // namespace
}  // namespace gka::model
