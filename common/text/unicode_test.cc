// Our NFC and \w tables against ICU (a test-only dependency): every code point alone, the
// tokenizer's test strings, and random sequences built to exercise reordering and
// composition. Code points newer than our tables' Unicode version are left out of the
// comparison (ICU 72 is Unicode 15.0; the tables are Python's unicodedata version) and
// counted, so the gap is visible.
#include "common/text/unicode.h"

#include <gtest/gtest.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/uchar.h>
#include <unicode/uversion.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/text/test_util.h"
#include "common/text/utf8.h"

namespace gka::text::internal {
namespace {

std::string IcuNfc(const std::string& text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  EXPECT_TRUE(U_SUCCESS(status)) << u_errorName(status);
  std::string out;
  icu::StringByteSink<std::string> sink(&out);
  nfc->normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), sink,
                     nullptr, status);
  EXPECT_TRUE(U_SUCCESS(status)) << u_errorName(status);
  return out;
}

// Rust regex's \w by ICU's properties (what unicode.cc computed before it had tables).
bool IcuWord(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) {
    return true;
  }
  const int8_t type = u_charType(c);
  return type == U_NON_SPACING_MARK || type == U_COMBINING_SPACING_MARK ||
         type == U_ENCLOSING_MARK || type == U_DECIMAL_DIGIT_NUMBER ||
         type == U_CONNECTOR_PUNCTUATION;
}

// Whether ICU says `cp` was assigned after the tables' Unicode version.
bool NewerThanTables(char32_t cp) {
  static const std::pair<int, int> tables = [] {
    std::vector<std::string> parts = absl::StrSplit(NfcUnicodeVersion(), '.');
    int major = 0, minor = 0;
    EXPECT_TRUE(parts.size() >= 2 && absl::SimpleAtoi(parts[0], &major) &&
                absl::SimpleAtoi(parts[1], &minor));
    return std::make_pair(major, minor);
  }();
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(cp), age);
  return std::make_pair(static_cast<int>(age[0]), static_cast<int>(age[1])) > tables;
}

std::string Utf8(const std::vector<char32_t>& cps) {
  std::string s;
  for (char32_t cp : cps) AppendUtf8(cp, &s);
  return s;
}

std::string Codes(const std::string& text) {
  std::string out;
  for (size_t pos = 0; pos < text.size();) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "U+%04X ", static_cast<unsigned>(DecodeUtf8(text, &pos)));
    out += buf;
  }
  return out;
}

bool IsScalar(char32_t cp) { return cp < 0xD800 || (cp > 0xDFFF && cp <= 0x10FFFF); }

