// Internal to gka::text: finding added tokens in text the way HF tokenizers'
// AddedVocabulary::find_matches does, so that "<|im_start|>" in a prompt becomes one id.
//
// Matching is leftmost-longest and non-overlapping over the whole token strings (HF's
// Aho-Corasick with MatchKind::LeftmostLongest); each match then obeys its token's flags:
// single_word drops a match inside a word, lstrip/rstrip widen it over adjacent whitespace.
//
//   AddedTokenMatcher matcher(tokens);  // the tokens matched at this stage
//   std::vector<TextPiece> pieces;
//   matcher.Split(text, &pieces);  // text pieces (id -1) and added-token pieces
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/text/tokenizer.h"

namespace gka::text::internal {

// A byte range of the split text: an added token (`id` >= 0) or text still to tokenize.
struct TextPiece {
  size_t begin;
  size_t end;
  int32_t id;  // -1 for ordinary text
};

// Thread-safe after construction (immutable).
class AddedTokenMatcher {
 public:
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  bool empty() const { return tokens_.empty(); }

  // Appends the pieces of valid UTF-8 `text`, in order and covering it exactly.
  void Split(absl::string_view text, std::vector<TextPiece>* pieces) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                       // index into tokens_
  };
  // Longest token starting at text[pos]: its index, or -1; its length through *length.
  int32_t LongestAt(absl::string_view text, size_t pos, size_t* length) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> trie_;  // trie_[0] is the root
  bool first_byte_[256] = {};
};

}  // namespace gka::text::internal
