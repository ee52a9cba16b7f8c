#include "common/text/stop_matcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace gka::text {
namespace {

using ::testing::HasSubstr;

// Feeds `pieces` and returns what a client would see, plus whether and where it stopped.
struct Streamed {
  std::string text;
  int stop_index = -1;
};
Streamed StreamThrough(std::vector<std::string> stops, const std::vector<std::string>& pieces) {
  StopMatcher m = StopMatcher::Create(std::move(stops)).value();
  Streamed out;
  for (const std::string& piece : pieces) {
    StopMatcher::Result r = m.Add(piece);
    out.text += r.text;
    if (r.stopped) {
      out.stop_index = r.stop_index;
      return out;
    }
  }
  out.text += m.Flush();
  return out;
}

TEST(StopMatcherTest, NoStopPassesEverythingThrough) {
  Streamed s = StreamThrough({"STOP"}, {"Hello", " wor", "ld"});
  EXPECT_EQ(s.text, "Hello world");
  EXPECT_EQ(s.stop_index, -1);
  StopMatcher none = StopMatcher::Create({}).value();
  EXPECT_EQ(none.Add("abc").text, "abc");
}

TEST(StopMatcherTest, StopInsideOnePieceCutsBeforeIt) {
  Streamed s = StreamThrough({"###"}, {"Answer: 42### ignored"});
  EXPECT_EQ(s.text, "Answer: 42");
  EXPECT_EQ(s.stop_index, 0);
}

TEST(StopMatcherTest, StopAcrossPiecesIsHeldBackThenCut) {
  StopMatcher m = StopMatcher::Create({"\n\nUser:"}).value();
  StopMatcher::Result r = m.Add("Sure.\n");
  EXPECT_EQ(r.text, "Sure.");  // "\n" could start the stop string: held
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.held_bytes(), 1u);
  r = m.Add("\nUs");
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(m.held_bytes(), 4u);
  r = m.Add("er: next");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.stop_index, 0);
  EXPECT_TRUE(m.stopped());
  // After the stop everything is discarded.
  r = m.Add("more");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcherTest, FalseStartIsReleased) {
  StopMatcher m = StopMatcher::Create({"<end>"}).value();
  EXPECT_EQ(m.Add("a <e").text, "a ");
  EXPECT_EQ(m.Add("nd").text, "");
  EXPECT_EQ(m.Add("ing").text, "<ending");  // not the stop string after all
  EXPECT_EQ(m.Add("<").text, "");
  EXPECT_EQ(m.Flush(), "<");  // end of stream releases the held tail
}

TEST(StopMatcherTest, OverlappingPrefixesKeepTheLongestCandidate) {
  // "aab": after "aa" both "a"+"ab" suffixes are candidates; the longest must be kept.
  Streamed s = StreamThrough({"aab"}, {"xa", "a", "a", "b"});
  EXPECT_EQ(s.text, "xa");
  EXPECT_EQ(s.stop_index, 0);
}

TEST(StopMatcherTest, EarliestCompletedStopWinsWhateverThePieces) {
  const std::vector<std::string> stops = {"abc", "b"};
  // "b" completes (end 2) before "abc" (end 3) in every cut of the same text.
  for (const auto& pieces :
       std::vector<std::vector<std::string>>{{"abc"}, {"a", "b", "c"}, {"ab", "c"}, {"xabc"}}) {
    Streamed s = StreamThrough(stops, pieces);
    EXPECT_EQ(s.stop_index, 1);
    EXPECT_EQ(s.text, pieces.size() == 1 && pieces[0] == "xabc" ? "xa" : "a");
  }
  // Same end: the longer (earlier-starting) string wins.
  Streamed s = StreamThrough({"c", "abc"}, {"zabc"});
  EXPECT_EQ(s.stop_index, 1);
  EXPECT_EQ(s.text, "z");
}

TEST(StopMatcherTest, MultiByteCharactersAreNeverSplit) {
  StopMatcher m = StopMatcher::Create({"世界!", "é?"}).value();
  StopMatcher::Result r = m.Add("你好世");
  EXPECT_EQ(r.text, "你好");
  r = m.Add("人é");
  EXPECT_EQ(r.text, "世人");
  r = m.Add("?");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(r.stop_index, 1);
}

TEST(StopMatcherTest, StopStringThatIsTheWholeOutput) {
  Streamed s = StreamThrough({"</s>"}, {"</", "s>"});
  EXPECT_EQ(s.text, "");
  EXPECT_EQ(s.stop_index, 0);
}

TEST(StopMatcherTest, BadStopStringsAreInvalidArgument) {
  auto empty = StopMatcher::Create({"ok", ""});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("stop string 1 is empty"));
  auto bad = StopMatcher::Create({"\xff"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

// Every way of cutting a text into two or three pieces gives the same result.
TEST(StopMatcherTest, ResultIsIndependentOfPieceBoundaries) {
  const std::string text = "The answer is 42.\n\nQuestion: why?";
  const std::vector<std::string> stops = {"\n\nQuestion:", "42!", "why"};
  const Streamed whole = StreamThrough(stops, {text});
  EXPECT_EQ(whole.text, "The answer is 42.");
  EXPECT_EQ(whole.stop_index, 0);
  for (size_t i = 0; i <= text.size(); ++i) {
    for (size_t j = i; j <= text.size(); ++j) {
      const Streamed s =
          StreamThrough(stops, {text.substr(0, i), text.substr(i, j - i), text.substr(j)});
      ASSERT_EQ(s.text, whole.text) << i << "," << j;
      ASSERT_EQ(s.stop_index, whole.stop_index) << i << "," << j;
    }
  }
}

}  // namespace
}  // namespace gka::text
