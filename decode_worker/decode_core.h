// DecodeCore: the decode worker's engine-thread state — reservations under leases, the
// receiving side of hand-offs, and the continuous decode batch.
//
// Owns the engine's sequences and the scheduler, every reservation's UCX registrations, and
// the streams' bookkeeping (not the gRPC reactors: streams are borrowed until Close). Depends
// on engine, scheduler, transfer (interface only), metrics, the worker proto; not on gRPC.
//
// One request, as this side sees it (with TP = d, every step happens on each of the d ranks:
// each rank has its own engine, its own transfer engine and its own RankTicket, and receives
// exactly its heads' share of every segment; the sequence may run once all d have completed):
//   Reserve        ReserveForImport(prompt pages + slot) on every rank -> register each rank's
//                  reservation memory (one region per contiguous run of its segments) ->
//                  Expect(generation, lease, verify ranges) on each rank's transfer engine ->
//                  TransferTicket with one RankTicket per rank and TicketHash(d).
//   completion     (common/transfer's completion message, sent after every write is
//                  complete here) with the XXH3 checksum, verified by the transfer engine
//                  over the reservation's segments (the Expect's verify ranges) before the
//                  core hears of it; payload = HandoffCompletion carrying the generation:
//                  a payload of another generation, or of a sender layout whose
//                  TransferHash(p, d) differs from ours, is refused. Registrations are revoked
//                  (nothing may write any more).
//   StartDecode    (before or after the completion) once both are in: AddPrefilled, stream
//                  DecodeStarted, then TokenBatch per step, then DecodeDone.
//   lease expiry, Abort, Release, cancelled stream: revoke the registrations, then Fence the
//                  transfer on the fencer thread; only a successful fence returns pages and
//                  slot to the pool. A failed fence quarantines them (retried periodically).
//
// Drain (SIGTERM): StartDrain refuses new reservations and moves every running sequence whose
// router follows migrations (StartDecodeRequest.accepts_migration) to another decode worker:
//   pause          between steps, the sequence leaves the scheduler (its memory stays: KV
//                  pages and GKA/conv state of prompt + generated[:-1], the last sampled token
//                  not yet fed) and its stream gets MigrationNeeded;
//   Migrate        (the router reserved on a target for prompt' = those fed tokens) the
//                  hand-off sender writes the state into the ticket's memory on the sender
//                  thread, the completion carrying the last sampled token as the first token;
//                  the target verifies it like any hand-off and resumes the sequence with
//                  StartDecodeRequest.resumed_tokens (same RNG step, history, max_tokens);
//   success        the stream ends with Migrated, the memory returns to the pool;
//   anything else  (no Migrate within migration_wait, no ticket, a failed transfer) the
//                  sequence resumes here and finishes within the grace, as without migration.
//
// Colocated (options.colocated, the worker's --colocated): no reservation and no transfer.
// StartDecode carries the prompt; the sequence enters the scheduler as a fresh request, whose
// prompt is fed in chunks of at most prefill_chunk_size tokens under the max_batch_tokens
// budget together with the running decode batch (decode tokens first, as vLLM's chunked
// prefill does), each chunk with the request's prefill num_iter; the first token is sampled
// after the last chunk (DecodeStarted), later tokens with the decode num_iter. Reserve is
// refused (FAILED_PRECONDITION): a colocated worker takes no hand-offs. Draining, it refuses
// new prompts (UNAVAILABLE: the router places them elsewhere) and its sequences finish where
// they run (the router does not ask to move them).
//
// Thread-safety: not thread-safe. Every method runs on the worker's engine thread (posted
// through its TaskQueue); callbacks it is given may be called only there, too.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
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
#include "common/transfer/lease.h"
#include "common/transfer/transfer_engine.h"
#include "decode_worker/common/device_transfer.h"
#include "decode_worker/common/handoff.h"
#include "decode_worker/common/handoff_sender.h"
#include "decode_worker/common/rank_group.h"
#include "decode_worker/common/step_runner.h"
#include "decode_worker/common/task_queue.h"
#include "gka/worker/v1/worker.pb.h"
#include "kernels/api/sampling.h"

