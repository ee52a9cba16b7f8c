// The SDK's retry rule and backoff, shared by streaming and unary calls.
//
// Owns: one call's attempt count and its jitter generator. Internal to the SDK.
//
//   Retrier retrier(policy, deadline);
//   for (;;) {
//     retrier.BeginAttempt();
//     ... call; on failure build `details` ...
//     std::optional<absl::Duration> wait = retrier.NextWait(details, delivered, absl::Now());
//     if (!wait) return MakeError(details);        // details.attempts is filled in
//     absl::SleepFor(*wait);
//   }
//
// Thread-safety: none; one Retrier per call, used under the call's own serialization.
#pragma once

#include <grpcpp/support/status.h>

#include <optional>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gka/sdk/client.h"
#include "gka/serving/v1/serving.pb.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace gka::sdk::internal {

// INVALID_ARGUMENT naming the field when `policy` cannot work.
absl::Status ValidateRetryPolicy(const RetryPolicy& policy);

// The codes the SDK may retry and when (see client.h): UNAVAILABLE unless the server said
// retryable = false; RESOURCE_EXHAUSTED when the server said retryable or gave a hint.
bool MayRetry(const ErrorDetails& details);

// ErrorDetails of a failed call: the server's structured Error when it sent one, else the
// gRPC status; the retry-after hint from the trailing metadata of `ctx` (which must have
// finished).
ErrorDetails DetailsOf(const grpc::Status& status, const serving::v1::Error* server_error,
                       const grpc::ClientContext& ctx);

class Retrier {
 public:
  Retrier(const RetryPolicy& policy, absl::Time deadline);

  // Counts an attempt; returns its number (1 for the first).
  int BeginAttempt() { return ++attempts_; }
  int attempts() const { return attempts_; }

  // How long to wait before the next attempt, or nullopt to give up: not retryable, a token
  // was `delivered`, attempts used up, a hint above max_retry_after, or the wait would end
  // past the deadline. Sets details->attempts and, when giving up on a retryable error,
  // says why in details->message.
  std::optional<absl::Duration> NextWait(ErrorDetails* details, bool delivered, absl::Time now);

 private:
  const RetryPolicy policy_;
  const absl::Time deadline_;
  int attempts_ = 0;
  absl::Duration backoff_;
  absl::BitGen rng_;
};

}  // namespace gka::sdk::internal
