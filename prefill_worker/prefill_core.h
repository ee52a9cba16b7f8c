// PrefillCore: the prefill worker's engine-thread state — a prompt queue batched under a
// token budget (the scheduler in prefill-only mode, chunked prefill with each request's
// num_iter), first-token sampling, and the hand-off of each finished sequence to a sender
// thread (handoff_sender.h), after which its memory is freed.
//
// Owns the engines' sequences and the scheduler. Borrows the tensor-parallel ranks (every
// rank prefills the same batch in lockstep; rank 0 samples), the transfer engine, the queues
// and the metrics. Not gRPC: requests arrive as plain structs with a reply callback.
//
// Thread-safety: not thread-safe; every method runs on the worker's engine thread. Reply
// callbacks are called there too.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/engine/engine.h"
#include "common/metrics/metrics.h"
#include "common/scheduler/scheduler.h"
#include "common/transfer/transfer_engine.h"
#include "decode_worker/common/handoff.h"
#include "decode_worker/common/rank_group.h"
#include "decode_worker/common/step_runner.h"
#include "kernels/api/sampling.h"
#include "decode_worker/common/handoff_sender.h"

namespace gka::prefill_worker {

using base::SequenceId;
namespace wpb = ::gka::worker::v1;
// The hand-off sender is worker_common's (the decode worker migrates sequences with it).
using worker_common::HandoffFaults;
using worker_common::HandoffJob;
using worker_common::HandoffResult;
using worker_common::ParsedTicket;

// Series handles of docs/metrics.md's prefill section, created at start (at 0). Handles are
// thread-safe (metrics.h).
struct PrefillMetrics {
  static absl::StatusOr<std::unique_ptr<PrefillMetrics>> Create(
      metrics::Registry& registry, const std::string& worker,
      const std::vector<std::string>& tiers);
  metrics::HistogramFamily* prefill_seconds = nullptr;  // {worker, tier}
  std::optional<metrics::Gauge> queue_tokens;
  std::optional<metrics::Histogram> batch_tokens;
  std::optional<metrics::Histogram> transfer_kv_seconds, transfer_state_seconds;
  std::optional<metrics::Counter> transfer_kv_bytes, transfer_state_bytes;
  metrics::CounterFamily* transfer_failures = nullptr;  // {worker, reason}
  std::string worker;
};

// One validated Prefill call.
struct PrefillTask {
  std::string request_id;
  std::vector<int32_t> prompt;
  kernels::SamplingConfig sampling;
  bool logprobs = false;
  int32_t prefill_num_iter = -1;
  int32_t priority = 0;
  std::string tier;
  ParsedTicket ticket;
  absl::Time call_deadline = absl::InfiniteFuture();
  HandoffFaults faults;
  absl::AnyInvocable<void(absl::StatusOr<wpb::PrefillResult>)> reply;
};

struct PrefillStats {
  int32_t free_pages = 0, free_slots = 0;
  int32_t running = 0, waiting = 0, handing_off = 0;
  int64_t queued_prompt_tokens = 0;
  int64_t prefilled_tokens = 0;
  int64_t handoffs_ok = 0, handoffs_failed = 0;
  // Memory of hand-offs whose writes the transport could not stop (kept, never reused).
  int32_t quarantined_pages = 0, quarantined_slots = 0;
};

class PrefillCore {
 public:
  // Runs a hand-off job off the engine thread and posts `done` back to it.
  using SendFn = std::function<void(std::shared_ptr<const HandoffJob> job,
                                    absl::AnyInvocable<void(HandoffResult)> done)>;

  struct Options {
    std::string worker_id;
    int32_t max_batch_tokens = 2048;
    int32_t prefill_chunk_size = 512;
    int32_t max_running_seqs = 8;
    int32_t vocab_limit = 0;
  };

  static absl::StatusOr<std::unique_ptr<PrefillCore>> Create(const Options& options,
                                                             worker_common::RankGroup* ranks,
                                                             SendFn send, PrefillMetrics* metrics);
  ~PrefillCore();

  // Queues a request; `serial` names it in Cancel. Replies through task.reply.
  void Add(uint64_t serial, PrefillTask task);
  // The Prefill call was cancelled: drop it from the queue or stop its transfer.
  void Cancel(uint64_t serial);
  // Runs one engine step when there is work; returns when it wants to be called again.
  absl::Time Tick();
  // Ends everything with `why` (shutdown); transfers in flight are cancelled.
  void AbortAll(const absl::Status& why);
  PrefillStats Stats() const;

 private:
  struct Entry;
  PrefillCore(const Options& options, worker_common::RankGroup* ranks, SendFn send,
              PrefillMetrics* metrics);
  bool RunStep();  // true when a Forward ran
  void StartHandoff(Entry& e);
  void OnHandoffDone(uint64_t serial, HandoffResult result);
  void Finish(Entry& e, absl::StatusOr<wpb::PrefillResult> result);

  const Options options_;
  worker_common::RankGroup* ranks_;
  engine::Engine* engine_;  // the lead rank: scheduling facts
  SendFn send_;
  PrefillMetrics* metrics_;
  const worker_common::HandoffLayout layout_;
  std::unique_ptr<scheduler::MemoryModel> memory_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<worker_common::StepRunner> runner_;
  int64_t next_sequence_ = 1;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Entry>> entries_;  // by serial
  absl::flat_hash_map<SequenceId, uint64_t> by_sequence_;
  int64_t prefilled_tokens_ = 0, handoffs_ok_ = 0, handoffs_failed_ = 0;
  int32_t quarantined_pages_ = 0, quarantined_slots_ = 0;
};

}  // namespace gka::prefill_worker