namespace gka::decode_worker {

namespace wpb = ::gka::worker::v1;
namespace spb = ::gka::serving::v1;

using base::SequenceId;

// The sending half of one StartDecode call. Send queues (never blocks); Close is the last
// call the core makes on a stream, after which it forgets the pointer. Implementations are
// thread-safe (the core calls from the engine thread, gRPC completes writes on its own).
class DecodeStream {
 public:
  virtual ~DecodeStream() = default;
  virtual uint64_t id() const = 0;  // unique per process; names the stream in cancellations
  virtual void Send(wpb::DecodeStreamResponse message) = 0;
  virtual void Close(const absl::Status& status) = 0;
};

// Series handles of docs/metrics.md's decode section, created at start (at 0). Handles are
// thread-safe (metrics.h).
struct DecodeMetrics {
  static absl::StatusOr<std::unique_ptr<DecodeMetrics>> Create(
      metrics::Registry& registry, const std::string& worker,
      const std::vector<std::string>& tiers);
  std::optional<metrics::Gauge> running, waiting, kv_pages_used, kv_pages_capacity, slots_used,
      slots_total, reservations_active;
  std::optional<metrics::Histogram> batch_size, step_seconds;
  std::optional<metrics::Counter> reservations_expired, checksum_failures, preemptions;
  // Reserve refused for want of room: a router over-committed this worker (or several
  // routers share it). Issue 9's admission keeps these at zero for one router.
  std::optional<metrics::Counter> reserve_refused;
  // gka_decode_migrations_total{worker, result}: sequences this worker moved away on drain.
  std::optional<metrics::Counter> migrations_ok, migrations_failed;
  // Colocated: steps whose Forward fed prompt chunks and decode tokens together.
  std::optional<metrics::Counter> mixed_steps;
  metrics::HistogramFamily* num_iter = nullptr;  // {worker, tier}
  std::string worker;
};

struct DecodeCoreOptions {
  std::string worker_id;
  int32_t max_batch_tokens = 256;
  absl::Duration default_lease = absl::Seconds(10);
  absl::Duration max_lease = absl::Seconds(60);
  // How long one Fence may wait for the sender to confirm it stopped.
  absl::Duration fence_timeout = absl::Seconds(2);
  // How often a quarantined reservation's fence is retried.
  absl::Duration quarantine_retry = absl::Seconds(1);
  int32_t vocab_limit = 0;  // sample ids < vocab_limit (0: the whole vocabulary)
  int32_t total_pages = 0;
  int32_t total_slots = 0;
  // Prefill prompts here (StartDecode with prompt_token_ids) instead of receiving hand-offs.
  bool colocated = false;
  // Most prompt tokens of one sequence per step (colocated); 0: max_batch_tokens.
  int32_t prefill_chunk_size = 0;
  // Publishes Stats() for the load report; called before a colocated StartDecode is
  // acknowledged (DecodeAccepted), so a report sent after the router hears of the sequence
  // includes it. Engine thread; may be empty.
  std::function<void()> publish;
  // GPU state (null or kHost: host memory registered in place, XXH3 checked by UCX). Staged:
  // each rank's share lands in pinned staging and is copied in with the poly61 check before
  // admission; direct: UCX writes GPU memory, poly61 checked in place. Borrowed.
  const worker_common::DeviceTransfer* device = nullptr;
  // Runs a migration's hand-off off the engine thread and posts `done` back to it (null: this
  // worker never migrates; a drain then lets its sequences finish here).
  std::function<void(std::shared_ptr<const worker_common::HandoffJob> job,
                     absl::AnyInvocable<void(worker_common::HandoffResult)> done)>
      send;
  // How long a paused sequence waits for the router's Migrate before it resumes here.
  absl::Duration migration_wait = absl::Seconds(3);
};

// What tests and the load report read (a snapshot).
struct DecodeStats {
  int32_t free_pages = 0, total_pages = 0, free_slots = 0, total_slots = 0;
  int32_t reservations = 0;  // awaiting a transfer or a StartDecode
  int32_t reserved_pages = 0, reserved_slots = 0;
  int32_t freeing = 0;  // fences in progress
  int32_t quarantined_pages = 0, quarantined_slots = 0;
  int32_t running = 0, waiting = 0;  // scheduler residents; waiting + preempted
  int64_t queued_prompt_tokens = 0;  // colocated: prompt tokens not yet prefilled
  // Colocated: room that queued prompts will take and the engine has not allocated yet (a
  // slot per waiting sequence, pages for the prompt tokens not yet fed); the load report
  // counts it as taken, as it would a reservation's.
  int32_t claimed_pages = 0, claimed_slots = 0;
  int64_t generated_tokens = 0;
  int64_t reservations_expired = 0, checksum_failures = 0, preemptions = 0;
  int64_t completions_discarded = 0;  // late or foreign completions dropped
  int64_t decoded_sequences = 0;
  int64_t migrations_ok = 0, migrations_failed = 0;
  int32_t live = 0;  // requests this worker still holds anything for (0: drained)
  int64_t mixed_steps = 0;  // colocated: steps mixing prompt chunks with decode tokens
};

class DecodeCore {
 public:
  // `ranks`, `transfers` (one per rank, rank order), `engine_queue` (the engine thread's)
  // and `fence_queue` (the fencer thread's) are borrowed and must outlive the core; so must
  // `metrics`. INVALID_ARGUMENT when the transfer engines do not match the ranks one to one.
  static absl::StatusOr<std::unique_ptr<DecodeCore>> Create(
      const DecodeCoreOptions& options, worker_common::RankGroup* ranks,
      std::vector<transfer::TransferEngine*> transfers, worker_common::TaskQueue* engine_queue,
      worker_common::TaskQueue* fence_queue, DecodeMetrics* metrics);
  ~DecodeCore();

