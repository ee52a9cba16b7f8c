// gkaserve C++ SDK: a client of a gkaserve cluster's public API (gka.serving.v1, served by
// the router).
//
// Owns: one gRPC channel to the router (plaintext or TLS, with an optional API key sent as
// "authorization: Bearer <key>") and the calls made on it. Calls keep what they need alive,
// so a Stream or CallHandle may outlive its Client. Depends on Abseil; gRPC and protobuf stay
// inside the library (this header and types.h include neither).
//
//   #include "gka/sdk/client.h"
//   auto client = gka::sdk::Client::Create({.address = "127.0.0.1:50051"});
//   if (!client.ok()) return client.status();
//   absl::StatusOr<gka::sdk::Result> r = (*client)->Chat({gka::sdk::ChatMessage::User("Hi")});
//   if (r.ok()) std::cout << r->text << "\n";
//
//   // Streaming, pull style:
//   std::unique_ptr<gka::sdk::Stream> stream = (*client)->GenerateStream(request);
//   gka::sdk::Chunk chunk;
//   while (stream->Next(&chunk)) std::cout << chunk.text << std::flush;
//   absl::StatusOr<gka::sdk::Result> result = stream->Finish();
//
//   // Streaming, callback style (callbacks run on a gRPC thread; keep them short):
//   auto call = (*client)->GenerateStream(request, {
//       .on_chunk = [](const gka::sdk::Chunk& c) { std::cout << c.text; },
//       .on_done = [](absl::StatusOr<gka::sdk::Result> r) { ... }});
//   call->Cancel();   // from any thread; the router then aborts the request on its workers
//
// Semantics shared by every call:
// - Deadline: CallOptions::timeout, else ClientOptions::default_timeout, bounds the whole
//   call, retries and their backoff included (DEADLINE_EXCEEDED when it passes).
// - Retries: a call is sent again, after exponential backoff with jitter, when it failed with
//   UNAVAILABLE (unless the server said retryable = false), or RESOURCE_EXHAUSTED that the
//   server marked retryable or gave a retry-after hint for (the wait is then at least the
//   hint) — and ONLY while no token has been delivered: after the first Chunk an error ends
//   the call. Everything else (INVALID_ARGUMENT, UNAUTHENTICATED, DEADLINE_EXCEEDED, ...)
//   fails at once.
// - Errors: absl::Status with the server's code and message; GetErrorDetails(status) gives
//   the structured error (retryable flag, retry-after, attempts).
// - Cancellation: Stream::Cancel / CallHandle::Cancel cancel the gRPC call (the router aborts
//   the request on every worker) and end it with CANCELLED; Client::Abort(request_id) asks
//   the router to end a request by id (the stream then ends with finish_reason kAbort).
//
// Thread-safety: Client is thread-safe; share one for many concurrent calls. Stream::Next
// and Finish are for one consumer thread; Cancel may be called from any thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gka/sdk/types.h"

namespace gka::sdk {

// The SDK's version, "MAJOR.MINOR.PATCH".
absl::string_view Version();

struct RetryPolicy {
  // Calls made at most, the first included; 1 disables retries.
  int max_attempts = 4;
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  double backoff_multiplier = 2.0;
  // Each wait is scaled by a random factor in [1 - jitter, 1 + jitter].
  double jitter = 0.2;
  // A server retry-after hint longer than this is not waited for (the error is returned).
  absl::Duration max_retry_after = absl::Seconds(30);
};

struct ClientOptions {
  // The router's gRPC address, "host:port" (any gRPC target such as "dns:///host:port").
  std::string address = "127.0.0.1:50051";
  // Sent as "authorization: Bearer <api_key>" on every call. Unset: the environment's
  // GKA_API_KEY (the variable the router reads too), if any; empty: no key.
  std::optional<std::string> api_key;
  // TLS to the router (its public port runs TLS with --public-tls). Unset (false) with the
  // environment's GKA_TLS_CA set: TLS with the PEM files GKA_TLS_CA, and GKA_TLS_CERT +
  // GKA_TLS_KEY when set (the `gka` tool's --tls-* flags read the same variables).
  bool tls = false;
  // PEM root certificates to verify the server with; empty uses the system's roots.
  std::string tls_root_certs_pem;
  // PEM client certificate chain and its private key, for a router that requires client
  // certificates (mutual TLS; both or neither).
  std::string tls_cert_chain_pem;
  std::string tls_private_key_pem;
  // Bounds each call when CallOptions::timeout is unset; absl::InfiniteDuration() for none.
  absl::Duration default_timeout = absl::Minutes(5);
  RetryPolicy retry;
  // Give requests without a request_id a unique client-made one, so that Abort and logs can
  // name them from the start.
  bool assign_request_ids = true;
  int max_message_bytes = 64 << 20;
};

struct CallOptions {
  std::optional<absl::Duration> timeout;  // unset: ClientOptions::default_timeout
  std::optional<RetryPolicy> retry;       // unset: ClientOptions::retry
};

// Pull-style stream of one Generate call. Destroying it before the end cancels the call.
class Stream {
 public:
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Blocks for the next chunk; false once the call has ended (then call Finish).
  bool Next(Chunk* chunk);
  // Blocks until the call ends (chunks not taken by Next are still part of the result) and
  // returns the whole result, or the call's error. Call once.
  absl::StatusOr<Result> Finish();
  // Cancels the call (any thread). Next then returns false and Finish CANCELLED, unless
  // the server had already finished.
  void Cancel();
  // The request's id (the client-assigned one, or the router's once its first response came).
  std::string request_id() const;