TEST(NfcTest, KnownCases) {
  EXPECT_EQ(*NfcNormalize("plain ascii"), "plain ascii");
  EXPECT_EQ(*NfcNormalize("e\xCC\x81"), "\xC3\xA9");  // e + U+0301 -> é
  // Hangul L V T -> one syllable (U+AC01), algorithmically.
  EXPECT_EQ(*NfcNormalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");
  // a + U+0301 (230) + U+0316 (220): reordered, then a+acute composes past the lower class.
  EXPECT_EQ(Codes(*NfcNormalize("a\xCC\x81\xCC\x96")), "U+00E1 U+0316 ");
  // U+0344 decomposes to U+0308 U+0301 and never recomposes (a non-starter decomposition).
  EXPECT_EQ(Codes(*NfcNormalize("\xCD\x84")), "U+0308 U+0301 ");
  // U+212B ANGSTROM SIGN is a singleton: NFC gives U+00C5.
  EXPECT_EQ(Codes(*NfcNormalize("\xE2\x84\xAB")), "U+00C5 ");
  EXPECT_EQ(NfcNormalize("bad \xFF").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NfcNormalize("truncated \xC3").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NfcTest, EveryCodePointAloneMatchesIcu) {
  int compared = 0, newer = 0, nfc_differs = 0, word_differs = 0;
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (!IsScalar(cp)) continue;
    if (NewerThanTables(cp)) {
      ++newer;
      continue;
    }
    ++compared;
    const std::string s = Utf8({cp});
    const absl::StatusOr<std::string> ours = NfcNormalize(s);
    ASSERT_TRUE(ours.ok()) << ours.status();
    const std::string icu = IcuNfc(s);
    if (*ours != icu && ++nfc_differs <= 20) {
      ADD_FAILURE() << Codes(s) << "-> ours " << Codes(*ours) << " ICU " << Codes(icu);
    }
    if (IsWordCharacter(cp) != IcuWord(cp) && ++word_differs <= 20) {
      ADD_FAILURE() << Codes(s) << "\\w: ours " << IsWordCharacter(cp) << " ICU " << IcuWord(cp);
    }
  }
  EXPECT_EQ(nfc_differs, 0);
  EXPECT_EQ(word_differs, 0);
  EXPECT_GT(compared, 1100000);
  std::printf(
      "compared %d code points alone (Unicode %s tables vs ICU %s); %d newer ones "
      "left out\n",
      compared, std::string(NfcUnicodeVersion()).c_str(), U_ICU_VERSION, newer);
}

TEST(NfcTest, TokenizerTestStringsMatchIcu) {
  int compared = 0, changed = 0;
  for (const char* file : {"golden.jsonl", "added_flags_golden.json", "chat_golden.json"}) {
    std::ifstream in(TestDataPath(file));
    ASSERT_TRUE(in) << TestDataPath(file);
    // Every string anywhere in the file (texts, messages, expected outputs).
    std::vector<std::string> texts;
    auto collect = [&](auto& self, const nlohmann::json& j) -> void {
      if (j.is_string()) texts.push_back(j.get<std::string>());
      if (j.is_array() || j.is_object()) {
        for (const auto& v : j) self(self, v);
      }
    };
    std::string whole((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (absl::string_view(file).substr(absl::string_view(file).size() - 5) == "jsonl") {
      for (absl::string_view l : absl::StrSplit(whole, '\n', absl::SkipEmpty())) {
        collect(collect, nlohmann::json::parse(l));
      }
    } else {
      collect(collect, nlohmann::json::parse(whole));
    }
    for (const std::string& t : texts) {
      if (!IsValidUtf8(t)) continue;
      bool newer = false;
      for (size_t pos = 0; pos < t.size();) newer |= NewerThanTables(DecodeUtf8(t, &pos));
      if (newer) continue;
      const std::string icu = IcuNfc(t);
      EXPECT_EQ(*NfcNormalize(t), icu) << Codes(t.substr(0, 80));
      ++compared;
      changed += icu != t;
    }
  }
  EXPECT_GT(compared, 250);
  EXPECT_GT(changed, 0) << "no test string changes under NFC: the comparison shows little";
  std::printf("compared %d tokenizer test strings, %d of them changed by NFC\n", compared, changed);
}

TEST(NfcTest, RandomSequencesMatchIcu) {
  // Half the draws from code points that take part in normalization (marks, decomposables,
  // composites' parts, Hangul jamo and syllables), half from every assigned code point.
  std::vector<char32_t> interesting, assigned;
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (!IsScalar(cp) || NewerThanTables(cp) || u_charType(cp) == U_UNASSIGNED) continue;
    assigned.push_back(cp);
    const std::string s = Utf8({cp});
    const bool decomposes = IcuNfc(s) != s || u_getCombiningClass(cp) != 0 ||
                            u_getIntPropertyValue(cp, UCHAR_NFC_QUICK_CHECK) != UNORM_YES ||
                            u_hasBinaryProperty(cp, UCHAR_FULL_COMPOSITION_EXCLUSION) ||
                            u_getIntPropertyValue(cp, UCHAR_DECOMPOSITION_TYPE) == U_DT_CANONICAL ||
                            (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0xAC00 && cp <= 0xD7A3);
    if (decomposes) interesting.push_back(cp);
  }
  ASSERT_GT(interesting.size(), 3000u);
  const uint32_t seed = 20261127;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> length(1, 10);
  std::bernoulli_distribution pick_interesting(0.75);
  int differs = 0, changed = 0;
  constexpr int kSequences = 200000;
  for (int n = 0; n < kSequences; ++n) {
    std::vector<char32_t> cps(length(rng));
    for (char32_t& cp : cps) {
      const auto& from = pick_interesting(rng) ? interesting : assigned;
      cp = from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
    }
    const std::string s = Utf8(cps);
    const std::string icu = IcuNfc(s);
    changed += icu != s;
    const absl::StatusOr<std::string> ours = NfcNormalize(s);
    ASSERT_TRUE(ours.ok()) << ours.status();
    if (*ours != icu && ++differs <= 20) {
      ADD_FAILURE() << Codes(s) << "-> ours " << Codes(*ours) << " ICU " << Codes(icu);
    }
  }
  EXPECT_EQ(differs, 0);
  EXPECT_GT(changed, kSequences / 10) << "too few sequences exercise normalization";
  std::printf("compared %d random sequences (seed %u), %d changed by NFC\n", kSequences, seed,
              changed);
}

}  // namespace
}  // namespace gka::text::internal