  using TicketCallback = absl::AnyInvocable<void(absl::StatusOr<wpb::TransferTicket>)>;
  using ReleaseCallback = absl::AnyInvocable<void(wpb::ReleaseResponse)>;
  using MigrateCallback = absl::AnyInvocable<void(absl::StatusOr<wpb::MigrateResponse>)>;

  // INVALID_ARGUMENT (empty id, no prompt, prompt + max_new_tokens past the context),
  // ALREADY_EXISTS (a live reservation with this id), RESOURCE_EXHAUSTED (no slot or pages).
  void Reserve(const wpb::ReserveRequest& request, TicketCallback done);
  // Frees a reservation (or aborts a decoding sequence). Idempotent; replies once the memory
  // is fenced (or quarantined).
  void Release(const wpb::ReleaseRequest& request, ReleaseCallback done);
  // True when a live reservation or sequence had this id.
  bool Abort(const std::string& request_id);
  // The stream is borrowed until the core Closes it. A colocated core takes the prompt from
  // the request (see the header comment); otherwise the request names a reservation.
  void StartDecode(const wpb::StartDecodeRequest& request, DecodeStream* stream);
  void StreamCancelled(uint64_t stream_id);

  // From the transfer engine's callbacks and the fencer thread (posted here).
  void OnTransferResult(uint64_t generation, int rank,
                        absl::StatusOr<transfer::TransferCompletion> result);
  void OnFenced(uint64_t generation, absl::Status status);

  // Expires leases, retries quarantine fences, runs one engine step when there is work.
  // Returns the time by which it wants to be called again (now when it has more work).
  absl::Time Tick();

  // Ends every stream with `why` and frees every reservation (shutdown).
  void AbortAll(const absl::Status& why);

  // Drain: from now on Reserve answers UNAVAILABLE and Tick pauses running sequences and asks
  // their routers to move them (see the top of this file).
  void StartDrain();
  // Moves the paused sequence `request` names into `request.ticket()` (absent: resumes it
  // here); `done` gets OK once the target acknowledged the state, else the error (the
  // sequence then runs on here). FAILED_PRECONDITION when it is not paused for a move,
  // INVALID_ARGUMENT for a ticket this worker cannot write.
  void Migrate(const wpb::MigrateRequest& request, MigrateCallback done);
  // The Migrate call was cancelled: stop its transfer (the sequence resumes here).
  void MigrateCancelled(const std::string& request_id);
  // From the sender thread (posted here).
  void OnMigrated(uint64_t generation, worker_common::HandoffResult result);

  DecodeStats Stats() const;

  // The degrade ladder: `router`'s decode num_iter caps per tier (empty: none), applied to
  // new and running sequences of those tiers (the lowest cap over routers wins); a tier whose
  // cap is gone gets its requests' own values back.
  void SetNumIterCaps(const std::string& router, const std::map<std::string, int32_t>& caps);

