#include "common/text/utf8.h"

namespace gka::text {
namespace {

// How a sequence that starts with `lead` must look: its total length and the allowed range
// of the second byte (the later ones are always 80..BF). RFC 3629, table 3-7 of the
// Unicode standard; the narrowed second-byte ranges exclude overlongs and surrogates.
struct LeadInfo {
  int length;  // 0: not a lead byte
  uint8_t second_lo;
  uint8_t second_hi;
};

LeadInfo InfoFor(uint8_t lead) {
  if (lead < 0x80) return {1, 0, 0};
  if (lead < 0xC2) return {0, 0, 0};
  if (lead < 0xE0) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};
  if (lead == 0xED) return {3, 0x80, 0x9F};
  if (lead < 0xF0) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};
  if (lead < 0xF4) return {4, 0x80, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Bytes from s[pos] that are consistent with one valid sequence (1 to its full length), and
// that sequence's full length through `expected` (0 when s[pos] cannot start one).
size_t ConsistentPrefix(absl::string_view s, size_t pos, int* expected) {
  const LeadInfo info = InfoFor(static_cast<uint8_t>(s[pos]));
  *expected = info.length;
  if (info.length <= 1) return 1;
  size_t n = 1;
  while (n < static_cast<size_t>(info.length) && pos + n < s.size()) {
    const uint8_t b = static_cast<uint8_t>(s[pos + n]);
    const bool ok =
        n == 1 ? (b >= info.second_lo && b <= info.second_hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++n;
  }
  return n;
}

}  // namespace

size_t ValidSequenceLength(absl::string_view s, size_t pos) {
  if (pos >= s.size()) return 0;
  int expected = 0;
  const size_t n = ConsistentPrefix(s, pos, &expected);
  return expected > 0 && n == static_cast<size_t>(expected) ? n : 0;
}

size_t FirstInvalidUtf8Offset(absl::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    // ASCII runs dominate real text; skip them without the table.
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = ValidSequenceLength(s, pos);
    if (n == 0) return pos;
    pos += n;
  }
  return s.size();
}

bool IsValidUtf8(absl::string_view s) { return FirstInvalidUtf8Offset(s) == s.size(); }

char32_t DecodeUtf8(absl::string_view s, size_t* pos) {
  const size_t n = ValidSequenceLength(s, *pos);
  if (n == 0) {
    ++*pos;
    return 0xFFFD;
  }
  const uint8_t b0 = static_cast<uint8_t>(s[*pos]);
  char32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<uint8_t>(s[*pos + i]) & 0x3F);
  *pos += n;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Utf8Lossy(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    int expected = 0;
    const size_t n = ConsistentPrefix(s, pos, &expected);
    if (expected > 0 && n == static_cast<size_t>(expected)) {
      out.append(s.data() + pos, n);
    } else {
      // One U+FFFD for the maximal subpart: the bytes that could still have been valid.
      out.append(kReplacementCharacter.data(), kReplacementCharacter.size());
    }
    pos += n;
  }
  return out;
}

size_t IncompleteUtf8SuffixLength(absl::string_view s) {
  for (size_t k = 1; k <= 3 && k <= s.size(); ++k) {
    const size_t start = s.size() - k;
    const uint8_t b = static_cast<uint8_t>(s[start]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: the lead is further back
    int expected = 0;
    const size_t n = ConsistentPrefix(s, start, &expected);
    return expected > static_cast<int>(k) && n == k ? k : 0;
  }
  return 0;
}

bool IsUnicodeWhitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

}  // namespace gka::text
