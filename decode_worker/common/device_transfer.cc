#include "decode_worker/common/device_transfer.h"

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"

namespace gka::worker_common {

absl::StatusOr<std::unique_ptr<DeviceTransfer>> DeviceTransfer::Create(
    const std::vector<const engine::Engine*>& ranks, bool transport_supports_cuda,
    const DeviceTransferOptions& options) {
  auto dt = std::unique_ptr<DeviceTransfer>(new DeviceTransfer());
  if (ranks.empty()) return absl::InvalidArgumentError("no engine ranks");
  const bool cuda = ranks[0]->options().backend == kernels::BackendKind::kCuda;
  GKA_ASSIGN_OR_RETURN(dt->path_,
                       transfer::staging::SelectTransferPath(
                           cuda ? transfer::MemoryKind::kCuda : transfer::MemoryKind::kHost,
                           transport_supports_cuda, options.mode));
  if (!dt->on_device()) return dt;
  for (const engine::Engine* e : ranks) {
    Rank r;
    // The CPU backend with --device-transfer staged: the host copier (tests, CPU clusters).
    GKA_ASSIGN_OR_RETURN(r.copier, transfer::staging::MakeStageCopier(
                                       {.device = cuda, .ordinal = e->options().device_ordinal}));
    if (dt->path_ == transfer::staging::TransferPath::kStaged) {
      r.pool = std::make_unique<transfer::staging::StagingPool>(r.copier.get(), options.keep_bytes);
    }
    dt->ranks_.push_back(std::move(r));
  }
  GKA_LOG(INFO) << "device hand-offs: " << transfer::staging::TransferPathName(dt->path_) << " ("
                << (transport_supports_cuda ? "UCX registers CUDA memory"
                                            : "UCX has no CUDA memory type")
                << "), " << ranks.size() << " rank(s)";
  return dt;
}

absl::Status DeviceTransfer::Prewarm(const std::vector<SegmentSpec>& segments, int count) {
  if (path_ != transfer::staging::TransferPath::kStaged || count <= 0) return absl::OkStatus();
  std::vector<uint64_t> lengths;
  for (const SegmentSpec& s : segments) lengths.push_back(s.bytes);
  const uint64_t bytes = transfer::staging::StagingOffsets(lengths).back();
  const absl::Time start = absl::Now();
  for (Rank& r : ranks_) {
    if (absl::Status s = r.pool->Prewarm(bytes, count); !s.ok()) {
      return base::Annotate(s, "pinning the staging prewarm (--staging-prewarm 0 turns it off)");
    }
  }
  GKA_LOG(INFO) << "staging prewarmed: " << count << " x " << (bytes >> 20)
                << " MiB pinned per rank (" << ranks_.size() << " rank(s)) in "
                << absl::ToDoubleMilliseconds(absl::Now() - start) << " ms";
  return absl::OkStatus();
}

}  // namespace gka::worker_common
