// Device-memory hand-offs for a worker: the transfer path its state takes (chosen once at
// start-up from the engine's backend and what UCX reports about CUDA memory), and per
// tensor-parallel rank the staging copier (on that rank's GPU) and its pinned staging pool.
//
// Owns the copiers and pools. Depends on engine (backend kind, device ordinal) and
// transfer/staging; not on gRPC. Both workers use it: the prefill worker's sender threads
// (PutStaged), the decode worker's engine thread (Landing::CopyInAndVerify / VerifyInPlace).
//
//   GKA_ASSIGN_OR_RETURN(auto dt, DeviceTransfer::Create(engines, ucx->SupportsCuda(), {}));
//   if (dt->path() == transfer::staging::TransferPath::kStaged) { ... dt->pool(rank) ... }
//
// Thread-safety: immutable after Create; copiers and pools are thread-safe (staging.h).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/engine.h"
#include "common/transfer/staging/staging.h"
#include "decode_worker/common/handoff.h"

namespace gka::worker_common {

struct DeviceTransferOptions {
  transfer::staging::StagingMode mode = transfer::staging::StagingMode::kAuto;  // --device-transfer
  // Pinned staging kept per rank (StagingPool: slabs beyond it are unpinned once idle).
  uint64_t keep_bytes = uint64_t{8} << 30;
};

class DeviceTransfer {
 public:
  // `ranks`: each TP rank's engine, rank order. kHost for the CPU backend (no copiers);
  // otherwise FAILED_PRECONDITION for --device-transfer direct without UCX CUDA support, and
  // the copier's error when a rank's GPU cannot be used.
  static absl::StatusOr<std::unique_ptr<DeviceTransfer>> Create(
      const std::vector<const engine::Engine*>& ranks, bool transport_supports_cuda,
      const DeviceTransferOptions& options);

  transfer::staging::TransferPath path() const { return path_; }
  // True unless state moves in place from host memory (kHost): the staged or direct path,
  // with the poly61 checksum computed by the copiers.
  bool on_device() const { return path_ != transfer::staging::TransferPath::kHost; }
  // What the direct path registers.
  transfer::MemoryKind memory_kind() const {
    return path_ == transfer::staging::TransferPath::kDeviceDirect ? transfer::MemoryKind::kCuda
                                                                   : transfer::MemoryKind::kHost;
  }
  // Valid when on_device().
  transfer::staging::StageCopier& copier(int rank) const { return *ranks_[rank].copier; }
  // Non-null only on the staged path.
  transfer::staging::StagingPool* pool(int rank) const { return ranks_[rank].pool.get(); }
  // Staged path: pins `count` max-length shares (`segments`: one rank's segments of a
  // max-length sequence) per rank as pool slabs that hand-offs of any length share, so that
  // hand-offs do not pin memory on a hot path (a decode worker's engine thread reserves its
  // landings: pinning there stalls the decode batch). No-op on other paths.
  absl::Status Prewarm(const std::vector<SegmentSpec>& segments, int count);

 private:
  struct Rank {
    std::unique_ptr<transfer::staging::StageCopier> copier;
    std::unique_ptr<transfer::staging::StagingPool> pool;  // after the copier: destroyed first
  };
  transfer::staging::TransferPath path_ = transfer::staging::TransferPath::kHost;
  std::vector<Rank> ranks_;
};

}  // namespace gka::worker_common
