#include "common/text/unicode.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/text/utf8.h"

namespace gka::text::internal {
namespace {

#include "common/text/unicode_tables.inc"

constexpr uint16_t kCccMask = 0xFF;
constexpr uint16_t kQcNo = 1 << 8;
constexpr uint16_t kQcMaybe = 1 << 9;
constexpr uint16_t kWord = 1 << 10;
constexpr uint16_t kHasDecomposition = 1 << 11;

// Hangul syllables compose and decompose algorithmically (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr char32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint16_t Props(char32_t cp) {
  if (cp > 0x10FFFF) return 0;
  const uint16_t block = kPropsIndex[cp >> kPropsBlockShift];
  return kPropsBlocks[(static_cast<size_t>(block) << kPropsBlockShift) |
                      (cp & ((1u << kPropsBlockShift) - 1))];
}

uint8_t Ccc(char32_t cp) { return static_cast<uint8_t>(Props(cp) & kCccMask); }

void AppendDecomposition(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if ((Props(cp) & kHasDecomposition) == 0) {
    out.push_back(cp);
    return;
  }
  const auto* end = kDecompositions + std::size(kDecompositions);
  const auto* it = std::lower_bound(
      kDecompositions, end, cp,
      [](const DecompositionEntry& e, char32_t c) { return e.cp < static_cast<uint32_t>(c); });
  // The flag and the list come from the same generator run: a miss is a broken table.
  if (it == end || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  out.insert(out.end(), kDecompositionPool + it->offset,
             kDecompositionPool + it->offset + it->length);
}

// The primary composite of (first, second), or 0 when there is none.
char32_t Compose(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase &&
      second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const auto* end = kCompositions + std::size(kCompositions);
  const auto* it =
      std::lower_bound(kCompositions, end, std::make_pair(first, second),
                       [](const CompositionEntry& e, std::pair<char32_t, char32_t> k) {
                         return e.first != k.first ? e.first < k.first : e.second < k.second;
                       });
  if (it == end || it->first != first || it->second != second) return 0;
  return it->composite;
}

// NFC_QC over the whole text: true when every code point is NFC_QC=Yes and combining
// classes never decrease between non-starters (then the text is NFC as it is).
bool QuickCheckYes(absl::string_view text) {
  uint8_t last_ccc = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      last_ccc = 0;
      continue;
    }
    const uint16_t p = Props(DecodeUtf8(text, &pos));
    if ((p & (kQcNo | kQcMaybe)) != 0) return false;
    const uint8_t ccc = static_cast<uint8_t>(p & kCccMask);
    if (ccc != 0 && last_ccc > ccc) return false;
    last_ccc = ccc;
  }
  return true;
}

}  // namespace

absl::string_view NfcUnicodeVersion() { return kUnicodeVersion; }

absl::StatusOr<std::string> NfcNormalize(absl::string_view text) {
  bool ascii = true;
  for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(text);
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("NFC of text that is not UTF-8 (byte ", FirstInvalidUtf8Offset(text), ")"));
  }
  if (QuickCheckYes(text)) return std::string(text);

  // 1. Full canonical decomposition.
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) AppendDecomposition(DecodeUtf8(text, &pos), cps);
  // 2. Canonical ordering: each run of non-starters stably sorted by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (Ccc(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && Ccc(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](char32_t a, char32_t b) { return Ccc(a) < Ccc(b); });
    i = j;
  }
  // 3. Canonical composition: each code point joins the last starter unless something
  // between them blocks it (a starter, or a mark of the same or a higher class).
  std::vector<char32_t> out;
  out.reserve(cps.size());
  size_t starter = SIZE_MAX;  // index in `out` of the last starter
  uint8_t last_ccc = 0;       // class of out.back()
  for (char32_t cp : cps) {
    const uint8_t ccc = Ccc(cp);
    if (starter != SIZE_MAX) {
      const bool adjacent = out.size() - 1 == starter;
      if (adjacent || (last_ccc != 0 && last_ccc < ccc)) {
        if (const char32_t composite = Compose(out[starter], cp); composite != 0) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (ccc == 0) starter = out.size();
    last_ccc = ccc;
    out.push_back(cp);
  }
  std::string result;
  result.reserve(text.size());
  for (char32_t cp : out) AppendUtf8(cp, &result);
  return result;
}

bool IsWordCharacter(char32_t cp) { return (Props(cp) & kWord) != 0; }

}  // namespace gka::text::internal
