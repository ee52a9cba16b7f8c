// The response text pipeline: detokenizer + stop matcher + hidden stop ids. A stop string
// split across tokens (and across a multi-byte character) is caught and never half-sent.
#include "router/output_text.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/router_test_util.h"

namespace gka::router {
namespace {

class OutputTextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(RouterTestText::Get().tokenizer, nullptr) << RouterTestText::Get().error;
  }
  const text::Tokenizer& tok() { return *RouterTestText::Get().tokenizer; }

  // Token ids of `s`, one by one, as a model would produce them.
  std::vector<int32_t> Ids(const std::string& s) { return *tok().Encode(s); }
};

TEST_F(OutputTextTest, PassesTextThroughWithoutStops) {
  OutputText out = *OutputText::Create(&tok(), {}, {});
  std::string all;
  for (int32_t id : Ids("Hello, world! 你好")) {
    OutputText::Piece p = out.Add(id);
    EXPECT_FALSE(p.stopped);
    all += p.text;
  }
  all += out.Finish().text;
  EXPECT_EQ(all, "Hello, world! 你好");
}

TEST_F(OutputTextTest, StopStringAcrossTokenBoundaries) {
  // "ST" + "OP" style split: the stop string is longer than any one token here.
  const std::string stop = "the end";
  OutputText out = *OutputText::Create(&tok(), {stop, "never"}, {});
  std::vector<int32_t> ids = Ids("Once upon a time, the end came. More text.");
  std::string sent;
  bool stopped = false;
  size_t tokens_used = 0;
  for (int32_t id : ids) {
    ++tokens_used;
    OutputText::Piece p = out.Add(id);
    sent += p.text;
    if (p.stopped) {
      stopped = true;
      EXPECT_EQ(out.stop_strings()[p.stop_index], stop);
      break;
    }
  }
  ASSERT_TRUE(stopped);
  EXPECT_EQ(sent, "Once upon a time, ");
  EXPECT_LT(tokens_used, ids.size());
  // After the stop, nothing more comes out.
  EXPECT_EQ(out.Add(ids.back()).text, "");
  EXPECT_TRUE(out.Finish().stopped);
}

TEST_F(OutputTextTest, HeldTextIsReleasedWhenTheStopDoesNotComplete) {
  OutputText out = *OutputText::Create(&tok(), {"abcXYZ"}, {});
  std::string sent;
  for (int32_t id : Ids("abc abc")) sent += out.Add(id).text;
  OutputText::Piece last = out.Finish();
  EXPECT_FALSE(last.stopped);
  EXPECT_EQ(sent + last.text, "abc abc");
}

TEST_F(OutputTextTest, StopInsideAMultiByteCharacterSplitAcrossTokens) {
  // An emoji is several byte-level tokens; the stop string is the emoji itself.
  const std::string emoji = "\xF0\x9F\xA6\x99";  // 🦙
  std::vector<int32_t> ids = Ids("llama " + emoji + " done");
  OutputText out = *OutputText::Create(&tok(), {emoji}, {});
  std::string sent;
  bool stopped = false;
  for (int32_t id : ids) {
    OutputText::Piece p = out.Add(id);
    sent += p.text;
    if (p.stopped) {
      stopped = true;
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(sent, "llama ");
}

TEST_F(OutputTextTest, StopCompletedByTheFinalFlush) {
  OutputText out = *OutputText::Create(&tok(), {"END"}, {});
  std::string sent;
  for (int32_t id : Ids("xEN")) sent += out.Add(id).text;
  // The stream ended with "EN" held back; the flush does not invent the "D".
  OutputText::Piece last = out.Finish();
  EXPECT_FALSE(last.stopped);
  EXPECT_EQ(sent + last.text, "xEN");
}

TEST_F(OutputTextTest, HiddenStopIdsAndSpecialTokensProduceNoText) {
  const int32_t im_end = *tok().TokenToId("<|im_end|>");
  const int32_t seven = Ids("7")[0];
  OutputText out = *OutputText::Create(&tok(), {}, {seven});
  EXPECT_EQ(out.Add(Ids("Hi")[0]).text, "Hi");
  EXPECT_EQ(out.Add(seven).text, "");   // a stop token id: hidden
  EXPECT_EQ(out.Add(im_end).text, "");  // special: skipped by the detokenizer
  // Ids past the tokenizer (a padded model vocabulary) produce nothing and do not throw.
  EXPECT_EQ(out.Add(tok().VocabSize() + 10).text, "");
}

TEST_F(OutputTextTest, NoTokenizer) {
  OutputText out = *OutputText::Create(nullptr, {}, {});
  EXPECT_EQ(out.Add(5).text, "");
  EXPECT_EQ(out.Finish().text, "");
  EXPECT_EQ(OutputText::Create(nullptr, {"x"}, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(OutputText::Create(&tok(), {""}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gka::router
