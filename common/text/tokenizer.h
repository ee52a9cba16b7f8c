// Byte-level BPE tokenizer (Qwen2/Qwen3, GPT-2 family) loaded from a Hugging Face
// tokenizer.json, producing exactly the ids HF tokenizers produces for the same file.
//
// Owns: the vocabulary, merges, added tokens, the NFC normalizer and the pre-tokenizer split
// regex of one tokenizer.json, and the Encode/Decode pipeline:
//   added tokens matched as whole strings (HF AddedVocabulary: leftmost-longest, with the
//   special / normalized / lstrip / rstrip / single_word flags) -> NFC on the text between
//   them -> Split regex (PCRE2, Oniguruma semantics) -> ByteLevel -> BPE merges by rank.
// Must not depend on anything above common/base (no engine, no gRPC): the router and the CLI
// use it without a model.
//
//   GKA_ASSIGN_OR_RETURN(std::unique_ptr<gka::text::Tokenizer> tok,
//                        gka::text::Tokenizer::FromFile("/models/qwen3"));  // dir or file
//   GKA_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->Encode("Hello world"));  // {9707, 1879}
//   GKA_ASSIGN_OR_RETURN(std::string text, tok->Decode(ids));                    // "Hello world"
//
// Thread-safety: a Tokenizer is immutable after FromFile/FromJson except for an internally
// locked BPE cache; every const method may be called from any number of threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace gka::text {

// One entry of tokenizer.json's "added_tokens", with HF's flags.
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;      // skipped by Decode(..., skip_special_tokens=true)
  bool normalized = false;   // matched after NFC (true) or in the raw input (false)
  bool lstrip = false;       // also swallows whitespace on its left
  bool rstrip = false;       // also swallows whitespace on its right
  bool single_word = false;  // matches only when not inside a word
};

// Ids of the tokens the serving stack treats specially; std::nullopt when the tokenizer
// lacks the token (or, for eos/pad, when no tokenizer_config.json named one).
struct SpecialTokenIds {
  std::optional<int32_t> endoftext;  // <|endoftext|>
  std::optional<int32_t> im_start;   // <|im_start|>
  std::optional<int32_t> im_end;     // <|im_end|>
  std::optional<int32_t> eos;        // tokenizer_config.json "eos_token"
  std::optional<int32_t> pad;        // tokenizer_config.json "pad_token"
};

class Tokenizer {
 public:
  // `path` is a tokenizer.json file, or a directory holding tokenizer.json. A
  // tokenizer_config.json beside it, if any, is read for eos_token / pad_token. NotFound when
  // the file is
  // missing; InvalidArgument, naming the file and the offending key, when the JSON is
  // malformed or describes a tokenizer this class does not implement (it supports byte-level
  // BPE with an optional NFC normalizer and Split / ByteLevel pre-tokenizers).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(absl::string_view path);

  // The same from file contents; `tokenizer_config_json` may be empty. `source` names the
  // input in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      absl::string_view tokenizer_json, absl::string_view tokenizer_config_json = {},
      absl::string_view source = "tokenizer.json");

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`, taken byte for byte (trailing newlines included). No BOS/EOS is
  // added. Added tokens found in the text (e.g. "<|im_start|>") become their ids, as with
  // HF's encode(text, add_special_tokens=False). InvalidArgument (with the byte offset) when
  // `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  // Text of `ids`. Token bytes that do not form valid UTF-8 (a character cut between ids
  // at the end, or ids that never form one) become U+FFFD, as HF's decode does.
  // `skip_special_tokens` drops added tokens flagged special (<|im_end|>, ...), not the
  // others (<think>, <tool_call>). InvalidArgument when an id is outside [0, VocabSize())
  // or names no token.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens = false) const;

  // One past the largest token id (151669 for Qwen3; the model's embedding may be padded
  // beyond it, but ids at or past this have no text).
  int32_t VocabSize() const;

  // Raw bytes of token `id` (not necessarily valid UTF-8: a token may hold part of a
  // character). The view lives as long as the Tokenizer. InvalidArgument when out of range.
  absl::StatusOr<absl::string_view> TokenBytes(int32_t id) const;

  // The token as spelled in tokenizer.json ("Ġworld" for " world"; added tokens as their
  // content). InvalidArgument when out of range.
  absl::StatusOr<std::string> IdToToken(int32_t id) const;

  // Id of a token spelled as in tokenizer.json ("Ġworld", "<|im_end|>"); std::nullopt if
  // the vocabulary has no such token.
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  // True for added tokens flagged special (what skip_special_tokens drops).
  bool IsSpecial(int32_t id) const;

  const SpecialTokenIds& special_ids() const;
  const std::vector<AddedToken>& added_tokens() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJsonFiles(
      absl::string_view tokenizer_json, absl::string_view tokenizer_source,
      absl::string_view tokenizer_config_json, absl::string_view config_source);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gka::text
