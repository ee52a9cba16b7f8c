#include "common/text/incremental_detokenizer.h"

#include "common/base/status.h"
#include "common/text/utf8.h"

namespace gka::text {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

absl::StatusOr<std::string> IncrementalDetokenizer::Add(int32_t id) {
  return Add(absl::MakeConstSpan(&id, 1));
}

absl::StatusOr<std::string> IncrementalDetokenizer::Add(absl::Span<const int32_t> ids) {
  for (int32_t id : ids) GKA_RETURN_IF_ERROR(tokenizer_.TokenBytes(id).status());
  for (int32_t id : ids) {
    if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) continue;
    const absl::string_view bytes = *tokenizer_.TokenBytes(id);
    pending_.append(bytes.data(), bytes.size());
  }
  // Everything but a trailing, still-completable character prefix is final: U+FFFD repair
  // of the emitted part cannot change later, because the held part starts a new character.
  const size_t hold = IncompleteUtf8SuffixLength(pending_);
  std::string out = Utf8Lossy(absl::string_view(pending_).substr(0, pending_.size() - hold));
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string IncrementalDetokenizer::Finish() {
  std::string out = Utf8Lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace gka::text
