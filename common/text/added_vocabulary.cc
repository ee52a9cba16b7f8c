#include "common/text/added_vocabulary.h"

#include <algorithm>

#include "common/text/unicode.h"
#include "common/text/utf8.h"

namespace gka::text::internal {
namespace {

// Start of the character that ends text[0, end) (end > 0).
size_t PrevCharStart(absl::string_view text, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  return begin;
}

char32_t LastCodePoint(absl::string_view text, size_t end) {
  size_t begin = PrevCharStart(text, end);
  return DecodeUtf8(text, &begin);
}

using Children = std::vector<std::pair<unsigned char, int32_t>>;

// First child whose byte is not less than `c` (children are sorted by byte).
Children::const_iterator LowerBound(const Children& children, unsigned char c) {
  return std::lower_bound(children.begin(), children.end(), c,
                          [](const auto& child, unsigned char b) { return child.first < b; });
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : trie_(1) {
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) continue;  // HF never matches an empty token
    const auto index = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(token);
    first_byte_[static_cast<unsigned char>(token.content[0])] = true;
    int32_t node = 0;
    for (char ch : token.content) {
      const auto c = static_cast<unsigned char>(ch);
      auto& children = trie_[node].children;
      auto it = LowerBound(children, c);
      if (it != children.end() && it->first == c) {
        node = it->second;
        continue;
      }
      const auto child = static_cast<int32_t>(trie_.size());
      children.insert(it, {c, child});
      trie_.emplace_back();  // invalidates `children`; not used past here
      node = child;
    }
    // Duplicate contents: the first token wins, as HF's vocabulary keeps one id per content.
    if (trie_[node].token < 0) trie_[node].token = index;
  }
}

int32_t AddedTokenMatcher::LongestAt(absl::string_view text, size_t pos, size_t* length) const {
  int32_t best = -1;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto& children = trie_[node].children;
    auto it = LowerBound(children, c);
    if (it == children.end() || it->first != c) break;
    node = it->second;
    if (trie_[node].token >= 0) {
      best = trie_[node].token;
      *length = i + 1 - pos;
    }
  }
  return best;
}

void AddedTokenMatcher::Split(absl::string_view text, std::vector<TextPiece>* pieces) const {
  size_t start_offset = 0;  // end of the last emitted piece
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    size_t length = 0;
    const int32_t index = LongestAt(text, pos, &length);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos;
    size_t stop = pos + length;
    // Matching resumes after the match even when the flags reject it (Aho-Corasick's
    // non-overlapping iteration does the same).
    pos = stop;
    if (token.single_word) {
      const bool space_before = start == 0 || !IsWordCharacter(LastCodePoint(text, start));
      size_t after = stop;
      const bool space_after = stop == text.size() || !IsWordCharacter(DecodeUtf8(text, &after));
      if (!space_before || !space_after) continue;
    }
    if (start < start_offset) continue;  // overlaps what an rstrip already took
    if (token.lstrip) {
      while (start > start_offset && IsUnicodeWhitespace(LastCodePoint(text, start))) {
        start = PrevCharStart(text, start);
      }
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t next = stop;
        if (!IsUnicodeWhitespace(DecodeUtf8(text, &next))) break;
        stop = next;
      }
      pos = stop;
    }
    if (start_offset < start) pieces->push_back({start_offset, start, -1});
    pieces->push_back({start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) pieces->push_back({start_offset, text.size(), -1});
}

}  // namespace gka::text::internal
