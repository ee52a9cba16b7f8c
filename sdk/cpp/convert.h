// Conversions between the SDK's plain types (gka/sdk/types.h) and gka.serving.v1 messages,
// and the SDK's error Status (code, message, ErrorDetails payload).
//
// Owns nothing. Internal to the SDK (not installed): the public headers never name protobuf.
//
//   gka::serving::v1::GenerateRequest wire = internal::ToProto(request);
//   internal::AppendChunk(response.chunk(), &result);    // returns the Chunk for the caller
//   return internal::MakeError(details);                 // absl::Status with the payload
//
// Thread-safety: free functions over values.
#pragma once

#include "absl/status/status.h"
#include "gka/sdk/types.h"
#include "gka/serving/v1/serving.pb.h"

namespace gka::sdk::internal {

namespace pb = ::gka::serving::v1;

pb::GenerateRequest ToProto(const Request& request);
pb::ChatMessages ToProto(const Chat& chat);

// Converts `chunk` and appends its tokens, text and logprobs to `result`.
Chunk AppendChunk(const pb::Chunk& chunk, Result* result);
// Copies the Final message's fields into `result`.
void ApplyFinal(const pb::Final& final_message, Result* result);

TokenizeResult FromProto(const pb::TokenizeResponse& response);
ModelInfo FromProto(const pb::GetModelInfoResponse& response);

// An error Status with `details` attached (GetErrorDetails reads it back). `details.code`
// must not be OK.
absl::Status MakeError(const ErrorDetails& details);

}  // namespace gka::sdk::internal
