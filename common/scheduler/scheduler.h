// Per-worker step scheduler: continuous batching of decode steps and chunked prefill under a
// token budget, admission against KV pages and GKA state slots, priority preemption by swap,
// and stop conditions. The same class serves the decode worker and, with `prefill_only`, the
// prefill worker (a prompt queue batched under the budget; sequences end after their first
// sampled token so the worker can hand their state off).
//
// Owns: the live sequences' bookkeeping (ids, token ids, lengths, states, per-sequence
// num_iter). It holds ids and counts, never pointers into engine memory. Must not depend on the
// engine implementation, CUDA, gRPC, protobuf, UCX or kernels; it reads memory through
// MemoryModel.
//
// One engine step:
//
//   StepPlan plan = sched->Schedule();
//   for (SequenceId id : plan.preempt) host[id] = engine.ExportSequence(id), RemoveSequence(id);
//   for (SequenceId id : plan.resume) engine.ImportSequence(id, host[id]), host.erase(id);
//   for (SequenceId id : plan.admit) engine.AddSequence(id);
//   if (!plan.batch.empty()) {
//     StepResult r = engine.Forward(<plan.batch as SequenceInput, in order>);
//     sample the logits row of every item with needs_logits (its sampling params by id);
//     GKA_ASSIGN_OR_RETURN(auto finished, sched->OnStepComplete(outputs));
//     for (const FinishedSequence& f : finished) release f.residence, report f.reason;
//   }
//
// Memory contract: once Schedule() returns, the scheduler assumes the plan has been carried
// out in the order preempt → resume → admit → Forward. Executed in that order the plan never
// needs more than MemoryModel reported free at the start of Schedule() (plus what its own
// preemptions free): Σ slots(resume, admit) ≤ free_slots + |preempt| and
// Σ pages(resume) + Σ new pages(batch) ≤ free_pages + Σ pages(preempt), with
// pages(s) = PagesFor(length of s). Memory of finished or aborted sequences must be released
// before the next Schedule() so that MemoryModel sees it free.
//
// Preemption: a sequence that needs memory (a decode step's next page, a prefill chunk, a
// resume, an admission) may preempt resident sequences ranked strictly below it, lowest first
// (rank: higher priority first, then earlier arrival). A decode sequence that cannot get its
// page even so steps aside: it preempts itself. Hence the highest-ranked sequence is never
// preempted while a lower one keeps pages; since only a higher rank (or the sequence itself)
// preempts, two sequences never swap each other back and forth; and after a sequence is
// preempted or blocked in a step, nothing ranked below it takes memory in that step, so it is
// not overtaken. Progress (no deadlock, no starvation of the best sequence) needs only that one
// sequence of max_model_len tokens fits in the worker's memory: the best sequence can always
// reclaim everything the scheduler holds.
//
// Thread-safety: not thread-safe. Owned by the worker's engine thread; gRPC handlers hand
// requests and aborts to that thread through a queue.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/scheduler/memory_model.h"
#include "common/scheduler/sequence.h"

namespace gka::scheduler {

struct SchedulerOptions {
  int32_t max_batch_tokens = 2048;     // tokens fed per step (decode tokens + prefill chunks)
  int32_t max_running_seqs = 64;       // resident sequences the scheduler brings in; ≤ budget
  int32_t prefill_chunk_size = 512;    // most prompt tokens of one sequence per step
  int32_t max_model_len = 8192;        // prompt + max_new_tokens limit per request
  bool decode_first = true;            // decode steps take budget and memory before prefill
  bool prefill_only = false;           // end sequences after the first token (kPrefillDone)
  std::vector<int32_t> eos_token_ids;  // the model's EOS ids (Request::ignore_eos skips them)
};

// One sequence's share of a Forward.
struct BatchItem {
  SequenceId id;
  absl::Span<const int32_t> tokens;  // to feed; valid until OnStepComplete, CancelStep or
                                     // Abort of this sequence
  int64_t position = 0;              // the sequence's length before these tokens
  int32_t num_iter = -1;             // GKA iterations for these tokens; -1 = engine default
  bool prefill = false;              // a prompt chunk (else one decode token)
  bool needs_logits = false;         // sample after it: the last prompt chunk or a decode step
};

struct StepPlan {
  std::vector<SequenceId> preempt;  // export state to host, then free its pages and slot
  std::vector<SequenceId> resume;   // import the host state (slot + PagesFor(length) pages)
  std::vector<SequenceId> admit;    // take a zeroed slot (pages come with Forward)
  std::vector<BatchItem> batch;     // Forward inputs, in this order

