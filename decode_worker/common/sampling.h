// Sampling parameters off the wire: gka.worker.v1.WorkerSamplingParams -> the engine's
// kernels::SamplingConfig, validated.
//
// Owns nothing. Both workers sample with the same conversion (the prefill worker the first
// token, the decode worker the rest), so a seeded request samples as the offline engine does.
//
//   GKA_ASSIGN_OR_RETURN(kernels::SamplingConfig config, SamplingFromProto(request.sampling()));
//
// Thread-safety: a pure function.
#pragma once

#include "absl/status/statusor.h"
#include "gka/worker/v1/worker.pb.h"
#include "kernels/api/sampling.h"

namespace gka::worker_common {

namespace wpb = ::gka::worker::v1;

// INVALID_ARGUMENT naming the field: temperature < 0 or not finite, top_k < 0, top_p outside
// [0, 1], min_p outside [0, 1], repetition_penalty < 0, non-finite penalties, top_logprobs
// outside [0, kernels::kMaxTopLogprobs]. proto3 cannot
// tell an unset float from 0, so top_p = 0 and repetition_penalty = 0 mean "off" (1).
absl::StatusOr<kernels::SamplingConfig> SamplingFromProto(const wpb::WorkerSamplingParams& p);

}  // namespace gka::worker_common
