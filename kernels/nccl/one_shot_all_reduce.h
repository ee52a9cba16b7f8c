// The one-shot all-reduce: a small-message sum over the GPUs of one process, each rank reading
// its peers' partials straight out of their memory over NVLink/P2P in one kernel launch.
//
// Why: a decode step of the 32B model at TP 4 sums 128 messages of ~1 MB (batch × hidden bf16),
// and NCCL's ring/tree takes ~23 µs for each on 4 H100s — latency, not bandwidth (issue 5).
// Here one kernel per call copies the rank's partial into its own staging buffer, raises one
// flag per (block, peer) in the peers' memory (release, system scope), waits for the peers'
// flags on its own memory (acquire, system scope), then reads the N partials and sums them in
// fp32 in rank order 0..N-1 — the CPU reference's order (parallel::CreateInProcessGroup), so
// every rank, and the CPU, get bitwise the same result.
//
// Owns: per rank one device allocation (two staging buffers of `capacity_bytes`, the flags the
// peers raise, this rank's per-block call counter), and the peer-access set-up. Private to
// kernels/nccl (the NCCL communicator uses it for messages up to capacity_bytes when every pair
// of devices has peer access, NCCL otherwise). CUDA headers stay in the .cu.
//
// Protocol (per block b of a fixed grid, identical on every rank):
//   epoch = ++counter[b]                     (device memory: survives CUDA-graph replays)
//   staging[rank][epoch & 1] ← my partial    (slice b of the grid-stride walk)
//   for each peer p: flags[p][b][rank] = epoch            (st.release.sys)
//   wait until flags[rank][b][q] ≥ epoch for every q       (ld.acquire.sys)
//   out ← Σ_{q = 0..N-1} staging[q][epoch & 1]             (fp32, rank order)
// Above two_shot_min_bytes the same group runs the two-shot variant (a reduce-scatter then an
// all-gather in one kernel, one more flag round trip): each rank sums only its 1/N segment,
// reading that segment from every peer, publishes the sums in its staging buffer, then reads
// the other segments' sums from their owners — 2·(N − 1)/N of the message over NVLink instead
// of N − 1 messages, with the same fp32 rank-order sums (same bits). Ranks choose by message
// size, so all ranks take the same path for the same call.
// Two staging buffers suffice: rank r's call k + 2 overwrites the buffer of call k only after
// r's call k + 1 saw every peer's k + 1 flag, raised by the peer's kernel k + 1, which started
// after the peer's kernel k — the last reader of that buffer — finished.
//
//   GKA_ASSIGN_OR_RETURN(auto group, OneShotGroup::Create({0, 1, 2, 3}, 4 << 20));
//   // thread of rank r, device r current, partial [T, hidden] bf16 on `stream`:
//   GKA_RETURN_IF_ERROR(group->AllReduceSum(r, partial.ptr, partial.numel(), DType::kBF16,
//                                           stream));
//
// Thread-safety: rank r's calls come from rank r's thread only; ranks must make the same calls
// in the same order (as with NCCL). Every rank's kernel spins until all peers have arrived, so
// a rank that never calls leaves the others waiting, as NCCL does.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor/dtype.h"

namespace gka::kernels::nccl {

class OneShotGroup {
 public:
  static constexpr int kMaxRanks = 8;

  // One rank per listed device (rank r on devices[r]); enables peer access between every pair.
  // FailedPrecondition when some pair has no peer access (the caller then uses NCCL);
  // InvalidArgument for fewer than 2 or more than kMaxRanks devices or a capacity that is not a
  // positive multiple of 16 bytes.
  // Messages of at least this many bytes take the two-shot kernel. Measured on 4× H100 SXM
  // (all_reduce_bench, tests/perf/RESULTS.md issue 5): two-shot loses at 522,240 bytes (17.7 vs
  // 14.5 µs) and wins at 1,034,240 (a decode step's 101 × 5120 bf16) and every size above.
  static constexpr int64_t kDefaultTwoShotMinBytes = 1'000'000;
  static absl::StatusOr<std::unique_ptr<OneShotGroup>> Create(
      const std::vector<int>& devices, int64_t capacity_bytes,
      int64_t two_shot_min_bytes = kDefaultTwoShotMinBytes);
  ~OneShotGroup();
  OneShotGroup(const OneShotGroup&) = delete;
  OneShotGroup& operator=(const OneShotGroup&) = delete;

  int world_size() const { return static_cast<int>(devices_.size()); }
  int64_t capacity_bytes() const { return capacity_; }
  int64_t two_shot_min_bytes() const { return two_shot_min_; }
  // Whether a message of `numel` elements of `dtype` at `ptr` takes this path: F32 or BF16,
  // at most capacity_bytes, 16-byte aligned and a multiple of 16 bytes (whole vectors).
  bool Fits(const void* ptr, int64_t numel, tensor::DType dtype) const;
  // Whether a message that Fits takes the two-shot kernel (at least two_shot_min_bytes and at
  // least one 16-byte vector per rank).
  bool UsesTwoShot(int64_t numel, tensor::DType dtype) const;

  // data [numel] dtype, device memory of rank `rank`'s device, summed in place over the ranks;
  // enqueued on `stream` (a cudaStream_t of that device; capturable into a CUDA graph).
  // InvalidArgument when !Fits(...) or the rank is out of range.
  absl::Status AllReduceSum(int rank, void* data, int64_t numel, tensor::DType dtype, void* stream);

 private:
  OneShotGroup(std::vector<int> devices, int64_t capacity, int64_t two_shot_min, int blocks)
      : devices_(std::move(devices)),
        capacity_(capacity),
        two_shot_min_(two_shot_min),
        blocks_(blocks) {}

  std::vector<int> devices_;
  int64_t capacity_ = 0;
  int64_t two_shot_min_ = 0;
  // The grid of every call: the same on every rank and every call (the flags are per block),
  // and no larger than any device's SM count, so all blocks of a rank are resident at once
  // (a block spinning on its flag never waits for a block that cannot start).
  int blocks_ = 0;
  // Per rank, one cudaMalloc on its device: a 4 KiB header (per-block call counters, the flags
  // [block][rank] the peers raise) then the two staging buffers of capacity bytes; zeroed at
  // Create, freed at destruction (after the device's work). Peers address it through P2P.
  std::vector<void*> memory_;
};

}  // namespace gka::kernels::nccl
