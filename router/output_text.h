// The text side of one response stream: generated token ids in, client-visible text out.
//
// Owns: the incremental detokenizer (UTF-8 characters cut between tokens are held back) and
// the stop-string matcher (a stop string split across tokens is caught; neither it nor
// anything after it is sent), and hides the text of stop token ids (EOS, the request's
// stop_token_ids), as OpenAI and vLLM do. Must not depend on gRPC or the workers.
//
//   GKA_ASSIGN_OR_RETURN(OutputText out, OutputText::Create(tokenizer, {"\n\n"}, {151645}));
//   for (int32_t id : ids) {
//     OutputText::Piece p = out.Add(id);
//     Send(p.text);
//     if (p.stopped) { AbortDecode(); Finish(out.stop_strings()[p.stop_index]); }
//   }
//   Send(out.Finish().text);   // end of stream: held-back text (may still complete a stop)
//
// Without a tokenizer every Piece is empty text (token ids only; Create refuses stop strings).
// Thread-safety: one object per stream; not safe for concurrent use. The tokenizer must
// outlive it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "common/text/incremental_detokenizer.h"
#include "common/text/stop_matcher.h"
#include "common/text/tokenizer.h"

namespace gka::router {

class OutputText {
 public:
  struct Piece {
    // Safe to send now; ends just before the stop string when `stopped`.
    std::string text;
    bool stopped = false;
    // Index into stop_strings() when stopped.
    int stop_index = -1;
  };

  // `tokenizer` may be null (then `stop_strings` must be empty: FailedPrecondition
  // otherwise). `hidden_ids` produce no text (stop token ids). InvalidArgument for an empty
  // or non-UTF-8 stop string.
  static absl::StatusOr<OutputText> Create(const text::Tokenizer* tokenizer,
                                           std::vector<std::string> stop_strings,
                                           const std::vector<int32_t>& hidden_ids);

  OutputText(OutputText&&) = default;

  // Text completed by `id`. After a stop, everything is discarded (stopped stays true).
  // Ids the tokenizer does not know (a model vocabulary padded past the tokenizer's) produce
  // no text.
  Piece Add(int32_t id);

  // End of stream: the detokenizer's held bytes (as U+FFFD) and the matcher's held text.
  // May itself complete a stop string.
  Piece Finish();

  bool stopped() const { return matcher_.stopped(); }
  const std::vector<std::string>& stop_strings() const { return matcher_.stop_strings(); }

 private:
  OutputText(const text::Tokenizer* tokenizer, text::StopMatcher matcher,
             absl::flat_hash_set<int32_t> hidden_ids);
  Piece FromMatcher(text::StopMatcher::Result r);

  const text::Tokenizer* tokenizer_;
  std::optional<text::IncrementalDetokenizer> detok_;
  text::StopMatcher matcher_;
  absl::flat_hash_set<int32_t> hidden_ids_;
};

}  // namespace gka::router
