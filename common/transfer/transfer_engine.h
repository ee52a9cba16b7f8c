// TransferEngine: one-sided bulk writes of KV pages and GKA states between workers.
//
// Owns the interface and its plain-C++ vocabulary (no protobuf, no UCX): memory regions a
// receiver registers, descriptors of what a sender writes where, outcomes that say whether
// remote memory may still be written, completions a receiver verifies. `ucx/` implements it
// with UCX; the control plane (gRPC tickets) carries addresses and keys as opaque bytes.
// Depends on base, Abseil.
//
// Protocol of one transfer (transfer_id = the reservation's generation, unique per receiver):
//   receiver: region = RegisterMemory(pool); ticket <- {WorkerAddress(), region->remote()}
//             Expect({transfer_id, lease, ranges to verify}, on_complete)
//   sender:   t = StartTransfer(target, transfer_id, deadline)   // handshake: receiver
//             t->Put(layer 0 pages); t->Put(layer 1 pages); ...  //   accepts or refuses
//             outcome = t->FinishAndWait(payload /*first token*/)
//             // = all puts flushed (complete at the target), then a completion message with
//             //   the checksum; OK only once the receiver acknowledged (and verified) it.
//   receiver: on_complete(TransferCompletion{checksum verified, payload})
//   on lease expiry or release: receiver calls Fence(transfer_id): OK means no write of this
//   transfer can land any more (memory reusable); an error means quarantine the memory.
//   (How bytes move is the implementation's business: UCX puts, or messages the receiver
//   places itself; the latter make Fence immediate and refuse writes outside the ranges.)
//
//   // Sender side, with a ticket rank converted to a TransferTarget:
//   GKA_ASSIGN_OR_RETURN(auto t, engine->StartTransfer(target, ticket.transfer_id, deadline));
//   TransferDescriptor d;
//   d.Add(src_page_ptr, /*region=*/0, dst_page_addr, page_bytes);
//   GKA_RETURN_IF_ERROR(t->Put(d));
//   TransferOutcome out = t->FinishAndWait(first_token_bytes);
//   if (!out.status.ok() && out.remote_may_be_written) { /* report: receiver must quarantine */ }
//
// Thread-safety: TransferEngine methods are thread-safe. An OutgoingTransfer is used by one
// thread at a time. Callbacks run on the engine's progress thread: they must be short, must
// not block, and must not call blocking engine methods (those return FAILED_PRECONDITION
// there instead of deadlocking).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace gka::transfer {

enum class MemoryKind {
  kHost,
  // CUDA device memory: accepted only when the transport reports the cuda memory type
  // (Debian's UCX does not; stage through pinned host memory then).
  kCuda,
};

// What a receiver publishes about one registered region (a ticket's MemoryRegion).
struct RemoteRegion {
  uint64_t remote_addr = 0;  // address in the receiver's address space
  uint64_t length = 0;       // bytes
  std::string packed_rkey;   // opaque transport key
};

// A registration of memory for remote writes. Deregisters on destruction. Destroying it does
// not stop a peer that is still writing: Fence the transfers that target it first. Must be
// destroyed before the engine that made it.
class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
  virtual void* addr() const = 0;
  virtual uint64_t length() const = 0;
  virtual MemoryKind kind() const = 0;
  virtual const RemoteRegion& remote() const = 0;
};

// Where a sender writes: the receiver's engine address and its regions (ticket order).
struct TransferTarget {
  std::string worker_address;
  std::vector<RemoteRegion> regions;
};

// One contiguous write: `length` bytes from `local` to `remote_addr`, which must lie inside
// target region `region`.
struct Segment {
  const void* local = nullptr;
  uint32_t region = 0;
  uint64_t remote_addr = 0;
  uint64_t length = 0;
};

struct TransferDescriptor {
  std::vector<Segment> segments;

  // Appends a segment, merging it into the previous one when both sides continue it (a run
  // of consecutive pages becomes one write).
  TransferDescriptor& Add(const void* local, uint32_t region, uint64_t remote_addr,
                          uint64_t length);
  uint64_t TotalBytes() const;
};

// INVALID_ARGUMENT naming the first segment that is empty, has a null source, names a region
// the target lacks, or falls outside its region.
absl::Status ValidateDescriptor(const TransferDescriptor& descriptor, const TransferTarget& target);

// How a transfer ended, as the sender sees it.
struct TransferOutcome {
  // OK: every byte is at the receiver, which acknowledged the completion (and, when it was
  //     asked to, verified the checksum).
  // DATA_LOSS: the receiver's checksum differs. NOT_FOUND / DEADLINE_EXCEEDED /
  // FAILED_PRECONDITION: the receiver refused the transfer (unknown id, lease expired).
  // CANCELLED: cancelled by the sender or fenced by the receiver. DEADLINE_EXCEEDED: the
  // sender's deadline passed. UNAVAILABLE: the peer died or is unreachable.
  absl::Status status;
  // Fail closed: true when this side cannot prove that no write of this transfer will still
  // land in the receiver's memory (puts were in flight when the transfer failed, and the
  // endpoint had to be force-closed). The receiver must then quarantine the memory. Also
  // false for every outcome of a transfer that wrote nothing.
  bool remote_may_be_written = false;
  // True only when the transport could neither complete nor cancel the writes (UCX shared
  // memory to a dead receiver): the source buffers may still be referenced by queued
  // operations until the engine is destroyed; keep them allocated. Otherwise the engine
  // reads none of the transfer's source buffers after the outcome.
  bool local_may_be_read = false;
  uint64_t bytes = 0;
  uint64_t checksum = 0;
  uint32_t segments = 0;
  // StartTransfer until the outcome.
  absl::Duration elapsed;
};

