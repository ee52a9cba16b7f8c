// UTF-8 helpers shared by the tokenizer, the detokenizer and the stop matcher.
//
// Owns: validation, decoding to code points, and the lossy repair Hugging Face tokenizers
// applies when token bytes do not form valid UTF-8 (Rust's String::from_utf8_lossy: each
// maximal invalid subpart becomes one U+FFFD). Must not depend on anything but Abseil.
//
//   if (!gka::text::IsValidUtf8(body)) return absl::InvalidArgumentError("not UTF-8");
//   std::string shown = gka::text::Utf8Lossy(token_bytes);
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace gka::text {

// The replacement character U+FFFD, UTF-8 encoded.
inline constexpr absl::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// Length of the valid UTF-8 sequence starting at s[pos], or 0 when the bytes there are not
// a complete valid sequence (truncated, overlong, surrogate, > U+10FFFF, stray byte).
size_t ValidSequenceLength(absl::string_view s, size_t pos);

// True when `s` is entirely well-formed UTF-8 (RFC 3629: no overlongs, no surrogates).
bool IsValidUtf8(absl::string_view s);

// Byte offset of the first invalid byte, for error messages; s.size() when valid.
size_t FirstInvalidUtf8Offset(absl::string_view s);

// Decodes one code point from valid UTF-8 at s[*pos] and advances *pos. Invalid bytes
// decode as U+FFFD and advance by one byte, so a loop always terminates.
char32_t DecodeUtf8(absl::string_view s, size_t* pos);

// Appends the UTF-8 encoding of `cp` (a Unicode scalar value).
void AppendUtf8(char32_t cp, std::string* out);

// `s` with every maximal invalid subpart replaced by U+FFFD, exactly as Rust's
// String::from_utf8_lossy does (the Unicode "substitution of maximal subparts" practice).
std::string Utf8Lossy(absl::string_view s);

// Number of trailing bytes of `s` that are a proper prefix of a valid UTF-8 sequence
// (0 to 3): the bytes a streaming decoder must hold until the character completes.
size_t IncompleteUtf8SuffixLength(absl::string_view s);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool IsUnicodeWhitespace(char32_t cp);

}  // namespace gka::text
