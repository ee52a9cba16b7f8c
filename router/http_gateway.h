// The router's OpenAI-compatible HTTP API, so that clients written for vLLM or OpenAI work
// unchanged: a civetweb server beside the gRPC one, over the same RouterCore.
//
//   POST /v1/chat/completions   chat.completion, or chat.completion.chunk events with stream
//   POST /v1/completions        text_completion (prompt: a string, token ids, or a list)
//   GET  /v1/models, /v1/models/{id}   the served model
//   GET  /health                200 while at least one prefill and one decode worker are
//                               healthy and the router accepts requests, else 503; no key
//
// Fields: model, messages, prompt, max_tokens / max_completion_tokens, temperature, top_p,
// top_k, min_p, frequency_penalty, presence_penalty, repetition_penalty, seed, stop, n (1..8,
// run as n requests), logprobs / top_logprobs (<= 20; see openai_protocol.h for what the
// engine provides), tools / tool_choice (auto, none), stream / stream_options.include_usage,
// service_tier (auto and default: the default tier; else a tier name), user (ignored), and
// vLLM's ignore_eos, stop_token_ids, return_tokens_as_token_ids, include_reasoning and
// chat_template_kwargs.enable_thinking (on: <think>...</think> becomes reasoning_content).
// response_format other than text, logit_bias and forced tool_choice are a 400 naming the
// parameter.
// Errors are OpenAI's JSON ({"error": {"message", "type", "param", "code"}}) with 400, 401,
// 404, 405, 413, 429, 500 or 503. Streaming responses are server-sent events ending in
// "data: [DONE]"; the status line waits for the first token (or error), so a request refused
// by the workers still gets its HTTP status, and errors after that are an {"error": ...}
// event.
//
// A client that goes away aborts its request on the workers (its KV pages and state slot are
// freed): noticed when a write fails and, between writes, by watching the connection's socket
// for the peer's FIN, which also covers non-streaming requests.
//
// Owns: the civetweb context and its handler threads (one per connection being served); the
// requests in flight. Depends on RouterCore only; civetweb stays out of this header.
//
//   GKA_ASSIGN_OR_RETURN(std::unique_ptr<HttpGateway> http,
//                        HttpGateway::Create({.address = "127.0.0.1:8000"}, router->core()));
//   ... SIGTERM: http->StopAccepting(); router->Drain(grace); http.reset(); router.reset();
//
// Thread-safety: all methods are thread-safe. Destroy it before the RouterCore.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/auth.h"
#include "router/openai_protocol.h"

namespace gka::router {

class RouterCore;

struct HttpGatewayOptions {
  // host:port to listen on; port 0 picks a free one.
  std::string address = "127.0.0.1:0";
  // Required as "Authorization: Bearer KEY" on /v1/* when set (/health is exempt), the
  // same key as the gRPC API.
  std::string api_key;
  // Further accepted keys, stored hashed (the router's --api-keys-file).
  rpc::ApiKeys api_keys;
  // Larger bodies get 413. Token-id prompts of the longest contexts fit well inside.
  size_t max_body_bytes = 8 << 20;
  // Connections served at once (civetweb runs one thread per connection, including idle
  // keep-alive ones); more wait in the accept queue.
  int num_threads = 128;
  // How often an idle request checks whether its client hung up.
  absl::Duration disconnect_poll = absl::Milliseconds(100);
  openai::ParseLimits limits;
};

class HttpGateway {
 public:
  // UNAVAILABLE when the address cannot be bound; INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Create(const HttpGatewayOptions& options,
                                                             RouterCore& core);
  // Shutdown().
  ~HttpGateway();
  HttpGateway(const HttpGateway&) = delete;
  HttpGateway& operator=(const HttpGateway&) = delete;

  // "host:port" actually bound.
  const std::string& address() const;

  // Drain: /health turns 503 and new completions get 503; running ones continue.
  void StopAccepting();
  // Cancels what is still running (clients see the stream end) and stops the server once
  // every handler has returned. Idempotent.
  void Shutdown();

  class Impl;

 private:
  explicit HttpGateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gka::router
