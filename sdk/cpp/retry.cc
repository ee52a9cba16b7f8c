#include "sdk/cpp/retry.h"

#include <grpcpp/client_context.h>

#include <algorithm>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/rpc/status.h"

namespace gka::sdk::internal {
namespace {

// Trailing metadata keys a server may set on RESOURCE_EXHAUSTED / UNAVAILABLE.
constexpr absl::string_view kRetryAfterMs = "retry-after-ms";  // integer milliseconds
constexpr absl::string_view kRetryAfter = "retry-after";       // seconds, may be fractional

std::optional<absl::Duration> RetryAfterHint(const grpc::ClientContext& ctx) {
  const auto& trailers = ctx.GetServerTrailingMetadata();
  for (const auto& [key, value] : trailers) {
    const absl::string_view k(key.data(), key.size());
    const std::string v(value.data(), value.size());
    double number = 0;
    if (!absl::SimpleAtod(v, &number) || number < 0) continue;
    if (k == kRetryAfterMs) return absl::Milliseconds(number);
    if (k == kRetryAfter) return absl::Seconds(number);
  }
  return std::nullopt;
}

}  // namespace

absl::Status ValidateRetryPolicy(const RetryPolicy& p) {
  if (p.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("retry.max_attempts: ", p.max_attempts, " is below 1"));
  }
  if (p.initial_backoff < absl::ZeroDuration() || p.max_backoff < p.initial_backoff) {
    return absl::InvalidArgumentError("retry: need 0 <= initial_backoff <= max_backoff");
  }
  if (p.backoff_multiplier < 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("retry.backoff_multiplier: ", p.backoff_multiplier, " is below 1"));
  }
  if (p.jitter < 0.0 || p.jitter > 1.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("retry.jitter: ", p.jitter, " is outside [0, 1]"));
  }
  return absl::OkStatus();
}

bool MayRetry(const ErrorDetails& d) {
  switch (d.code) {
    case absl::StatusCode::kUnavailable:
      return !d.from_server || d.retryable;
    case absl::StatusCode::kResourceExhausted:
      return (d.from_server && d.retryable) || d.retry_after.has_value();
    default:
      return false;
  }
}

ErrorDetails DetailsOf(const grpc::Status& status, const serving::v1::Error* server_error,
                       const grpc::ClientContext& ctx) {
  ErrorDetails d;
  if (server_error != nullptr && server_error->code() != 0) {
    const absl::Status s = rpc::FromGrpcStatus(
        grpc::Status(static_cast<grpc::StatusCode>(server_error->code()), server_error->message()));
    d.code = s.code();
    d.message = std::string(s.message());
    d.from_server = true;
    d.retryable = server_error->retryable();
  } else {
    // A stream that ended OK without a Final or an Error is the server's bug, not ours.
    const absl::Status s =
        status.ok() ? absl::InternalError("the stream ended without a Final or Error message")
                    : rpc::FromGrpcStatus(status);
    d.code = s.code();
    d.message = std::string(s.message());
    d.retryable = d.code == absl::StatusCode::kUnavailable;
  }
  d.retry_after = RetryAfterHint(ctx);
  // The same hint in the Error message, for paths that drop trailers (some proxies).
  if (!d.retry_after.has_value() && server_error != nullptr && server_error->retry_after_ms() > 0) {
    d.retry_after = absl::Milliseconds(server_error->retry_after_ms());
  }
  return d;
}

Retrier::Retrier(const RetryPolicy& policy, absl::Time deadline)
    : policy_(policy), deadline_(deadline), backoff_(policy.initial_backoff) {}

std::optional<absl::Duration> Retrier::NextWait(ErrorDetails* d, bool delivered, absl::Time now) {
  d->attempts = attempts_;
  if (!MayRetry(*d)) return std::nullopt;
  auto give_up = [&](absl::string_view why) -> std::optional<absl::Duration> {
    absl::StrAppend(&d->message, " (not retried: ", why, ")");
    return std::nullopt;
  };
  if (delivered) return give_up("tokens were already delivered");
  if (attempts_ >= policy_.max_attempts) {
    return give_up(absl::StrCat("gave up after ", attempts_, " attempts"));
  }
  if (d->retry_after && *d->retry_after > policy_.max_retry_after) {
    return give_up(absl::StrCat("retry-after ", absl::FormatDuration(*d->retry_after),
                                " exceeds the policy's max_retry_after"));
  }
  const double factor =
      policy_.jitter > 0 ? absl::Uniform(rng_, 1.0 - policy_.jitter, 1.0 + policy_.jitter) : 1.0;
  absl::Duration wait = backoff_ * factor;
  backoff_ = std::min(backoff_ * policy_.backoff_multiplier, policy_.max_backoff);
  if (d->retry_after) wait = std::max(wait, *d->retry_after);
  if (now + wait >= deadline_) return give_up("the deadline would pass during the backoff");
  return wait;
}

}  // namespace gka::sdk::internal