  bool empty() const { return preempt.empty() && resume.empty() && admit.empty() && batch.empty(); }
};

// What sampling produced for one batch item. Items without needs_logits may be omitted.
struct StepOutput {
  SequenceId id;
  std::optional<int32_t> token;  // required for needs_logits items; none there = kError
};

class Scheduler {
 public:
  // InvalidArgument naming the option when an option or memory.page_size() is out of range.
  // `memory` is not owned and must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& options,
                                                           const MemoryModel* memory);

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request (kWaiting). InvalidArgument naming the field (id, prompt, max_new_tokens,
  // prefill_num_iter, decode_num_iter); AlreadyExists for a live id.
  absl::Status Add(const Request& request);

  // Decode worker: a sequence whose prompt was prefilled elsewhere and whose state has already
  // been written into this worker's memory (PagesFor(prompt length) pages + one slot) enters
  // kDecoding with `first_token` generated. Returns the finish reason when that first token
  // already ends it (the scheduler then forgets it; its memory is kDevice). Validation as Add;
  // FailedPrecondition in prefill-only mode. Memory reserved for hand-offs is the caller's to
  // count against max_running_seqs; this call never fails for capacity.
  absl::StatusOr<std::optional<FinishReason>> AddPrefilled(const Request& request,
                                                           int32_t first_token);

  // Plans the next step and commits its state changes (see the memory contract above).
  // GKA_CHECK-fails while a previous step's batch is still awaiting OnStepComplete/CancelStep.
  StepPlan Schedule();

  // Applies the sampled tokens of the step planned last: advances lengths, appends tokens,
  // checks stop conditions. Returns the sequences that finished (they leave the scheduler).
  // FailedPrecondition without a step in flight; InvalidArgument (nothing changed) for an id
  // outside the step, a duplicate id, a negative token or a token for an item without
  // needs_logits. Outputs of sequences aborted during the step are ignored.
  absl::StatusOr<std::vector<FinishedSequence>> OnStepComplete(
      absl::Span<const StepOutput> outputs);

  // The step's Forward did not run (the engine reports failure before changing state): forget
  // the batch without advancing anything. Preemptions, resumes and admissions stand.
  void CancelStep();

  // Ends a live sequence in any state. `reason` is kAborted or kError (else InvalidArgument);
  // NotFound for an id that is not live.
  absl::StatusOr<FinishedSequence> Abort(SequenceId id,
                                         FinishReason reason = FinishReason::kAborted);

  // Degrade policy hook: the decode num_iter of later steps. InvalidArgument below -1.
  absl::Status SetDecodeNumIter(SequenceId id, int32_t num_iter);

  // NotFound for an id that is not live.
  absl::StatusOr<SequenceInfo> Get(SequenceId id) const;

  // Load reporting.
  int32_t num_sequences() const { return static_cast<int32_t>(sequences_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_resident() const { return static_cast<int32_t>(resident_.size()); }
  int32_t num_preempted() const { return static_cast<int32_t>(preempted_.size()); }
  // Prompt tokens not yet fed, over every live sequence (the prefill router's
  // least-queued-tokens signal).
  int64_t queued_prompt_tokens() const;
  // Σ PagesFor(length) over resident sequences: what they hold in the engine.
  int64_t pages_held() const;
  bool step_in_flight() const { return in_flight_; }
  const SchedulerOptions& options() const { return options_; }

 private:
  // Orders sequences best first: higher priority, then earlier arrival.
  struct RankKey {
    int32_t priority;
    uint64_t arrival;
    SequenceId id;
    bool operator<(const RankKey& o) const {
      if (priority != o.priority) return priority > o.priority;
      return arrival < o.arrival;
    }
  };
  struct Sequence {
    Request request;
    std::vector<int32_t> tokens;  // prompt, then generated ids
    uint64_t arrival = 0;
    int64_t num_computed = 0;
    SequenceState state = SequenceState::kWaiting;
    RankKey key() const { return {request.priority, arrival, request.id}; }
    int32_t prompt_len() const { return static_cast<int32_t>(request.prompt.size()); }
    int32_t num_generated() const { return static_cast<int32_t>(tokens.size()) - prompt_len(); }
  };
  class Planner;

  Scheduler(const SchedulerOptions& options, const MemoryModel* memory);
  absl::Status Validate(const Request& request) const;
  Sequence& Insert(const Request& request);
  std::set<RankKey>* SetOf(SequenceState state);
  void MoveTo(Sequence& seq, SequenceState state);
  std::optional<FinishReason> StopReason(const Sequence& seq, int32_t token) const;
  FinishedSequence Finish(Sequence& seq, FinishReason reason);

  SchedulerOptions options_;
  const MemoryModel* memory_;
  int32_t page_size_;
  uint64_t next_arrival_ = 0;
  absl::flat_hash_map<SequenceId, Sequence> sequences_;
  // Live sequences by state, best ranked first. Prefilling and decoding ones are resident_.
  std::set<RankKey> waiting_;
  std::set<RankKey> resident_;
  std::set<RankKey> preempted_;
  // The batch of the step in flight. A sequence aborted meanwhile is gone from sequences_ (or
  // its id was reused: the arrival differs) and is skipped.
  struct InFlightItem {
    SequenceId id;
    uint64_t arrival;
    int32_t num_tokens;
    bool needs_logits;
  };
  bool in_flight_ = false;
  std::vector<InFlightItem> in_flight_batch_;
};

}  // namespace gka::scheduler
