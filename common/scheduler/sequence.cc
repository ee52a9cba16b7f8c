#include "common/scheduler/sequence.h"

namespace gka::scheduler {

absl::string_view SequenceStateName(SequenceState state) {
  switch (state) {
    case SequenceState::kWaiting:
      return "waiting";
    case SequenceState::kPrefilling:
      return "prefilling";
    case SequenceState::kDecoding:
      return "decoding";
    case SequenceState::kPreempted:
      return "preempted";
    case SequenceState::kFinished:
      return "finished";
  }
  return "unknown";
}

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken:
      return "stop";
    case FinishReason::kMaxTokens:
      return "length";
    case FinishReason::kAborted:
      return "aborted";
    case FinishReason::kError:
      return "error";
    case FinishReason::kPrefillDone:
      return "prefill_done";
  }
  return "unknown";
}

absl::string_view ResidenceName(Residence residence) {
  switch (residence) {
    case Residence::kNone:
      return "none";
    case Residence::kDevice:
      return "device";
    case Residence::kHost:
      return "host";
  }
  return "unknown";
}

}  // namespace gka::scheduler
