// The sending half of a hand-off: checking a decode worker's TransferTicket against this
// worker's layout, and writing one sequence into the ticket's memory with the transfer engine
// while it is being prefilled (HandoffStream) — KV pages as their chunks and layers finish,
// the GKA h_kk/h_kv and conv states as their layers finish in the last step, then (after UCX
// reports every put complete) the completion carrying the first token, the checksum and the
// reservation's generation.
//
// Two senders use it: the prefill worker streams a prompt's hand-off while prefilling it
// (HandoffStream), and a draining decode worker migrates a running sequence (its state after
// prompt + generated[:-1], the last sampled token as the completion's first token) to another
// decode worker (RunHandoff: everything final, sent at once).
//
// Tensor parallelism: this worker runs TP = p (one engine per rank), the decode worker TP = d
// (one RankTicket per rank, each with its own UCX worker). One transfer goes to each decode
// rank j; it writes exactly the heads j owns of every segment, read straight from the memory
// of the prefill ranks that hold them (transfer/reshard.h: whole segments rank to rank when
// p = d; head sub-ranges of pages and states otherwise) — no rank gathers anything. The
// ticket's compat hash must be HandoffLayout::TicketHash(d) of this worker's model format, and
// every completion carries TransferHash(p, d).
//
// Owns the streams' transfers and staging. Depends on transfer (interface only) and
// transfer/staging, the worker proto, worker_common's hand-off format, kernels' StreamMark
// (an opaque compute-stream point); never on the engine's internals or gRPC.
//
//   GKA_ASSIGN_OR_RETURN(ParsedTicket t, ParseTicket(request.ticket(), layout, prompt_len));
//   // When the sequence's prefill is first planned (engine thread):
//   GKA_ASSIGN_OR_RETURN(auto stream, HandoffStream::Create({&transfer, device, senders}, job));
//   stream->Describe(rank, engine.DescribeSequence(id));  stream->PagesFinal(pages, marks);
//   ...  // after the last step:
//   stream->Complete(memory, marks, completion, [](HandoffResult r) { ... });
//
// Thread-safety: ParseTicket is a pure function; HandoffStream below.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/engine/engine.h"
#include "common/transfer/transfer_engine.h"
#include "decode_worker/common/device_transfer.h"
#include "decode_worker/common/handoff.h"
#include "gka/worker/v1/worker.pb.h"
#include "kernels/api/backend.h"

