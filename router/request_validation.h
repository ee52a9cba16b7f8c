// Admission checks for public requests: GenerateRequest / TokenizeRequest -> a resolved,
// validated plan (prompt token ids, tier, num_iter, max_tokens, worker sampling parameters),
// or a Status a client can act on.
//
// Owns: the rules of gka.serving.v1 (serving.proto): every bad field is named in one
// INVALID_ARGUMENT ("sampling.top_p: 1.5 is outside (0, 1]; tier: unknown tier 'x'; ..."),
// text input or stop strings without a tokenizer are FAILED_PRECONDITION, prompts past the
// model context are INVALID_ARGUMENT. Tokenizes text and renders chat messages through
// common/text. Must not depend on gRPC transport, the engine or the workers; the protobuf
// messages are the router's own vocabulary. The OpenAI gateway (issue 8) builds a
// GenerateRequest and runs it through the same function.
//
//   RequestContext rc{.tiers = &tiers, .tokenizer = tok.get(), ...};
//   absl::StatusOr<ResolvedRequest> plan = ResolveRequest(request, rc);
//   if (!plan.ok()) return plan.status();     // INVALID_ARGUMENT naming the fields
//
// Thread-safety: free functions over immutable inputs; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/text/chat_template.h"
#include "common/text/tokenizer.h"
#include "gka/serving/v1/serving.pb.h"
#include "gka/worker/v1/worker.pb.h"
#include "router/model_dir.h"
#include "router/tiers.h"

namespace gka::router {

// What validation reads; borrowed pointers must outlive the call.
struct RequestContext {
  const TierTable* tiers = nullptr;
  // The served model's name; empty accepts any request.model.
  std::string served_model;
  // Null: token ids only (text, chat and stop strings are FAILED_PRECONDITION).
  const text::Tokenizer* tokenizer = nullptr;
  const text::ChatTemplate* chat_template = nullptr;
  // 0 when unknown (no check).
  int32_t vocab_size = 0;
  // Smallest context of the registered workers; 0 when unknown (no check).
  int32_t max_context_tokens = 0;
  // Added to every request's stop ids unless ignore_eos.
  std::vector<int32_t> eos_token_ids;
  SamplingDefaults sampling_defaults;
  // max_tokens when the request leaves it out (still capped by the tier and the context).
  int32_t default_max_tokens = 256;
};

struct Prompt {
  std::vector<int32_t> token_ids;
  // What was tokenized: the text input, or the rendered chat prompt; empty for token ids.
  std::string text;
};

struct ResolvedRequest {
  // As the client sent it; empty means the router assigns one.
  std::string request_id;
  const Tier* tier = nullptr;
  Prompt prompt;
  // >= 1, capped by the tier's max_tokens and the context.
  int32_t max_tokens = 0;
  int32_t prefill_num_iter = 0;
  int32_t decode_num_iter = 0;
  // Defaults applied; stop_token_ids include EOS unless ignore_eos.
  worker::v1::WorkerSamplingParams sampling;
  std::vector<std::string> stop_strings;
};

// Validates `request` completely and tokenizes its input. Errors: INVALID_ARGUMENT naming
// every bad field; FAILED_PRECONDITION for text/chat input or stop strings without a
// tokenizer.
absl::StatusOr<ResolvedRequest> ResolveRequest(const serving::v1::GenerateRequest& request,
                                               const RequestContext& context);

// The Tokenize RPC: the same model check and prompt building as Generate.
absl::StatusOr<Prompt> TokenizeRequest(const serving::v1::TokenizeRequest& request,
                                       const RequestContext& context);

// Renders `chat` with the chat template and tokenizes it. `field` prefixes messages
// ("chat"). FAILED_PRECONDITION without a tokenizer.
absl::StatusOr<Prompt> BuildChatPrompt(const serving::v1::ChatMessages& chat,
                                       const RequestContext& context, absl::string_view field);

// At most `max_bytes` of `s` for an error message, quoted, with "..." when cut.
std::string QuoteForMessage(absl::string_view s, size_t max_bytes = 64);

}  // namespace gka::router
