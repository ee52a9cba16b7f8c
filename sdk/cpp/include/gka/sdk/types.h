// gkaserve C++ SDK: the plain value types of the public API gka.serving.v1 (requests,
// streamed chunks, results, model info) and the structured error carried by a Status.
//
// Owns nothing but values. Depends on Abseil (Status, Time) and the standard library only —
// never on gRPC or protobuf, so that including it costs a user nothing (the SDK converts to
// and from the wire types inside the library).
//
//   gka::sdk::Request request = gka::sdk::Request::Text("Hello", {.max_tokens = 16});
//   request.sampling.temperature = 0.0f;                    // optional: unset = server default
//   gka::sdk::Request chat = gka::sdk::ChatRequest({gka::sdk::ChatMessage::User("Hi")});
//   ...
//   if (std::optional<gka::sdk::ErrorDetails> e = gka::sdk::GetErrorDetails(status)) {
//     if (e->retryable) ...;                                // the server's own verdict
//   }
//
// Thread-safety: plain values; the usual rules for standard containers apply.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace gka::sdk {

// ------------------------------------------------------------------------------------------
// Inputs

// Sampling parameters; an unset field takes the tier's or the server's default. Ranges are
// checked by the server (INVALID_ARGUMENT naming the field), not here.
struct SamplingParams {
  std::optional<int32_t> max_tokens;        // >= 1
  std::optional<float> temperature;         // >= 0; 0 is greedy
  std::optional<int32_t> top_k;             // >= 0; 0 is no cut
  std::optional<float> top_p;               // (0, 1]
  std::optional<float> min_p;               // [0, 1]
  std::optional<float> repetition_penalty;  // > 0; 1 is none
  std::optional<float> presence_penalty;    // [-2, 2]
  std::optional<float> frequency_penalty;   // [-2, 2]
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;        // stop strings (not returned in the text)
  std::vector<int32_t> stop_token_ids;  // besides the model's EOS unless ignore_eos
  std::optional<bool> ignore_eos;
  std::optional<bool> logprobs;         // log-probability of every sampled token
  std::optional<int32_t> top_logprobs;  // 0..20 alternatives per position
};

struct ToolCall {
  std::string id;
  std::string type = "function";
  std::string name;            // function name
  std::string arguments_json;  // JSON text of the arguments object
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" or "tool"
  std::string content;
  std::vector<ToolCall> tool_calls;  // assistant turns that called tools
  std::string tool_call_id;          // tool turns: the call this message answers
  std::string name;                  // optional participant or tool name

  static ChatMessage System(std::string content) { return {"system", std::move(content)}; }
  static ChatMessage User(std::string content) { return {"user", std::move(content)}; }
  static ChatMessage Assistant(std::string content) { return {"assistant", std::move(content)}; }
};

struct Chat {
  std::vector<ChatMessage> messages;
  std::string tools_json;               // JSON array of OpenAI-style tools; empty: none
  std::optional<bool> enable_thinking;  // Qwen3 thinking switch; unset: template default
};

using TokenIds = std::vector<int32_t>;

struct Request {
  // Echoed in every response and used by Client::Abort. Empty: the client assigns a unique
  // one (ClientOptions::assign_request_ids), else the router does.
  std::string request_id;
  // Exactly one input: prompt text, prompt token ids, or chat messages (rendered with the
  // model's chat template by the router).
  std::variant<std::string, TokenIds, Chat> input;
  SamplingParams sampling;
  std::string tier;  // empty: the default tier
  // GKA solver iterations, clamped by the router to the tier's range; unset: the tier's.
  std::optional<int32_t> prefill_num_iter;
  std::optional<int32_t> decode_num_iter;
  std::string model;  // empty: the served model

  static Request Text(std::string text, SamplingParams sampling = {});
  static Request Tokens(TokenIds ids, SamplingParams sampling = {});
};

// The chat helper: messages -> request.
Request ChatRequest(std::vector<ChatMessage> messages, SamplingParams sampling = {});

// ------------------------------------------------------------------------------------------
// Outputs

