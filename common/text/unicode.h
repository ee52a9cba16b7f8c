// Internal to gka::text: the Unicode services the tokenizer needs from ICU (NFC for the
// "NFC" normalizer of tokenizer.json; character properties for added tokens' single_word
// rule), behind plain functions so that ICU's types stay out of every header.
//
//   GKA_ASSIGN_OR_RETURN(std::string normalized, NfcNormalize(piece));
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::text::internal {

// NFC of valid UTF-8 `text`. Pure ASCII and already-normalised text (the common case) skip
// the composition pass. Internal when ICU fails (it does not for valid input).
// InvalidArgument for text over 2 GiB (ICU's length type).
absl::StatusOr<std::string> NfcNormalize(absl::string_view text);

// Rust regex's \w (Unicode): Alphabetic, marks, decimal digits, connector punctuation and
// Join_Control. HF's single_word rule asks it of the characters around an added token.
bool IsWordCharacter(char32_t cp);

}  // namespace gka::text::internal