  class Impl;
  explicit Stream(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

struct StreamCallbacks {
  // Every chunk, in order. Runs on a gRPC thread: do not block in it.
  std::function<void(const Chunk&)> on_chunk;
  // Exactly once, last: the result or the error. Runs on a gRPC thread.
  std::function<void(absl::StatusOr<Result>)> on_done;
};

// A callback-style call. Destroying it cancels the call if it is still running and waits
// until on_done has returned (except from inside a callback, where it only cancels), so
// the callbacks never run after the handle is gone.
class CallHandle {
 public:
  ~CallHandle();
  CallHandle(const CallHandle&) = delete;
  CallHandle& operator=(const CallHandle&) = delete;

  void Cancel();
  // Blocks until on_done has returned. Not from inside a callback.
  void Wait();
  // Like Wait, bounded; true when done.
  bool WaitFor(absl::Duration timeout);
  std::string request_id() const;

  class Impl;
  explicit CallHandle(std::unique_ptr<Impl> impl);

 private:
  std::unique_ptr<Impl> impl_;
};

class Client {
 public:
  // INVALID_ARGUMENT for an empty address or a bad retry policy. Does not connect: a down
  // server surfaces on calls (as UNAVAILABLE, after the retries).
  static absl::StatusOr<std::unique_ptr<Client>> Create(const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Blocking generation: the whole result, or the error.
  absl::StatusOr<Result> Generate(const Request& request, const CallOptions& options = {});
  // Chat helper: Generate(ChatRequest(messages, sampling)).
  absl::StatusOr<Result> Chat(std::vector<ChatMessage> messages, SamplingParams sampling = {},
                              const CallOptions& options = {});

  // Streaming generation, pull style.
  std::unique_ptr<Stream> GenerateStream(const Request& request, const CallOptions& options = {});
  // Streaming generation, callback style.
  std::unique_ptr<CallHandle> GenerateStream(const Request& request, StreamCallbacks callbacks,
                                             const CallOptions& options = {});

  // Asks the router to end a running request; false when no running request has this id.
  absl::StatusOr<bool> Abort(absl::string_view request_id, const CallOptions& options = {});
  absl::StatusOr<TokenizeResult> Tokenize(absl::string_view text, const CallOptions& options = {});
  // Renders `chat` with the chat template (and the generation prompt), then tokenizes.
  absl::StatusOr<TokenizeResult> Tokenize(const gka::sdk::Chat& chat,
                                          const CallOptions& options = {});
  absl::StatusOr<ModelInfo> GetModelInfo(const CallOptions& options = {});

  // Connects now; DEADLINE_EXCEEDED when not connected within `timeout`.
  absl::Status WaitForReady(absl::Duration timeout);

  const ClientOptions& options() const;

  class Core;

 private:
  explicit Client(std::shared_ptr<Core> core);
  // Shared with every call in flight (calls may outlive the Client).
  std::shared_ptr<Core> core_;
};

}  // namespace gka::sdk
