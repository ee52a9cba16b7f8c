// Internal to gka::text: GPT-2's byte-level alphabet (`bytes_to_unicode` in GPT-2's
// encoder.py, the ByteLevel pre-tokenizer and decoder of Hugging Face tokenizers).
//
// Byte-level BPE vocabularies spell every byte as one printable code point so that a token
// is a readable string ("Ġworld" is " world"). gka::text keeps tokens as raw bytes inside
// and converts only at the tokenizer.json boundary and for IdToToken/TokenToId.
//
//   std::optional<std::string> raw = ByteLevelToBytes("Ġworld");  // " world"
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace gka::text::internal {

// The code point GPT-2 uses to spell byte `b`.
char32_t ByteToCodePoint(uint8_t b);

// Raw bytes of a token written in the byte-level alphabet; std::nullopt when `token` is not
// valid UTF-8 or holds a code point outside the alphabet.
std::optional<std::string> ByteLevelToBytes(absl::string_view token);

// The byte-level spelling of raw bytes (inverse of ByteLevelToBytes).
std::string BytesToByteLevel(absl::string_view bytes);

}  // namespace gka::text::internal
