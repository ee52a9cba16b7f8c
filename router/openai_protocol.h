// The OpenAI-compatible HTTP API's wire format, without the transport: request bodies of
// /v1/chat/completions and /v1/completions -> gka.serving.v1 GenerateRequests, the core's
// GenerateResponses -> OpenAI response JSON and server-sent events, absl::Status -> OpenAI's
// error JSON and HTTP status, Qwen3's <think>...</think> output -> reasoning_content, and
// Qwen3's <tool_call>{json}</tool_call> output -> OpenAI tool_calls.
//
// Owns: the mapping of every OpenAI field the gateway accepts (docs in http_gateway.h), and
// the choice of what to refuse clearly (response_format json_object, logit_bias, forced
// tool_choice: 400 naming the parameter). Must not depend on HTTP, civetweb or gRPC
// transport; validation of values already covered by serving.proto (ranges, lengths,
// context) is left to the router core so there is one set of rules.
//
//   absl::StatusOr<openai::ParsedRequest> req = openai::ParseRequest(Endpoint::kChat, body);
//   if (!req.ok()) return Reply(openai::ErrorFromStatus(req.status()));
//   ... run req->prompts[p] n times through RouterCore, feeding each choice:
//   openai::ChoiceResult choice;  openai::Accumulate(response, &choice);
//   std::string json = openai::ResponseJson(*req, meta, choices);
//   // or, streaming: openai::StreamEncoder sse(*req, meta, choices); sse.OnResponse(i, r)...
//
// Logprobs: the engine reports the sampled token's log-probability and the top_logprobs most
// likely alternatives of the same distribution (after penalties and temperature, before
// top-k/top-p/min-p), most likely first. With vLLM's return_tokens_as_token_ids every token
// is spelled "token_id:<id>" (exact even where the tokens' text collides).
//
// Reasoning (chat, when the request turns Qwen3's thinking on with chat_template_kwargs
// {"enable_thinking": true}, and include_reasoning is not false): as vLLM's qwen3 reasoning
// parser, the text between <think> and </think> is message.reasoning_content (streaming:
// delta.reasoning_content) and the rest is content; tool calls are parsed from the content.
// The split is on text, so it holds when a tag spans tokens or chunks. A think block cut off
// by max_tokens is reasoning, streaming or not (vLLM keeps it as raw content when not
// streaming), and text before <think> (Qwen3 emits none) stays content (vLLM drops it).
//
// Thread-safety: free functions are pure. A StreamEncoder is one stream's state: not safe
// for concurrent use.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/text/tokenizer.h"
#include "gka/serving/v1/serving.pb.h"

namespace gka::router::openai {

enum class Endpoint { kChatCompletions, kCompletions };

// The body of an OpenAI error response and its HTTP status.
struct ApiError {
  int http_status = 400;
  // OpenAI's error types: invalid_request_error, authentication_error, rate_limit_error,
  // server_error, ...
  std::string type = "invalid_request_error";
  std::string message;
  // The offending request parameter; empty is JSON null.
  std::string param;
  // A machine-readable code (model_not_found, invalid_api_key, ...); empty is JSON null.
  std::string code;
};

// {"error": {"message", "type", "param", "code"}}. Never fails: bytes that are not UTF-8
// (an echoed bad input) are replaced.
std::string ErrorJson(const ApiError& error);

// The HTTP status and type for a Status from the parser or the router core. The param is
// the "field" of a "field: problem" message, named as the OpenAI request names it
// ("sampling.top_p" -> "top_p", "chat.messages[0].content" -> "messages[0].content", "tier"
// -> "service_tier"), and the message is rewritten the same way.
//   INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, ALREADY_EXISTS -> 400;
//   UNAUTHENTICATED -> 401; PERMISSION_DENIED -> 403; NOT_FOUND -> 404;
//   RESOURCE_EXHAUSTED -> 429; UNAVAILABLE, ABORTED -> 503 (retryable);
//   DEADLINE_EXCEEDED -> 504; everything else -> 500.
ApiError ErrorFromStatus(const absl::Status& status);

// Limits the parser enforces beyond serving.proto's.
struct ParseLimits {
  // Choices per request (`n`).
  int max_n = 8;
  // Prompts per /v1/completions request (a list of prompts); choices = prompts * n.
  int max_prompts = 8;
  int max_top_logprobs = 20;
  // Nesting of the request JSON: deeper documents are refused before they are parsed, so
  // that no recursive walk of a hostile body can exhaust a thread's stack.
  int max_json_depth = 64;
};

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kChatCompletions;
  // As sent; empty when the body names none.
  std::string model;
  bool stream = false;
  // stream_options.include_usage: a last chunk with empty choices and the usage.
  bool include_usage = false;
  // Choices per prompt.
  int n = 1;
  // Chat: logprobs == true; completions: logprobs is a number (0..20).
  bool logprobs = false;
  int top_logprobs = 0;
  // Chat with tools (and tool_choice not "none"): <tool_call> blocks become tool_calls.
  bool parse_tool_calls = false;
  // Chat with thinking on: <think>...</think> becomes reasoning_content (see the top).
  bool parse_reasoning = false;
  // include_reasoning (vLLM): false drops the reasoning instead of returning it.
  bool include_reasoning = true;
  // vLLM's return_tokens_as_token_ids: logprob tokens spelled "token_id:<id>".
  bool tokens_as_ids = false;
  // Completions: echo the prompt before the completion.
  bool echo = false;
  // One request per prompt (chat: exactly one), sampling and tier filled in; the gateway
  // runs each n times (RequestForChoice).
  std::vector<serving::v1::GenerateRequest> prompts;

