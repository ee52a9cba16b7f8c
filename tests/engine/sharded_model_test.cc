// The sharded writer (make-random-model's path): shards + index load through the real
// loader, the engine runs on them, and the bytes do not depend on the machine's thread count.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/engine/engine.h"
#include "common/model/safetensors.h"
#include "common/model/tiny_model.h"

namespace gka::engine {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ShardedModelTest, ShardsLoadAndAreDeterministic) {
  model::TinyModelOptions o;
  o.vocab_size = 1024;
  o.hidden_size = 64;
  o.shard_bytes = 100'000;  // many shards
  o.seed = 3;
  const fs::path a = fs::temp_directory_path() / absl::StrCat("gka_shard_a_", getpid());
  const fs::path b = fs::temp_directory_path() / absl::StrCat("gka_shard_b_", getpid());
  ASSERT_TRUE(model::MakeTinyModel(o, a.string()).ok());
  ASSERT_TRUE(model::MakeTinyModel(o, b.string()).ok());
  int shards = 0;
  for (const auto& e : fs::directory_iterator(a)) {
    if (e.path().extension() == ".safetensors") {
      ++shards;
      EXPECT_EQ(Slurp(e.path()), Slurp(b / e.path().filename())) << e.path();
    }
  }
  EXPECT_GT(shards, 3);
  ASSERT_TRUE(fs::exists(a / "model.safetensors.index.json"));
  auto cfg = model::ModelConfig::FromJsonFile((a / "config.json").string());
  ASSERT_TRUE(cfg.ok());
  auto ckpt = model::Checkpoint::Open(a.string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->files().size(), static_cast<size_t>(shards));
  auto eng = Engine::Create({.max_seq_len = 64}, *cfg, **ckpt);
  ASSERT_TRUE(eng.ok()) << eng.status();
  ASSERT_TRUE((*eng)->AddSequence(SequenceId(0)).ok());
  auto r = (*eng)->Forward({{.id = SequenceId(0), .tokens = {1, 2, 3}}});
  ASSERT_TRUE(r.ok()) << r.status();
  fs::remove_all(a);
  fs::remove_all(b);
}

TEST(ShardedModelTest, PresetsHaveTheRealShape) {
  auto gka = model::PresetOptions("hqwen3-32b-gka");
  ASSERT_TRUE(gka.ok());
  EXPECT_EQ(gka->hidden_size, 5120);
  EXPECT_EQ(gka->intermediate_size, 25600);
  int n = 0;
  for (size_t p = gka->pattern.find("GKA"); p != std::string::npos;
       p = gka->pattern.find("GKA", p + 1))
    ++n;
  EXPECT_EQ(n, 32);
  EXPECT_EQ(model::PresetOptions("qwen3-32b")->pattern.find("GKA"), std::string::npos);
  EXPECT_EQ(model::PresetOptions("llama").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gka::engine