 private:
  enum class Phase {
    kAwaitingTransfer,  // reserved, registered, expected
    kTransferred,       // completion verified; waiting for StartDecode
    kDecoding,          // in the scheduler
    kFreeing,           // registrations revoked, fence in flight
    kQuarantined,       // fence failed: memory held back, fence retried
  };
  struct Entry;

  DecodeCore(const DecodeCoreOptions& options, worker_common::RankGroup* ranks,
             std::vector<transfer::TransferEngine*> transfers,
             worker_common::TaskQueue* engine_queue, worker_common::TaskQueue* fence_queue,
             DecodeMetrics* metrics);

  absl::StatusOr<wpb::TransferTicket> DoReserve(const wpb::ReserveRequest& request);
  absl::Status AttachDecode(Entry& e, const wpb::StartDecodeRequest& request, DecodeStream* stream);
  // Colocated: validates the request, checks for room, queues the prompt in the scheduler.
  absl::Status StartColocated(const wpb::StartDecodeRequest& request, DecodeStream* stream);
  // Colocated: the prompt's last chunk ran and `t` is its first token.
  void ColocatedStarted(Entry& e, const worker_common::StepRunner::Token& t);
  void MaybeAdmit(Entry& e);
  // Staged GPU hand-offs: every rank's landing copied in; check the checksums, then admit.
  void FinishCopyIn(Entry& e);
  // The completion is verified and the state in place: waiting for StartDecode (or admitted).
  void Transferred(Entry& e);
  // Ends a live entry before decoding (or while decoding) and frees its memory safely.
  void EndEntry(Entry& e, const absl::Status& stream_status, std::optional<wpb::DecodeDone> done);
  void StartFreeing(Entry& e);
  void StartFence(Entry& e);
  void FreeNow(Entry& e, bool quarantined);
  // Every rank has verified its share: check the completion (one payload for all ranks) and
  // let the sequence run.
  void OnAllTransferred(Entry& e);
  void RemoveFromRanks(SequenceId id);
  void Forget(Entry& e);
  bool RunStep();  // true when a Forward ran
  void Finalize(Entry& e, const scheduler::FinishedSequence& f);
  void Expire(Entry& e);
  // The scheduler's view of a decoding entry from its tokens: prompt' (every token fed) and
  // the last sampled one as the first token. Admits it (MaybeAdmit, a resumed move).
  absl::StatusOr<std::optional<scheduler::FinishReason>> AddToScheduler(Entry& e);
  // Drain: pauses the entry's sequence and asks its router to move it.
  void AskToMove(Entry& e);
  // A move that will not happen: the sequence runs on here.
  void ResumeHere(Entry& e, absl::string_view why);
  std::string TierOf(const Entry& e) const;
  Entry* Live(const std::string& request_id);
  Entry* ByGeneration(uint64_t generation);
  void UpdateGauges();
  // The request's decode num_iter (-1: the model's) under the current caps.
  int32_t CappedNumIter(const Entry& e) const;

  const DecodeCoreOptions options_;
  worker_common::RankGroup* ranks_;
  engine::Engine* engine_;                            // the lead rank: scheduling facts
  std::vector<transfer::TransferEngine*> transfers_;  // [rank]
  worker_common::TaskQueue* engine_queue_;
  worker_common::TaskQueue* fence_queue_;
  DecodeMetrics* metrics_;
  const worker_common::HandoffLayout layout_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::unique_ptr<worker_common::StepRunner> runner_;
  std::unique_ptr<scheduler::MemoryModel> memory_;

  // Generations are unique per process start and never reused (transfer ids).
  uint64_t generation_base_ = 0;
  int64_t next_sequence_ = 1;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Entry>> entries_;        // by generation
  std::map<std::string, std::map<std::string, int32_t>> num_iter_caps_;  // router -> tier -> cap
  absl::flat_hash_map<std::string, uint64_t> live_;  // request id -> generation (not freeing)
  absl::flat_hash_map<SequenceId, uint64_t> by_sequence_;
  absl::flat_hash_map<uint64_t, uint64_t> by_stream_;  // stream id -> generation

  bool draining_ = false;
  int64_t generated_tokens_ = 0, reservations_expired_ = 0, checksum_failures_ = 0,
          preemptions_ = 0, completions_discarded_ = 0, decoded_sequences_ = 0,
          migrations_ok_ = 0, migrations_failed_ = 0, mixed_steps_ = 0;
};

}  // namespace gka::decode_worker