  int num_choices() const { return static_cast<int>(prompts.size()) * n; }
};

// Parses and checks one request body. INVALID_ARGUMENT "param: problem" for malformed JSON
// (invalid UTF-8 included), wrong types, values outside what the API allows and features
// this server does not have; values serving.proto validates (temperature range, context
// length, ...) are checked when the core admits the request.
absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, absl::string_view body,
                                           const ParseLimits& limits = {});

// The GenerateRequest of choice `choice` (prompt choice / n): its request id is
// "<response id>-<choice>" (just the response id when there is one choice, so that the
// gRPC Abort finds it by the id the client saw), and with a seed, choice k samples with
// seed + k so that n seeded choices differ but are reproducible.
serving::v1::GenerateRequest RequestForChoice(const ParsedRequest& request,
                                              absl::string_view response_id, int choice);

// "chatcmpl-<24 hex>" / "cmpl-<24 hex>".
std::string NewResponseId(Endpoint endpoint);

// What one choice produced, gathered from its GenerateResponses.
struct ChoiceResult {
  std::string text;
  std::vector<serving::v1::TokenLogprob> logprobs;
  serving::v1::FinishReason finish_reason = serving::v1::FINISH_REASON_UNSPECIFIED;
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  std::string tier;
  // Set when the choice failed (an Error response).
  std::optional<absl::Status> error;
};

// Adds a Chunk, Final or Error to `choice`.
void Accumulate(const serving::v1::GenerateResponse& response, ChoiceResult* choice);

// What every response of one request shares.
struct ResponseMeta {
  std::string id;
  int64_t created = 0;  // Unix seconds
  std::string model;
  // Spells logprob tokens; may be null (tokens are then "" with their ids lost).
  const text::Tokenizer* tokenizer = nullptr;
};

// One Qwen3 tool call as OpenAI spells it.
struct ToolCallOut {
  std::string id;  // "call_<24 alphanumerics>"
  std::string name;
  // JSON text of the arguments object (what OpenAI's function.arguments holds).
  std::string arguments;
};

struct ParsedToolCalls {
  // Text before the first <tool_call>, whitespace-trimmed (all of it when nothing parsed).
  std::string content;
  std::vector<ToolCallOut> calls;
};

// Splits Qwen3 output into content and tool calls: each <tool_call>{"name": ..., "arguments":
// {...}}</tool_call> (the last may be unterminated). When any block is not such JSON the
// output is left as content with no calls, as vLLM's parser does.
ParsedToolCalls ParseToolCalls(absl::string_view text);

// The non-streaming response body (chat.completion or text_completion). `choices` are in
// choice order (prompt-major); all finished without error.
std::string ResponseJson(const ParsedRequest& request, const ResponseMeta& meta,
                         absl::Span<const ChoiceResult> choices);

// Splits Qwen3 output into reasoning and content at <think> / </think>, chunk by chunk:
// text that may be the start of a tag is held until the next chunk decides it.
class ReasoningStreamFilter {
 public:
  struct Parts {
    std::string reasoning;
    std::string content;
  };
  Parts Feed(absl::string_view delta);
  // End of output: what was held back (an unfinished think block is reasoning).
  Parts Finish();
  // Whether a <think> was seen (the response then has a reasoning_content).
  bool saw_think() const { return state_ != State::kBefore; }

 private:
  enum class State { kBefore, kThinking, kAfter };
  State state_ = State::kBefore;
  std::string held_;
};

// The whole output through a ReasoningStreamFilter. reasoning is empty (JSON null) when the
// output has no <think>.
struct SplitOutput {
  std::optional<std::string> reasoning;
  std::string content;
};
SplitOutput SplitReasoning(absl::string_view text);

// Holds back content once a tool call may have begun, so that a streaming client gets the
// calls whole as tool_calls rather than as text.
class ToolCallStreamFilter {
 public:
  // The part of `delta` that is content for sure. After a "<tool_call>" nothing more is.
  std::string Feed(absl::string_view delta);
  // End of output: the rest of the content, and the calls (none when the held text did not
  // parse, which then comes back as content).
  ParsedToolCalls Finish();

 private:
  std::string held_;
  bool in_calls_ = false;
};

// One streaming response's server-sent events: "data: {json}\n\n" per chunk, in OpenAI's
// chat.completion.chunk / text_completion shape, then "data: [DONE]\n\n".
class StreamEncoder {
 public:
  // `request` must outlive the encoder.
  StreamEncoder(const ParsedRequest& request, ResponseMeta meta);

  // Events for `choice`'s next Chunk or Final ("" when there is nothing to say yet, e.g. a
  // chunk whose text is held back). An Error response yields nothing: see Error().
  std::string OnResponse(int choice, const serving::v1::GenerateResponse& response);
  // An error after the stream began: {"error": ...} as its own event (the openai clients
  // raise it).
  static std::string Error(const ApiError& error);
  // The usage chunk (when include_usage) and [DONE].
  std::string Done();

 private:
  struct Choice {
    bool started = false;
    ReasoningStreamFilter reasoning;
    ToolCallStreamFilter tools;
    // Completions: bytes sent so far (text_offset of logprobs).
    size_t text_offset = 0;
    uint32_t prompt_tokens = 0;
    uint32_t completion_tokens = 0;
  };
  std::string Event(int choice, absl::string_view text, absl::string_view reasoning,
                    absl::Span<const serving::v1::TokenLogprob> logprobs, const char* finish_reason,
                    const std::vector<ToolCallOut>* calls);

  const ParsedRequest& request_;
  const ResponseMeta meta_;
  std::vector<Choice> choices_;
};

}  // namespace gka::router::openai
