#include "common/rpc/deadline.h"

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gka::rpc {
namespace {

// gRPC's "no deadline" is gpr_inf_future, which converts to (about) system_clock::max();
// anything this far out is treated as infinite.
constexpr absl::Duration kInfiniteThreshold = absl::Hours(24 * 365 * 100);

}  // namespace

std::chrono::system_clock::time_point ToChrono(absl::Time t) {
  if (t == absl::InfiniteFuture()) return std::chrono::system_clock::time_point::max();
  if (t == absl::InfinitePast()) return std::chrono::system_clock::time_point::min();
  return absl::ToChronoTime(t);
}

absl::Time FromChrono(std::chrono::system_clock::time_point t) {
  if (t >= std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  absl::Time at = absl::FromChrono(t);
  if (at - absl::Now() > kInfiniteThreshold) return absl::InfiniteFuture();
  return at;
}

void SetDeadline(grpc::ClientContext& ctx, absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return;
  ctx.set_deadline(ToChrono(deadline));
}

void SetTimeout(grpc::ClientContext& ctx, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  SetDeadline(ctx, absl::Now() + timeout);
}

absl::Time Deadline(const grpc::ServerContextBase& ctx) { return FromChrono(ctx.deadline()); }

absl::Duration TimeLeft(const grpc::ServerContextBase& ctx, absl::Time now) {
  const absl::Time deadline = Deadline(ctx);
  if (deadline == absl::InfiniteFuture()) return absl::InfiniteDuration();
  return std::max(deadline - now, absl::ZeroDuration());
}

absl::Status CheckTimeLeft(const grpc::ServerContextBase& ctx, absl::Duration needed,
                           absl::string_view what) {
  const absl::Duration left = TimeLeft(ctx);
  if (left >= needed) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(what, ": the call's deadline leaves ",
                                                  absl::FormatDuration(left), ", need at least ",
                                                  absl::FormatDuration(needed)));
}

std::unique_ptr<grpc::ClientContext> ChildContext(const grpc::CallbackServerContext& parent,
                                                  absl::Duration cap) {
  // FromCallbackServerContext propagates the deadline and cancellation; the cap may only
  // shorten it (gRPC keeps the earlier of the two).
  std::unique_ptr<grpc::ClientContext> child = grpc::ClientContext::FromCallbackServerContext(
      parent, grpc::PropagationOptions().enable_deadline_propagation());
  if (cap != absl::InfiniteDuration()) {
    const absl::Time capped = std::min(Deadline(parent), absl::Now() + cap);
    child->set_deadline(ToChrono(capped));
  }
  return child;
}

}  // namespace gka::rpc
