// StepRunner: carries out a Scheduler's StepPlans on a worker's tensor-parallel ranks — the
// recipe at the top of common/scheduler/scheduler.h (preempt by export to host, resume by
// import, admit, one varlen Forward, per-sequence sampling, OnStepComplete) — for both
// workers. Every rank does the same to its own engine in lockstep; rank 0 samples.
//
// Owns the host copies of preempted sequences (one per rank). Borrows the ranks and the
// scheduler, which must outlive it. Knows nothing about gRPC or requests: the caller supplies each
// sequence's sampling through a callback and reports tokens and finishes itself.
//
//   StepRunner runner(ranks, scheduler, /*vocab_limit=*/0);
//   StepRunner::Report r = runner.Step([&](SequenceId id) { return SamplingOf(id); });
//   for (const auto& t : r.tokens) Stream(t);
//   for (const auto& f : r.finished) Report(f);   // memory already released (see Report)
//
// Thread-safety: not thread-safe; the engine thread's, like the ranks and scheduler.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/engine/engine.h"
#include "common/scheduler/scheduler.h"
#include "decode_worker/common/rank_group.h"
#include "kernels/api/sampling.h"

namespace gka::worker_common {

using base::SequenceId;

// The scheduler's view of a worker's memory: the lead rank's free pools (every rank's pools
// move in lockstep). Memory held outside the scheduler (a decode worker's reservations, a
// prefill worker's sequences being handed off) is inside the engine, hence excluded already.
// Engine-thread only, like the engine.
class EngineMemory final : public scheduler::MemoryModel {
 public:
  explicit EngineMemory(const engine::Engine& lead) : e_(lead) {}
  int32_t page_size() const override { return e_.options().page_size; }
  int32_t free_pages() const override { return e_.free_pages(); }
  int32_t free_slots() const override { return e_.free_slots(); }

 private:
  const engine::Engine& e_;
};

class StepRunner {
 public:
  StepRunner(RankGroup* ranks, scheduler::Scheduler* scheduler, int32_t vocab_limit)
      : ranks_(ranks), scheduler_(scheduler), vocab_limit_(vocab_limit) {}

  struct Sampling {
    kernels::SamplingConfig config;
    uint64_t step = 0;                  // generation step index (the RNG counter)
    absl::Span<const int32_t> history;  // generated ids so far; must stay valid during Step
  };
  using SamplingFn = absl::FunctionRef<Sampling(SequenceId)>;

  struct Token {
    SequenceId id;
    int32_t token;
    float logprob;
    int32_t num_iter;  // GKA iterations of the Forward that produced it (resolved)
    std::vector<engine::Engine::TopLogprob> top;  // the config's num_top_logprobs alternatives
  };

  struct Report {
    bool ran = false;          // a Forward ran
    int32_t batch_size = 0;    // sequences in the Forward
    int32_t batch_tokens = 0;  // tokens fed
    int32_t preempted = 0;     // sequences swapped out to host this step
    int32_t resumed = 0;
    absl::Duration elapsed;               // the whole step
    std::vector<SequenceId> batch_ids;    // Forward order
    std::vector<int32_t> batch_num_iter;  // resolved, per batch_ids entry
    std::vector<Token> tokens;            // sampled ids of needs_logits items
    // Sequences that ended this step, errors (kError) included. Their memory is released,
    // except kPrefillDone sequences: those stay in the engine for the hand-off; call
    // Release() after it.
    std::vector<scheduler::FinishedSequence> finished;
    absl::Status error;  // the first engine error of the step, for logs
  };

  // Plans and runs one step. Without anything to run, returns a Report with ran = false.
  Report Step(SamplingFn sampling);

  // Observers on the engine thread (the prefill worker's streamed hand-off).
  struct Hooks {
    // After planning, before the Forward: the batch as planned (a sequence whose memory could
    // not be moved still appears; it leaves the Forward).
    std::function<void(absl::Span<const scheduler::BatchItem>)> before_forward;
    // Before a sequence's engine memory is freed or moved (preemption's export, a release, an
    // abort): whatever still reads that memory must have stopped when it returns.
    std::function<void(SequenceId)> before_release;
  };
  void SetHooks(Hooks hooks) { hooks_ = std::move(hooks); }

  // Ends a live sequence (Scheduler::Abort) and releases its memory.
  absl::StatusOr<scheduler::FinishedSequence> Abort(
      SequenceId id, scheduler::FinishReason reason = scheduler::FinishReason::kAborted);

  // Releases what a finished sequence holds: engine pages and slot, or its host copy.
  void Release(const scheduler::FinishedSequence& finished);

  int32_t host_sequences() const { return static_cast<int32_t>(host_.size()); }

 private:
  RankGroup* ranks_;
  scheduler::Scheduler* scheduler_;
  int32_t vocab_limit_;
  Hooks hooks_;
  absl::flat_hash_map<SequenceId, std::vector<engine::SequenceState>> host_;  // [rank]
};

}  // namespace gka::worker_common