using OutcomeCallback = absl::AnyInvocable<void(TransferOutcome)>;

// The sender's handle on one transfer. Finish or Cancel it exactly once; destroying an
// unfinished transfer cancels it without telling anyone when the source buffers are free
// (they then must live as long as the engine).
class OutgoingTransfer {
 public:
  virtual ~OutgoingTransfer() = default;

  // Posts the writes (non-blocking; the bytes move in the background). Source memory must
  // stay unchanged until the outcome. FAILED_PRECONDITION after Finish/Cancel; CANCELLED
  // when the receiver fenced the transfer; INVALID_ARGUMENT for a bad descriptor (nothing
  // posted); the transfer's error once it failed.
  virtual absl::Status Put(const TransferDescriptor& descriptor) = 0;

  // Waits until every put is complete at the target, then sends the completion message
  // carrying the checksum and `payload` (at most kMaxPayloadBytes), and reports the outcome
  // once the receiver acknowledged it.
  virtual void Finish(std::string payload, OutcomeCallback on_outcome) = 0;

  // Stops: waits for posted puts to complete (or force-closes the endpoint if they cannot),
  // tells the receiver, reports CANCELLED.
  virtual void Cancel(OutcomeCallback on_outcome) = 0;

  virtual uint64_t transfer_id() const = 0;

  // The caller computed the transfer checksum itself (device memory: transfer/staging's
  // poly61, on the GPU, fused with the staging copies); Finish sends it instead of hashing the
  // sources on the host. Call before Finish.
  void SupplyChecksum(uint64_t checksum) { supplied_checksum_ = checksum; }

  // Blocking forms (not on the progress thread).
  TransferOutcome FinishAndWait(std::string payload);
  TransferOutcome CancelAndWait();

  static constexpr uint64_t kMaxPayloadBytes = 64 * 1024;

 protected:
  std::optional<uint64_t> supplied_checksum_;
};

// What a receiver learns when a transfer completed.
struct TransferCompletion {
  uint64_t transfer_id = 0;
  uint64_t bytes = 0;
  // The sender's checksum; equal to the receiver's when `verified`.
  uint64_t checksum = 0;
  bool verified = false;
  std::string payload;
};

struct LocalRange {
  const void* addr = nullptr;
  uint64_t length = 0;
};

struct ExpectedTransfer {
  uint64_t transfer_id = 0;
  // A sender that tries to begin after this is refused (DEADLINE_EXCEEDED).
  absl::Time lease_deadline = absl::InfiniteFuture();
  // Host ranges the transfer must fill exactly; when non-empty the engine verifies the
  // checksum and byte count before reporting completion (DATA_LOSS otherwise), and an engine
  // that places bytes itself refuses writes outside them. Empty: the caller verifies (e.g.
  // device memory) with ChecksumInAddressOrder.
  std::vector<LocalRange> verify_ranges;
  // The ranges still bound the writes and the byte count is checked, but the checksum is the
  // caller's to verify (it lands in TransferCompletion::checksum, `verified` false): staged
  // device transfers check poly61 on the GPU while copying the staging into place.
  bool caller_verifies_checksum = false;
};

// Called exactly once: with the completion, or DATA_LOSS (checksum/bytes mismatch), or
// CANCELLED (fenced, cancelled by the sender, or engine shut down).
using CompletionCallback = absl::AnyInvocable<void(absl::StatusOr<TransferCompletion>)>;

class TransferEngine {
 public:
  virtual ~TransferEngine() = default;

  // This engine's address for peers (opaque bytes; a ticket's ucx_worker_address).
  virtual const std::string& WorkerAddress() const = 0;

  // Registers [addr, addr + length) for remote writes by peers.
  virtual absl::StatusOr<std::unique_ptr<MemoryRegion>> RegisterMemory(
      void* addr, uint64_t length, MemoryKind kind = MemoryKind::kHost) = 0;

  // Sender: connects (cached per address), unpacks the target's keys and performs the
  // begin handshake; blocks until the receiver accepted or refused. `deadline` (finite: the
  // ticket's lease, or sooner) bounds the whole transfer, Finish included. Errors:
  // INVALID_ARGUMENT (bad address or key, infinite deadline), the receiver's refusal (see
  // TransferOutcome), UNAVAILABLE, DEADLINE_EXCEEDED. Nothing is written when this fails.
  virtual absl::StatusOr<std::unique_ptr<OutgoingTransfer>> StartTransfer(
      const TransferTarget& target, uint64_t transfer_id, absl::Time deadline) = 0;

  // Receiver: accept one transfer with this id. ALREADY_EXISTS if it is already expected.
  virtual absl::Status Expect(ExpectedTransfer expected, CompletionCallback on_complete) = 0;

  // Receiver: makes sure no write of `transfer_id` can land any more. OK: quiescent (it
  // completed, never began, the receiver itself refuses its writes from now on, or the
  // sender confirmed it stopped after flushing; unknown ids are quiescent too), and the
  // expectation is gone (its callback got CANCELLED unless it had completed). Otherwise the memory
  // may still be written and must be quarantined: DEADLINE_EXCEEDED (the sender did not confirm in
  // `timeout`), UNAVAILABLE (the sender is gone: a dead process writes no more, but bytes it sent
  // may still be in flight in the transport for a while), ABORTED (the sender had to force-close
  // with writes in flight). The expectation stays until a later Fence succeeds.
  virtual absl::Status Fence(uint64_t transfer_id, absl::Duration timeout) = 0;
};

}  // namespace gka::transfer