namespace gka::worker_common {

namespace wpb = ::gka::worker::v1;

// One decode rank's part of a ticket.
struct RankDestination {
  transfer::TransferTarget target;
  // Destination of each canonical segment (HandoffLayout order), sized for
  // the decode layout.
  std::vector<transfer::Segment> destinations;  // `local` unset
};

struct ParsedTicket {
  uint64_t transfer_id = 0;
  std::string decode_worker_id;
  absl::Time lease_deadline;
  int decode_tp = 1;
  std::vector<RankDestination> ranks;  // [decode rank]
};

// FAILED_PRECONDITION for a ticket this worker cannot write: another model format or page
// size (compat hash), a decode TP size whose head shares this model cannot have, rank head
// ranges that are not the even shares (naming the rank and both ranges); INVALID_ARGUMENT
// naming the field for a malformed ticket (rank count, segment count or sizes that do not fit
// a prompt of `prompt_tokens`, a segment outside its region, a missing address or key);
// DEADLINE_EXCEEDED when its lease has passed.
absl::StatusOr<ParsedTicket> ParseTicket(const wpb::TransferTicket& ticket,
                                         const HandoffLayout& layout, int64_t prompt_tokens,
                                         absl::Time now = absl::Now());

// Fault injection (builds with GKA_FAULT_INJECTION only; otherwise never set).
struct HandoffFaults {
  bool corrupt_byte = false;        // flip a source byte after its put, before the checksum
  absl::Duration delay_puts;        // sleep between the begin handshake and the first put
  absl::Duration delay_completion;  // sleep before the completion (e.g. past the lease)
  bool freeze = false;              // block before the completion until cancelled (60 s cap)
  bool stale_generation = false;    // the completion names generation - 1
  absl::Duration step_delay;        // the engine thread sleeps after each of its prefill steps
  // The transport reports an error for a put (after the first writes were posted): the
  // sender cancels, so the receiver's fence proves the memory quiescent.
  bool fail_put = false;
};

// What a hand-off writes where: fixed when the sequence's prefill is first planned (the
// ticket exists before prefill starts: the router Reserves first).
struct HandoffJob {
  ParsedTicket ticket;
  std::vector<SegmentSpec> specs;  // canonical order (shapes; any TP)
  int prefill_tp = 1;              // ranks whose memory the segments are read from
  // RunHandoff only (a stream gets them through Describe/Complete): [rank][segment], each
  // rank's DescribeSequence of the finished sequence, and the completion to send.
  std::vector<std::vector<engine::MemorySegment>> local;
  wpb::HandoffCompletion completion;
  // Stop trying at this time (the lease, or the Prefill call's deadline if earlier).
  absl::Time deadline;
  // Set by the engine thread when the Prefill call is cancelled; checked between puts.
  std::shared_ptr<std::atomic<bool>> cancelled;
  HandoffFaults faults;
};

struct HandoffResult {
  // Over all decode ranks: the first failure (OK when every rank's transfer was OK), bytes
  // and segments summed, checksum = the one rank's, or XXH3 of the ranks' checksums in rank
  // order; remote_may_be_written / local_may_be_read when any rank's says so.
  transfer::TransferOutcome outcome;
  uint64_t kv_bytes = 0;
  uint64_t state_bytes = 0;
  // Start until every KV put is posted; then until the completion was acknowledged (state
  // puts, the flush of everything, the completion round trip).
  absl::Duration kv_time;
  absl::Duration state_time;
  // The transfer tail: from Complete (the end of the sequence's last prefill step) until the
  // decode worker acknowledged the completion — what the hand-off adds to TTFT.
  absl::Duration tail;
  // Bytes already put when Complete was called (streamed while the prompt was prefilled).
  uint64_t streamed_bytes = 0;
  // gka_transfer_failures_total's reason: "peer", "timeout", "lease", "checksum"; empty on
  // success and when the Prefill call itself was cancelled.
  std::string failure_reason;
};

// One sequence's hand-off, streamed while the sequence is prefilled. The decode ranks'
// transfers begin (handshake) as soon as the stream exists; pieces are put as soon as they
// are final: after each prefill step, the KV pages whose tokens are all computed (PagesFinal);
// in the last step, each layer's pages and GKA/conv state as soon as that layer's kernels ran
// (LayerFinal, from the engine's layer observer); at Complete, the rest. The completion (the
// checksum over everything, the first token) goes last, after every put, exactly as for a
// hand-off that starts after prefill (Complete right after Create), so the decode worker's
// verification and fencing are unchanged.
//
// Memory: host memory is put in place (the transfer engine hashes the sources at the
// completion). Device memory (DeviceTransfer on_device) goes through transfer/staging: each
// ready group is copied device → pinned on the copier's stream after the compute stream's mark
// (poly61 fused), then put from the staging.
//
// I/O runs on the executor (the sender threads), one task at a time per stream; the update
// methods only record and schedule, they never block on the network. The sequence's memory
// must stay put until Complete's outcome, or until StopNow returned.
//
// Thread-safety: every method is thread-safe. Describe/LayerFinal may be called from rank
// threads, the rest from the engine thread.
class HandoffStream : public std::enable_shared_from_this<HandoffStream> {
 public:
  // Runs a task on a sender thread; false when the sender pool is closed.
  using Executor = std::function<bool(absl::AnyInvocable<void()> task)>;
  struct Options {
    transfer::TransferEngine* transfer = nullptr;
    // Null or not on_device: host memory, put in place.
    const DeviceTransfer* device = nullptr;
    Executor executor;
  };
  using Marks = std::vector<std::shared_ptr<kernels::StreamMark>>;  // [prefill rank], null: none

  // Begins the transfers (and takes the staging) on the executor. INTERNAL when the job's
  // ticket and specs disagree; a failure to begin is reported through Complete's result.
  static absl::StatusOr<std::shared_ptr<HandoffStream>> Create(const Options& options,
                                                               HandoffJob job);
  ~HandoffStream();

