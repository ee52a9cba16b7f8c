// The sending half of a hand-off: checking a decode worker's TransferTicket against this
// worker's layout, and writing one sequence into the ticket's memory with the
// transfer engine — KV pages layer by layer, then the GKA h_kk/h_kv and conv states, then
// (after UCX reports every put complete) the completion carrying the first token, the
// checksum and the reservation's generation.
//
// Tensor parallelism: this worker runs TP = p (one engine per rank), the decode worker TP = d
// (one RankTicket per rank, each with its own UCX worker). One transfer goes to each decode
// rank j; it writes exactly the heads j owns of every segment, read straight from the memory
// of the prefill ranks that hold them (transfer/reshard.h: whole segments rank to rank when
// p = d; head sub-ranges of pages and states otherwise) — no rank gathers anything. The
// ticket's compat hash must be HandoffLayout::TicketHash(d) of this worker's model format, and
// every completion carries TransferHash(p, d).
//
// Two senders use it: the prefill worker hands a prefilled prompt off, and a draining decode
// worker migrates a running sequence (its state after prompt + generated[:-1], the last
// sampled token as the completion's first token) to another decode worker.
//
// Owns nothing long-lived. Depends on transfer (interface only), the worker proto,
// worker_common's hand-off format.
//
//   GKA_ASSIGN_OR_RETURN(ParsedTicket t, ParseTicket(request.ticket(), layout, prompt_len));
//   ...  // after prefill, on the engine thread:
//   job.local = engine.DescribeSequence(id);
//   HandoffResult r = RunHandoff(transfer, job);   // on a sender thread: blocks
//
// Thread-safety: ParseTicket is a pure function; RunHandoff blocks and reads the job's local
// memory, which the engine thread must leave alone until it returns.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/engine/engine.h"
#include "common/transfer/transfer_engine.h"
#include "decode_worker/common/device_transfer.h"
#include "decode_worker/common/handoff.h"
#include "gka/worker/v1/worker.pb.h"

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
                                         const HandoffLayout& layout,
                                         int64_t prompt_tokens, absl::Time now = absl::Now());

// Fault injection (builds with GKA_FAULT_INJECTION only; otherwise never set).
struct HandoffFaults {
  bool corrupt_byte = false;        // flip a source byte after its put, before the checksum
  absl::Duration delay_puts;        // sleep between the begin handshake and the first put
  absl::Duration delay_completion;  // sleep before the completion (e.g. past the lease)
  bool freeze = false;              // block before the completion until cancelled (60 s cap)
  bool stale_generation = false;    // the completion names generation - 1
  // The transport reports an error for a put (after the first layer's writes were posted):
  // the sender cancels, so the receiver's fence proves the memory quiescent.
  bool fail_put = false;
};

struct HandoffJob {
  ParsedTicket ticket;
  std::vector<SegmentSpec> specs;  // canonical order (shapes; any TP)
  // [prefill rank][segment]: each rank's DescribeSequence, same order.
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
  // Start until the KV puts are posted; then until the completion was acknowledged (state
  // puts, the flush of everything, the completion round trip).
  absl::Duration kv_time;
  absl::Duration state_time;
  // gka_transfer_failures_total's reason: "peer", "timeout", "lease", "checksum"; empty on
  // success and when the Prefill call itself was cancelled.
  std::string failure_reason;
};

// `device` (null or kHost: host memory) when the job's local segments are GPU memory: each
// decode rank's share goes through transfer/staging (pinned staging or direct, poly61 computed
// on the GPU and supplied with the completion) instead of plain puts.
HandoffResult RunHandoff(transfer::TransferEngine& transfer, const HandoffJob& job,
                         const DeviceTransfer* device = nullptr);

// A finished hand-off's numbers as the wire reports them (PrefillResult, MigrateResponse).
wpb::TransferStats StatsOf(const HandoffResult& result);

}  // namespace gka::worker_common
