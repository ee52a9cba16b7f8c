#include "common/text/incremental_detokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/text/test_util.h"
#include "common/text/utf8.h"

namespace gka::text {
namespace {

using Json = nlohmann::json;

class IncrementalDetokenizerTest : public Qwen3TokenizerTestBase {
 protected:
  // Feeds ids one at a time; checks no piece ends inside a character; returns all text.
  static std::string Stream(absl::Span<const int32_t> ids, bool skip_special) {
    IncrementalDetokenizer detok(tok(), skip_special);
    std::string all;
    for (int32_t id : ids) {
      auto piece = detok.Add(id);
      EXPECT_TRUE(piece.ok()) << piece.status();
      if (!piece.ok()) return all;
      EXPECT_EQ(IncompleteUtf8SuffixLength(*piece), 0u) << "piece ends mid-character";
      all += *piece;
    }
    return all + detok.Finish();
  }
};

TEST_F(IncrementalDetokenizerTest, ReproducesEveryGolden) {
  for (const Json& c : ReadJsonLines(TestDataPath("golden.jsonl"))) {
    const std::vector<int32_t> ids = c["ids"].get<std::vector<int32_t>>();
    const std::string where = c["text"].dump().substr(0, 160);
    EXPECT_EQ(Stream(ids, false), c["decoded"].get<std::string>()) << where;
    EXPECT_EQ(Stream(ids, true), c["decoded_skip_special"].get<std::string>()) << where;
  }
}

TEST_F(IncrementalDetokenizerTest, HoldsBytesUntilTheCharacterCompletes) {
  // "中" (E4 B8 AD) fed as three byte-level tokens.
  IncrementalDetokenizer detok(tok());
  EXPECT_EQ(detok.Add(tok().TokenToId("ä").value()).value(), "");
  EXPECT_EQ(detok.pending_bytes(), 1u);
  EXPECT_EQ(detok.Add(tok().TokenToId("¸").value()).value(), "");
  EXPECT_EQ(detok.pending_bytes(), 2u);
  EXPECT_EQ(detok.Add(tok().TokenToId("Ń").value()).value(), "中");
  EXPECT_EQ(detok.pending_bytes(), 0u);
  EXPECT_EQ(detok.Add(9707).value(), "Hello");
  EXPECT_EQ(detok.Finish(), "");
}

TEST_F(IncrementalDetokenizerTest, UnfinishedCharacterBecomesReplacementAtFinish) {
  IncrementalDetokenizer detok(tok());
  EXPECT_EQ(detok.Add(tok().TokenToId("ä").value()).value(), "");
  EXPECT_EQ(detok.Finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(detok.pending_bytes(), 0u);
  // A new character start ends the broken one at once.
  EXPECT_EQ(detok.Add({tok().TokenToId("ä").value(), 9707}).value(), "\xEF\xBF\xBDHello");
}

TEST_F(IncrementalDetokenizerTest, BadIdIsInvalidArgumentAndChangesNothing) {
  IncrementalDetokenizer detok(tok());
  ASSERT_EQ(detok.Add(tok().TokenToId("ä").value()).value(), "");
  for (int32_t bad : {-1, tok().VocabSize()}) {
    auto piece = detok.Add(bad);
    ASSERT_FALSE(piece.ok());
    EXPECT_EQ(piece.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(detok.Add({tok().TokenToId("¸").value(), bad}).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(detok.pending_bytes(), 1u);
  EXPECT_EQ(detok.Add({tok().TokenToId("¸").value(), tok().TokenToId("Ń").value()}).value(), "中");
}

// Random ids (many are byte fragments that never form characters): streaming must still equal
// Decode, U+FFFD repairs included.
TEST_F(IncrementalDetokenizerTest, RandomIdsMatchDecode) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> any(0, tok().VocabSize() - 1);
  std::uniform_int_distribution<int32_t> byte_token(0, 255);  // Qwen3's single bytes
  for (int round = 0; round < 300; ++round) {
    std::vector<int32_t> ids;
    const int n = 1 + round % 17;
    for (int i = 0; i < n; ++i) ids.push_back(i % 3 == 0 ? any(rng) : byte_token(rng));
    for (bool skip : {false, true}) {
      EXPECT_EQ(Stream(ids, skip), tok().Decode(ids, skip).value()) << Json(ids).dump();
    }
  }
}

}  // namespace
}  // namespace gka::text
