#include "router/output_text.h"

#include "common/base/status.h"

namespace gka::router {

absl::StatusOr<OutputText> OutputText::Create(const text::Tokenizer* tokenizer,
                                              std::vector<std::string> stop_strings,
                                              const std::vector<int32_t>& hidden_ids) {
  if (tokenizer == nullptr && !stop_strings.empty()) {
    return absl::FailedPreconditionError("stop strings need a tokenizer");
  }
  GKA_ASSIGN_OR_RETURN(text::StopMatcher matcher,
                       text::StopMatcher::Create(std::move(stop_strings)));
  return OutputText(tokenizer, std::move(matcher),
                    absl::flat_hash_set<int32_t>(hidden_ids.begin(), hidden_ids.end()));
}

OutputText::OutputText(const text::Tokenizer* tokenizer, text::StopMatcher matcher,
                       absl::flat_hash_set<int32_t> hidden_ids)
    : tokenizer_(tokenizer), matcher_(std::move(matcher)), hidden_ids_(std::move(hidden_ids)) {
  if (tokenizer_ != nullptr) detok_.emplace(*tokenizer_, /*skip_special_tokens=*/true);
}

OutputText::Piece OutputText::FromMatcher(text::StopMatcher::Result r) {
  return Piece{.text = std::move(r.text), .stopped = r.stopped, .stop_index = r.stop_index};
}

OutputText::Piece OutputText::Add(int32_t id) {
  if (!detok_.has_value() || matcher_.stopped()) {
    return Piece{.stopped = matcher_.stopped()};
  }
  if (hidden_ids_.contains(id)) return Piece{};
  absl::StatusOr<std::string> piece = detok_->Add(id);
  if (!piece.ok()) return Piece{};  // an id without text; the detokenizer state is unchanged
  return FromMatcher(matcher_.Add(*piece));
}

OutputText::Piece OutputText::Finish() {
  if (!detok_.has_value() || matcher_.stopped()) {
    return Piece{.stopped = matcher_.stopped()};
  }
  Piece last = FromMatcher(matcher_.Add(detok_->Finish()));
  if (!last.stopped) last.text += matcher_.Flush();
  return last;
}

}  // namespace gka::router
