// Value types of the scheduler's interface: what a request asks for, the states a sequence
// moves through, and how it ends.
//
// Owns: plain structs and enums only; no behaviour beyond naming. Must not depend on the
// engine, CUDA, gRPC or protobuf (the workers translate their protobuf requests into Request).
//
//   scheduler::Request r{.id = SequenceId(7), .priority = 10, .prompt = {1, 2, 3},
//                        .max_new_tokens = 64, .prefill_num_iter = 30, .decode_num_iter = 10};
//   GKA_RETURN_IF_ERROR(sched->Add(r));
//
// Sequence states (one sequence, in the scheduler that tracks it):
//
//   kWaiting ──admit──► kPrefilling ──last chunk──► kDecoding ──stop──► kFinished
//                          │  ▲                        │  ▲
//                   preempt│  │resume           preempt│  │resume
//                          ▼  │                        ▼  │
//                        kPreempted (state on host) ───┘
//
// Prefill is chunked, so kPrefilling may last several steps. A preempted sequence resumes into
// the phase it left. Any state may end in kFinished through Abort. A finished sequence leaves
// the scheduler at once; its FinishedSequence record is the kFinished state.
//
// Thread-safety: value types; no shared state.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/base/ids.h"

namespace gka::scheduler {

using base::SequenceId;

// A generation request as the scheduler sees it: token ids and limits, no text. Sampling
// parameters are not here on purpose: the worker keeps them in its own map by `id` and applies
// them when it samples the logits of a BatchItem with `needs_logits`.
struct Request {
  SequenceId id;                        // unique among the scheduler's live sequences; ≥ 0
  int32_t priority = 0;                 // higher = more important (tiers map onto this)
  std::vector<int32_t> prompt;          // ≥ 1 token id, each ≥ 0
  int32_t max_new_tokens = 16;          // ≥ 1; prompt + max_new_tokens ≤ max_model_len
  std::vector<int32_t> stop_token_ids;  // end the sequence when sampled (kept in `generated`)
  bool ignore_eos = false;              // ignore SchedulerOptions::eos_token_ids (not stop ids)
  int32_t prefill_num_iter = -1;        // GKA iterations for prompt chunks; -1 = engine default
  int32_t decode_num_iter = -1;         // GKA iterations for decode steps; -1 = engine default
};

enum class SequenceState {
  kWaiting,     // queued; holds no memory
  kPrefilling,  // resident (slot + pages); prompt partly fed
  kDecoding,    // resident; prompt fed, one token fed per step
  kPreempted,   // swapped out: the worker holds its exported state on host
  kFinished,    // done; reported once as a FinishedSequence, then forgotten
};

enum class FinishReason {
  kStopToken,    // sampled a stop id or an EOS id (unless ignore_eos)
  kMaxTokens,    // generated max_new_tokens
  kAborted,      // Abort(): client cancellation, lease expiry, ...
  kError,        // the worker could not run or sample the sequence
  kPrefillDone,  // prefill-only mode: prompt fed and first token sampled; hand the state off
};

// Where a finished sequence's memory is, i.e. what the worker must release.
enum class Residence {
  kNone,    // never admitted (or only queued): nothing to free
  kDevice,  // engine pages + slot: RemoveSequence (after a hand-off for kPrefillDone)
  kHost,    // preempted: drop the exported host copy
};

struct FinishedSequence {
  SequenceId id;
  FinishReason reason;
  Residence residence;
  std::vector<int32_t> generated;  // every sampled token, a final stop/EOS token included
};

// A read-only view of one live sequence (Scheduler::Get).
struct SequenceInfo {
  SequenceId id;
  SequenceState state;
  int32_t priority;
  uint64_t arrival;  // order of Add/AddPrefilled; lower = earlier
  int32_t prompt_len;
  int64_t num_computed;  // tokens the engine has consumed (its sequence length)
  int32_t pages_held;    // PagesFor(num_computed) while resident, else 0
  int32_t prefill_num_iter;
  int32_t decode_num_iter;
  int32_t max_new_tokens;
  absl::Span<const int32_t> generated;  // valid until the next non-const Scheduler call
};

absl::string_view SequenceStateName(SequenceState state);
absl::string_view FinishReasonName(FinishReason reason);
absl::string_view ResidenceName(Residence residence);

}  // namespace gka::scheduler
