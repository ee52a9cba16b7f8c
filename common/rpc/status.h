// absl::Status <-> grpc::Status, codes mapped 1:1.
//
// Owns nothing. Depends on Abseil and grpc::Status only (never on protobuf messages).
//
//   return gka::rpc::ToGrpcStatus(DoWork());                      // in a handler
//   absl::Status s = gka::rpc::FromGrpcStatus(stub->Call(&ctx, req, &resp));
//
// Both enums use the canonical google.rpc.Code numbering, so the mapping is the identity on
// codes; an out-of-range code from a peer becomes UNKNOWN with the number in the message.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gka::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// FromGrpcStatus with context for the caller's log or its own error: "Reserve on 10.0.0.3:
// <message>". Keeps the code, so a retry policy can still look at it.
absl::Status FromGrpcStatus(const grpc::Status& status, absl::string_view context);

// True for codes a caller may retry on another replica (UNAVAILABLE, RESOURCE_EXHAUSTED,
// ABORTED, DEADLINE_EXCEEDED is not: the caller's budget is spent).
bool IsRetryable(absl::StatusCode code);

}  // namespace gka::rpc