  // Rank `rank`'s Engine::DescribeSequence of the sequence now (only the pages it holds so
  // far). INTERNAL when it does not fit the job's specs.
  absl::Status Describe(int rank, const std::vector<engine::MemorySegment>& memory);
  // After a prefill step: the first `pages` KV pages of every attention layer are final on
  // every rank once its compute passes `marks[rank]`.
  void PagesFinal(int64_t pages, Marks marks);
  // In the sequence's last prefill step: rank `rank`'s layers [0, layer] (KV pages and
  // states) are final once its compute passes `mark`.
  void LayerFinal(int rank, int32_t layer, std::shared_ptr<kernels::StreamMark> mark);
  // After the last step (`memory`: every rank's full description, `marks` as in PagesFinal):
  // puts the rest, then the completion. `done` gets the result exactly once, on a sender
  // thread (inline when the executor is closed).
  absl::Status Complete(const std::vector<std::vector<engine::MemorySegment>>& memory, Marks marks,
                        wpb::HandoffCompletion completion,
                        absl::AnyInvocable<void(HandoffResult)> done);
  // Stops before the sequence's memory is freed or moved (preempted, aborted, cancelled
  // before its last step). When it returns, nothing reads the memory any more: puts already
  // posted were flushed and their transfers cancelled (or, when the transport could not stop
  // them, the result says local_may_be_read). Idempotent; not after Complete.
  HandoffResult StopNow(absl::Status why);

  // For metrics and tests: bytes put so far.
  uint64_t bytes_put() const;

 private:
  struct Unit;
  struct Io;
  HandoffStream(const Options& options, HandoffJob job);
  void Schedule();
  void Pump();
  // Under io_mu_: the transfers' handshakes; an error when one failed (those begun cancelled).
  absl::Status Begin();
  // Units made final by one event (a step's pages, one layer, Complete) and the compute marks
  // their copies wait for.
  struct Group {
    std::vector<size_t> units;
    Marks marks;
  };
  // Under io_mu_: puts the groups' units, in order; an error when a put failed.
  absl::Status PutUnits(const std::vector<Group>& groups);
  HandoffResult Cancel(absl::Status why);
  HandoffResult Finish();
  void Deliver(HandoffResult r);

  const Options options_;
  const HandoffJob job_;
  const bool on_device_;  // device memory through transfer/staging
  const absl::Time start_;
  std::vector<Unit> units_;       // (decode rank, segment, prefill rank), canonical order
  std::vector<int32_t> page_of_;  // per spec: page index within its layer, -1 for states
  int32_t pages_total_ = 0;       // pages per attention layer of the whole prompt

  mutable absl::Mutex mu_;
  absl::CondVar idle_;                                                 // putting_ went false
  std::vector<std::vector<const void*>> memory_ ABSL_GUARDED_BY(mu_);  // [prefill rank][spec]
  int64_t pages_final_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int32_t> layers_final_ ABSL_GUARDED_BY(mu_);  // [prefill rank]: layers < this
  Marks marks_ ABSL_GUARDED_BY(mu_);                        // latest per rank
  Marks page_marks_ ABSL_GUARDED_BY(mu_);                   // PagesFinal's, per rank
  // [prefill rank]: layer → the mark after it. Each layer's copies wait for their own layer
  // only: the engine thread enqueues a step's layers long before the GPU runs them, so waiting
  // for the latest mark would hold every layer's copy until the step ends.
  std::vector<std::map<int32_t, std::shared_ptr<kernels::StreamMark>>> layer_marks_
      ABSL_GUARDED_BY(mu_);
  bool complete_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time complete_at_ ABSL_GUARDED_BY(mu_);
  wpb::HandoffCompletion completion_ ABSL_GUARDED_BY(mu_);
  absl::AnyInvocable<void(HandoffResult)> done_ ABSL_GUARDED_BY(mu_);
  bool scheduled_ ABSL_GUARDED_BY(mu_) = false;  // a Pump task is queued or running
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status stop_why_ ABSL_GUARDED_BY(mu_);
  bool putting_ ABSL_GUARDED_BY(mu_) = false;
  bool posted_ ABSL_GUARDED_BY(mu_) = false;  // some put was posted
  bool ended_ ABSL_GUARDED_BY(mu_) = false;   // transfers finished or cancelled
  uint64_t bytes_put_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t streamed_ ABSL_GUARDED_BY(mu_) = 0;  // bytes_put_ when Complete was called

  absl::Mutex io_mu_;  // one I/O task at a time (OutgoingTransfer is single-threaded)
  std::unique_ptr<Io> io_ ABSL_GUARDED_BY(io_mu_);
};

// A hand-off of a sequence that is final already (a draining decode worker's migration),
// blocking on the calling thread (a sender thread): a HandoffStream completed at once with
// job.local and job.completion, its I/O run inline. `device` as HandoffStream::Options.
HandoffResult RunHandoff(transfer::TransferEngine& transfer, const HandoffJob& job,
                         const DeviceTransfer* device = nullptr);

// A finished hand-off's numbers as the wire reports them (PrefillResult, MigrateResponse).
wpb::TransferStats StatsOf(const HandoffResult& result);

}  // namespace gka::worker_common