enum class FinishReason { kUnspecified = 0, kStop = 1, kLength = 2, kAbort = 3, kError = 4 };
// "stop", "length", "abort", "error", "unspecified".
absl::string_view FinishReasonName(FinishReason reason);

struct Usage {
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
};

// Milliseconds, measured by the router from its admission of the request.
struct Timings {
  double queue_ms = 0;
  double ttft_ms = 0;
  double prefill_ms = 0;
  double transfer_ms = 0;  // KV + GKA state, prefill -> decode
  double decode_ms = 0;
  double total_ms = 0;
  double admission_ms = 0;  // waiting in the router's admission queue (part of queue_ms)
  double router_ms = 0;     // the router's own work before the first token (part of ttft_ms)
};

struct ServedBy {
  std::string router_id;
  std::string prefill_worker_id;
  std::string decode_worker_id;
  // Decode workers the running sequence moved away from (a drain), in order.
  std::vector<std::string> migrated_from;
};

// GKA solver iterations actually used (after tier defaults and clamping).
struct NumIter {
  int32_t prefill = 0;
  int32_t decode = 0;
};

struct TopLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::string text;
};

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<TopLogprob> top;
};

// One streamed piece of output.
struct Chunk {
  TokenIds token_ids;  // usually one
  // Text delta; may be empty while an incomplete UTF-8 sequence or a possible stop-string
  // prefix is held back, and longer when held text is released.
  std::string text;
  Usage usage;                         // cumulative
  std::vector<TokenLogprob> logprobs;  // one per token id when asked for
};

// A finished request: every token and the whole text, plus the server's Final message.
struct Result {
  std::string request_id;
  TokenIds token_ids;
  std::string text;
  std::vector<TokenLogprob> logprobs;
  FinishReason finish_reason = FinishReason::kUnspecified;
  Usage usage;
  Timings timings;
  ServedBy served_by;
  std::string tier;
  NumIter num_iter;
  // The tier's degrade-ladder rung that served it (0: the tier as configured).
  int32_t degrade_rung = 0;
  std::string matched_stop;                      // the stop string that ended the output
  std::optional<int32_t> matched_stop_token_id;  // or the stop token id
  int attempts = 0;  // calls made (> 1 after retries before the first token)
};

struct TokenizeResult {
  TokenIds token_ids;
  std::string prompt_text;  // the rendered prompt for chat input
};

struct TierInfo {
  std::string name;
  NumIter num_iter;
  int32_t num_iter_min = 0;  // range allowed for per-request overrides, inclusive
  int32_t num_iter_max = 0;
  int32_t priority = 0;
  int32_t max_tokens = 0;  // cap on max_tokens; 0: none beyond the context
};

struct ModelInfo {
  std::string model;
  int32_t max_context_tokens = 0;
  int32_t vocab_size = 0;
  bool has_tokenizer = false;  // false: token-id input only
  std::vector<int32_t> eos_token_ids;
  std::string default_tier;
  std::vector<TierInfo> tiers;
};

// ------------------------------------------------------------------------------------------
// Errors

// What the SDK knows about a failed call, attached to every error Status it returns (as
// payloads; the Status's own code and message are the same code and message).
struct ErrorDetails {
  absl::StatusCode code = absl::StatusCode::kUnknown;
  std::string message;
  // The server sent a structured gka.serving.v1.Error (otherwise the error came from the
  // transport or the SDK: connection refused, deadline, cancellation, authentication).
  bool from_server = false;
  // The server's verdict when from_server, else the SDK's (UNAVAILABLE): sending the same
  // request again may succeed. The SDK already retried (see attempts) when it was allowed to.
  bool retryable = false;
  // The server's retry-after hint ("retry-after-ms" or "retry-after" trailing metadata).
  std::optional<absl::Duration> retry_after;
  int attempts = 0;  // calls made, retries included
};

// The details of an error Status returned by this SDK; nullopt for OK or foreign statuses.
std::optional<ErrorDetails> GetErrorDetails(const absl::Status& status);

}  // namespace gka::sdk
