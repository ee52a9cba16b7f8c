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
#include "absl/types/span.h"
#include "common/engine/engine.h"
#include "common/metrics/metrics.h"
#include "common/scheduler/scheduler.h"
#include "common/transfer/transfer_engine.h"
#include "decode_worker/common/handoff.h"
#include "decode_worker/common/handoff_sender.h"
#include "decode_worker/common/rank_group.h"
#include "decode_worker/common/step_runner.h"
#include "kernels/api/sampling.h"

namespace gka::prefill_worker {

using base::SequenceId;
namespace wpb = ::gka::worker::v1;
// The hand-off sender is worker_common's (the decode worker migrates sequences with it).
using worker_common::HandoffFaults;
using worker_common::HandoffJob;
using worker_common::HandoffResult;
using worker_common::HandoffStream;
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
  // End of a sequence's last prefill step → the decode worker acknowledged its completion.
  std::optional<metrics::Histogram> transfer_tail_seconds;
  // Hand-off bytes put before the request's last prefill step ended (hidden behind compute).
  std::optional<metrics::Counter> streamed_bytes;
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
  // Bytes already put by the hand-offs of sequences still being prefilled.
  uint64_t streaming_bytes = 0;
  // Memory of hand-offs whose writes the transport could not stop (kept, never reused).
  int32_t quarantined_pages = 0, quarantined_slots = 0;
};

class PrefillCore {
 public:
  // Where hand-offs run. `stream` carries the transfer engine, the device staging and the
  // sender threads; `post` runs a task on the engine thread (false once it is closed).
  struct HandoffEnv {
    HandoffStream::Options stream;
    std::function<bool(absl::AnyInvocable<void()>)> post;
  };

  struct Options {
    std::string worker_id;
    int32_t max_batch_tokens = 2048;
    int32_t prefill_chunk_size = 512;
    int32_t max_running_seqs = 8;
    int32_t vocab_limit = 0;
    // Stream each sequence's hand-off while it is prefilled (pages after each chunk, layers in
    // the last step); false: start it after the last step (the transfer tail is all of it).
    bool stream_handoff = true;
  };

  // Sets the ranks' engines' layer observers (cleared by the destructor).
  static absl::StatusOr<std::unique_ptr<PrefillCore>> Create(const Options& options,
                                                             worker_common::RankGroup* ranks,
                                                             HandoffEnv env,
                                                             PrefillMetrics* metrics);
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
  PrefillCore(const Options& options, worker_common::RankGroup* ranks, HandoffEnv env,
              PrefillMetrics* metrics);
  bool RunStep();  // true when a Forward ran
  // StepRunner hooks: streams for the planned batch; a stream stopped before memory moves.
  void BeforeForward(absl::Span<const scheduler::BatchItem> batch);
  void BeforeRelease(SequenceId id);
  // Engine observer of rank `rank` (its thread): marks, and the last step's layers.
  void OnLayer(int rank, int32_t layer);
  absl::StatusOr<std::shared_ptr<HandoffStream>> NewStream(const Entry& e);
  absl::StatusOr<std::vector<std::vector<engine::MemorySegment>>> Describe(const Entry& e);
  void StartHandoff(Entry& e);
  void OnHandoffDone(uint64_t serial, HandoffResult result);
  void Finish(Entry& e, absl::StatusOr<wpb::PrefillResult> result);

  const Options options_;
  worker_common::RankGroup* ranks_;
  engine::Engine* engine_;  // the lead rank: scheduling facts
  HandoffEnv env_;
  PrefillMetrics* metrics_;
  const int32_t num_layers_;
  // This step's sequences in their last prefill step (set before the Forward, read by the
  // rank threads' observers during it).
  std::vector<std::pair<SequenceId, std::shared_ptr<HandoffStream>>> last_step_;
  bool streaming_step_ = false;  // some sequence in the step streams
  // [rank]: a mark after the step's last layer (null: the backend's ops are synchronous),
  // each written by its own rank's thread during the Forward.
  HandoffStream::Marks step_marks_;
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
