// Streaming detokenization: token ids in, text out as soon as it is complete.
//
// Owns the bytes of a character cut between tokens (byte-level BPE splits rare characters,
// emoji and CJK across ids): they are held until the character completes, so no output ever
// ends in half a UTF-8 character. The concatenation of every Add() plus Finish() equals
// Tokenizer::Decode(all ids) exactly, U+FFFD repairs included.
// Must not depend on anything above common/base; borrows the Tokenizer.
//
//   gka::text::IncrementalDetokenizer detok(*tokenizer, /*skip_special_tokens=*/true);
//   for (int32_t id : stream) {
//     GKA_ASSIGN_OR_RETURN(std::string piece, detok.Add(id));
//     Send(piece);  // may be empty while a character is incomplete
//   }
//   Send(detok.Finish());
//
// Thread-safety: one object per stream; not safe for concurrent use. The Tokenizer must
// outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/text/tokenizer.h"

namespace gka::text {

class IncrementalDetokenizer {
 public:
  // `skip_special_tokens` as in Tokenizer::Decode: special added tokens produce no text.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false);

  // The text completed by `id` (empty while a character is still incomplete).
  // InvalidArgument for an id the tokenizer does not have; the state is then unchanged.
  absl::StatusOr<std::string> Add(int32_t id);

  // Several ids at once; fails before consuming any when one is invalid.
  absl::StatusOr<std::string> Add(absl::Span<const int32_t> ids);

  // End of stream: held bytes that never completed a character come out as U+FFFD (as
  // Decode does for the same ids). The detokenizer is then empty and can be reused.
  std::string Finish();

  // Bytes held back waiting for the rest of a character (0 to 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // raw bytes not yet emitted: a proper prefix of one character
};

}  // namespace gka::text
