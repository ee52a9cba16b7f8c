// Deadlines across gRPC hops, in absl::Time.
//
// Owns nothing. Depends on Abseil and grpc++ context types.
//
//   // In a handler that calls another service: inherit the caller's deadline (capped) and
//   // its cancellation, so a client that gives up stops the whole chain.
//   auto child = gka::rpc::ChildContext(*server_ctx, absl::Seconds(5));
//   stub->async()->Reserve(child.get(), &req, &resp, callback);
//
//   if (gka::rpc::TimeLeft(*server_ctx) < absl::Milliseconds(50)) return DeadlineExceeded...
//
// gRPC represents "no deadline" as the far future; these helpers map it to
// absl::InfiniteFuture() and back.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace grpc {
class ClientContext;
class ServerContextBase;
class CallbackServerContext;
}  // namespace grpc

namespace gka::rpc {

std::chrono::system_clock::time_point ToChrono(absl::Time t);
absl::Time FromChrono(std::chrono::system_clock::time_point t);

// Sets the call's deadline; absl::InfiniteFuture() leaves it unbounded.
void SetDeadline(grpc::ClientContext& ctx, absl::Time deadline);
void SetTimeout(grpc::ClientContext& ctx, absl::Duration timeout);

// The deadline the client set (absl::InfiniteFuture() when none).
absl::Time Deadline(const grpc::ServerContextBase& ctx);
// Time until that deadline (zero when passed, absl::InfiniteDuration() when none).
absl::Duration TimeLeft(const grpc::ServerContextBase& ctx, absl::Time now = absl::Now());

// DEADLINE_EXCEEDED naming `what` when less than `needed` is left of the caller's deadline.
absl::Status CheckTimeLeft(const grpc::ServerContextBase& ctx, absl::Duration needed,
                           absl::string_view what);

// A client context for a downstream call made while serving `parent`: deadline
// min(parent's, now + cap) and cancellation propagated (cancelling the parent call cancels
// the child). `cap` may be absl::InfiniteDuration().
std::unique_ptr<grpc::ClientContext> ChildContext(const grpc::CallbackServerContext& parent,
                                                  absl::Duration cap);

}  // namespace gka::rpc
