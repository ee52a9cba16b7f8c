// What the router knows about the served model without loading it: the model directory's
// config.json / generation_config.json (vocabulary, EOS ids, sampling defaults, name) and the
// text assets (tokenizer.json, tokenizer_config.json's chat template).
//
// Owns: reading those files leniently (the router serves token ids without any of them).
// Must not depend on common/model, the engine or gRPC: the router reads only the few keys it
// needs, with nlohmann JSON.
//
//   GKA_ASSIGN_OR_RETURN(gka::router::ModelDescription model,
//                        gka::router::ReadModelDir("/models/GKA-primed-HQwen3-32B"));
//   GKA_ASSIGN_OR_RETURN(gka::router::TextAssets text, gka::router::LoadTextAssets(dir));
//   if (text.tokenizer == nullptr) { ... token ids only ... }
//
// Thread-safety: plain structs; the loaded Tokenizer and ChatTemplate are immutable and
// shareable across threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/text/chat_template.h"
#include "common/text/tokenizer.h"

namespace gka::router {

// Server-side sampling defaults (generation_config.json), used when a request leaves a field
// out. Absent here: temperature 1, top_k 0 (off), top_p 1, repetition_penalty 1.
struct SamplingDefaults {
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
};

struct ModelDescription {
  // The directory's last path component ("GKA-primed-HQwen3-32B-Instruct").
  std::string name;
  // config.json "vocab_size" (the embedding rows); 0 when unknown.
  int32_t vocab_size = 0;
  // generation_config.json "eos_token_id", else config.json's; may be empty.
  std::vector<int32_t> eos_token_ids;
  SamplingDefaults sampling;
};

// Reads `dir`/config.json and `dir`/generation_config.json; either may be missing.
// NotFound when `dir` is not a directory; InvalidArgument (naming the file) when a file
// exists but is not valid JSON or has a key of the wrong type.
absl::StatusOr<ModelDescription> ReadModelDir(absl::string_view dir);

struct TextAssets {
  // Null: no tokenizer.json (token-id requests only).
  std::unique_ptr<text::Tokenizer> tokenizer;
  // Set whenever `tokenizer` is: the tokenizer_config.json template, or plain ChatML when the
  // directory has no tokenizer_config.json.
  std::optional<text::ChatTemplate> chat_template;
  // Where they came from, for the start-up log.
  std::string description;
};

// Loads `dir`/tokenizer.json (and tokenizer_config.json beside it). An empty `dir`, or one
// without tokenizer.json, gives empty assets; a tokenizer.json that fails to load is an
// error (a broken file should not silently turn text serving off).
absl::StatusOr<TextAssets> LoadTextAssets(absl::string_view dir);

// EOS ids for requests: the model's, else the tokenizer's (<|im_end|>, <|endoftext|>, and its
// config's eos_token), deduplicated, in that order. Mirrors the offline `gka generate`.
std::vector<int32_t> ResolveEosIds(const std::vector<int32_t>& model_eos,
                                   const text::Tokenizer* tokenizer);

}  // namespace gka::router
