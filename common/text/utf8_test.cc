#include "common/text/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace gka::text {
namespace {

TEST(Utf8Test, Validation) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("é 中 😀 \xF4\x8F\xBF\xBF"));  // U+10FFFF is the last valid one
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));        // U+110000
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));                // overlong NUL
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));            // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xBF\xBF"));            // surrogate
  EXPECT_FALSE(IsValidUtf8("\x80"));
  EXPECT_EQ(FirstInvalidUtf8Offset("ab\xFF"), 2u);
}

TEST(Utf8Test, LossyMatchesRustFromUtf8Lossy) {
  const std::string r = std::string(kReplacementCharacter);
  EXPECT_EQ(Utf8Lossy("ok"), "ok");
  // One U+FFFD per maximal subpart: E4 B8 is one (a cut character), FF is one, 80 is one.
  EXPECT_EQ(Utf8Lossy("\xE4\xB8"), r);
  EXPECT_EQ(Utf8Lossy("\xE4\xB8x"), r + "x");
  EXPECT_EQ(Utf8Lossy("\xFF\x80"), r + r);
  EXPECT_EQ(Utf8Lossy("\xE0\x80"), r + r);  // E0 needs A0..BF next: E0 alone is the subpart
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"), r);
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), r + r + r);  // surrogates: every byte
}

TEST(Utf8Test, IncompleteSuffix) {
  EXPECT_EQ(IncompleteUtf8SuffixLength(""), 0u);
  EXPECT_EQ(IncompleteUtf8SuffixLength("abc"), 0u);
  EXPECT_EQ(IncompleteUtf8SuffixLength("a\xE4"), 1u);
  EXPECT_EQ(IncompleteUtf8SuffixLength("a\xE4\xB8"), 2u);
  EXPECT_EQ(IncompleteUtf8SuffixLength("a\xE4\xB8\xAD"), 0u);
  EXPECT_EQ(IncompleteUtf8SuffixLength("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(IncompleteUtf8SuffixLength("\xE0\x80"), 0u);  // can never complete
  EXPECT_EQ(IncompleteUtf8SuffixLength("\x80\x80"), 0u);
}

TEST(Utf8Test, Whitespace) {
  for (char32_t cp : {U'\t', U'\n', U' ', U'\u0085', U'\u00A0', U'\u2003', U'\u3000'}) {
    EXPECT_TRUE(IsUnicodeWhitespace(cp)) << static_cast<uint32_t>(cp);
  }
  for (char32_t cp : {U'a', U'\u180E', U'\u200B', U'\uFEFF'}) {
    EXPECT_FALSE(IsUnicodeWhitespace(cp)) << static_cast<uint32_t>(cp);
  }
}

}  // namespace
}  // namespace gka::text
