// UcxTransferEngine: the TransferEngine over UCX (UCP RMA puts + active messages).
//
// Owns one UCP context and worker, a progress thread that is the only thread touching them,
// cached endpoints per peer address, memory registrations, and the begin / done / fence
// handshakes of common/transfer/transfer_engine.h. UCX types stay in the .cc files. Depends on
// transfer, base, UCX (ucp).
//
//   GKA_ASSIGN_OR_RETURN(auto engine, UcxTransferEngine::Create({.transports = "sm"}));
//   GKA_ASSIGN_OR_RETURN(auto region, engine->RegisterMemory(pool, pool_bytes));
//   ticket.set_ucx_worker_address(engine->WorkerAddress());
//   ... see transfer_engine.h for the sender and receiver sides.
//
// Transports: UCX's own selection (UCX_TLS); tested with "tcp" and "sm" (posix, sysv, cma,
// self). "cma" alone does not work: UCX needs posix or sysv beside it for active messages.
// Over shared memory only, UCX cannot detect a dead peer: a transfer to a dead receiver ends
// at its deadline (not sooner), and its endpoint is abandoned rather than force-closed (UCX
// forbids that without peer error handling) until the engine is destroyed, with its queued
// writes (the outcome says local_may_be_read: keep those source buffers).
// Reachability: each side must reach every address the other's worker advertises; UCX's tcp
// transport dials in both directions, and a one-way route works only until UCX cannot pair a
// new connection with the one the other side opened. A StartTransfer whose request never left
// because UCX's connection did not come up ends DEADLINE_EXCEEDED saying so.
// Wire messages: one active-message id, a fixed 48-byte header (magic, version, type, ids,
// checksum, byte count, status code) and a body that starts with the sender's worker address,
// so every message can be answered. Malformed messages are logged and dropped.
//
// Thread-safety: as TransferEngine. Regions and outgoing transfers must be destroyed before
// the engine (checked). Destruction cancels what is in flight and force-closes endpoints.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/transfer/transfer_engine.h"

namespace gka::transfer::ucx {

struct UcxOptions {
  // UCX transport list in UCX_TLS syntax ("tcp", "sm", "posix,sysv,cma,self"). Empty: the
  // UCX_TLS environment variable, or UCX's default.
  std::string transports;
  // Peer failure handling (UCP_ERR_HANDLING_MODE_PEER): UCX reports dead peers and lets a
  // failed endpoint be force-closed. UCX 1.13's shared-memory transports do not support it;
  // kAuto turns it off exactly when every configured transport is shared memory. Both sides
  // of a connection must use the same setting (UCX matches endpoints by how they were made).
  enum class PeerErrorHandling { kAuto, kOn, kOff };
  PeerErrorHandling peer_error_handling = PeerErrorHandling::kAuto;
  // How bytes move. kPut: ucp_put_nbx into the receiver's registered memory (one-sided; the
  // receiver can stop a writer only by asking it: Fence waits for its confirmation).
  // kActiveMessage: eager active messages that the receiver's progress thread copies into
  // place after checking that the transfer is active and the range is registered host
  // memory (Fence is immediate and local; device memory needs kPut). kAuto picks kPut only for
  // hardware RMA transports (rc, dc, ib, cuda_ipc, gdr_copy) named in the transport list: UCX
  // emulates RMA over tcp and shared memory with active messages anyway, and 1.13's emulation
  // aborts the receiving process when a sender dies mid-put. Never force kPut over tcp.
  enum class DataPath { kAuto, kPut, kActiveMessage };
  DataPath data_path = DataPath::kAuto;
  // Active-message data path: largest message (segments are split).
  uint64_t am_chunk_bytes = 256 * 1024;
  // Shows up in UCX's own logs.
  std::string name = "gka-transfer";
  // When a transfer fails with writes in flight, how long a flush may take to prove them
  // complete before the endpoint is force-closed (which also fails other transfers on it).
  absl::Duration fail_flush_grace = absl::Seconds(1);
  // UCX keepalive period (UCX_KEEPALIVE_INTERVAL): how soon a silent dead peer is noticed.
  absl::Duration keepalive_interval = absl::Seconds(1);
  // How long StartTransfer waits for the receiver to accept (capped by the deadline).
  absl::Duration begin_timeout = absl::Seconds(10);
  // How long destruction waits for endpoints to close.
  absl::Duration shutdown_timeout = absl::Seconds(2);
};

class UcxTransferEngine final : public TransferEngine {
 public:
  // UNAVAILABLE when UCX cannot start with these transports (the message has UCX's reason).
  static absl::StatusOr<std::unique_ptr<UcxTransferEngine>> Create(const UcxOptions& options);
  ~UcxTransferEngine() override;

  const std::string& WorkerAddress() const override;
  absl::StatusOr<std::unique_ptr<MemoryRegion>> RegisterMemory(
      void* addr, uint64_t length, MemoryKind kind = MemoryKind::kHost) override;
  absl::StatusOr<std::unique_ptr<OutgoingTransfer>> StartTransfer(const TransferTarget& target,
                                                                  uint64_t transfer_id,
                                                                  absl::Time deadline) override;
  absl::Status Expect(ExpectedTransfer expected, CompletionCallback on_complete) override;
  absl::Status Fence(uint64_t transfer_id, absl::Duration timeout) override;

  // True when UCX can register CUDA device memory (never with Debian's UCX 1.13).
  bool SupportsCuda() const;

  struct Impl;

 private:
  explicit UcxTransferEngine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gka::transfer::ucx
