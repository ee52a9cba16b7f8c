// Moving a sequence's state out of and into device memory: which path a transfer takes
// (host memory, device memory registered with UCX, or pinned host staging), the staging copies
// with the device checksum fused into them, and their pipelining with the puts.
//
// Owns: the path selection, staging buffers and their pool, the sender's stage-by-stage
// copy → put pipeline, the receiver's landing layout and its copy-in + verify. Depends on
// transfer (interface only, never UCX), kernels' copy + checksum (CPU reference; the CUDA
// copier lives in cuda_stage_copier.h and is reached through MakeStageCopier). Never the
// engine or gRPC: callers describe memory as plain (pointer, length) segments.
//
// The checksum of a device transfer is poly61 (kernels/api/copy_checksum.h) over the same
// stream as XXH3's definition (bytes in target-address order): the sender supplies it with
// OutgoingTransfer::SupplyChecksum, the receiver's Expect sets caller_verifies_checksum and
// compares it while copying the landing into device memory.
//
//   // Sender (after prefill; device segments in canonical order, each with its stage):
//   GKA_ASSIGN_OR_RETURN(auto copier, MakeStageCopier({.device = true, .ordinal = gpu}));
//   StagingPool pool(copier.get());
//   GKA_ASSIGN_OR_RETURN(auto t, transfer.StartTransfer(target, id, deadline));
//   std::unique_ptr<StagedSender> keep;  // holds the staging until the outcome
//   GKA_ASSIGN_OR_RETURN(StagedSend s, PutStaged(*t, *copier, &pool, segments, nullptr, &keep));
//   t->SupplyChecksum(s.checksum);
//   TransferOutcome o = t->FinishAndWait(payload);
//   // Receiver (at Reserve): landing = pinned bytes laid out like the segments.
//   GKA_ASSIGN_OR_RETURN(Landing l, Landing::Create(pool, device_segments));
//   region = transfer.RegisterMemory(l.data(), l.size());  ...ticket points into it...
//   // On completion:
//   GKA_RETURN_IF_ERROR(l.CopyInAndVerify(*copier, completion.checksum, completion.bytes));
//
// Thread-safety: SelectTransferPath and StreamOffsets are pure; StageCopier implementations
// and StagingPool are thread-safe; a CopyJob, a Landing and a PooledStaging belong to one
// thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/transfer/transfer_engine.h"
#include "kernels/api/backend.h"
#include "kernels/api/copy_checksum.h"

namespace gka::transfer::staging {

// --- which path ----------------------------------------------------------------------------

enum class TransferPath {
  kHost,          // state in host memory: registered directly, XXH3 by the transfer engine
  kDeviceDirect,  // device memory registered with UCX (cuda memory type), poly61 on the GPU
  kStaged,        // device memory through pinned host staging, poly61 fused with the copies
};

// --device-transfer: auto (direct when the transport takes device memory, else staged),
// staged (always stage), direct (fail unless the transport takes device memory).
enum class StagingMode { kAuto, kStaged, kDirect };

absl::string_view TransferPathName(TransferPath path);
// INVALID_ARGUMENT naming the accepted values.
absl::StatusOr<StagingMode> ParseStagingMode(absl::string_view text);

// The path for state living in `state_memory`, given whether the transport reports the CUDA
// memory type (UcxTransferEngine::SupportsCuda: ucp_context_query's memory_types). Host
// memory moves in place (kHost) unless kStaged is asked for: then it takes the staged path with
// the host copier (no gain; it lets CPU-only clusters run that code end to end).
// FAILED_PRECONDITION for kDirect without transport support (saying which UCX is needed).
absl::StatusOr<TransferPath> SelectTransferPath(MemoryKind state_memory,
                                                bool transport_supports_cuda, StagingMode mode);

// --- the checksum stream ---------------------------------------------------------------------

struct PlacedRange {
  uint64_t target_addr = 0;  // where the bytes land in the receiver's memory (the sort key)
  uint64_t length = 0;
};
// Each range's offset in the checksummed stream (concatenation in target-address order), in
// the input's order. INVALID_ARGUMENT when two ranges overlap in the target.
absl::StatusOr<std::vector<uint64_t>> StreamOffsets(const std::vector<PlacedRange>& ranges);

// --- copies ------------------------------------------------------------------------------------

// Host memory for staging: pinned (page-locked, device-mapped) for a CUDA copier, plain
// aligned memory for the host copier. Frees on destruction; must not be destroyed while a
// registration or a copy still uses it.
class StagingBuffer {
 public:
  virtual ~StagingBuffer() = default;
  virtual void* data() const = 0;
  virtual uint64_t size() const = 0;
};

// Copies started by one StageCopier::Start, in stream order after every earlier Start.
class CopyJob {
 public:
  virtual ~CopyJob() = default;
  // True once the copies (and the checksum) are complete; never blocks.
  virtual bool Ready() = 0;
  // Blocks until complete; the ranges' poly61 sum mod P (add sums of several jobs with
  // kernels::AddMod61, finalize once). A job is waited for at most once.
  virtual absl::StatusOr<uint64_t> Wait() = 0;
};

class StageCopier {
 public:
  virtual ~StageCopier() = default;
  virtual absl::string_view name() const = 0;
  // Where device segments live for this copier (kCuda for the CUDA copier).
  virtual MemoryKind memory_kind() const = 0;
  virtual absl::StatusOr<std::unique_ptr<StagingBuffer>> AllocateStaging(uint64_t bytes) = 0;
  // Enqueues the copies (dst null: checksum only) on the copier's stream, after `after` (a
  // point in the compute stream that wrote the sources; null: nothing to wait for). The memory
  // must stay put until the job is Ready.
  virtual absl::StatusOr<std::unique_ptr<CopyJob>> Start(
      std::vector<kernels::CopyChecksumRange> ranges, const kernels::StreamMark* after) = 0;
};

struct StageCopierOptions {
  bool device = false;  // false: the host copier (memcpy + the CPU reference checksum)
  int ordinal = 0;      // CUDA device
};
// UNIMPLEMENTED for device = true in a build without CUDA; the CUDA copier's errors otherwise.
absl::StatusOr<std::unique_ptr<StageCopier>> MakeStageCopier(const StageCopierOptions& options);

// Hands out staging memory carved from a few large pinned slabs. Pinning costs ~0.65 ms per MiB
// in the caller's thread, and a decode worker acquires landings on its engine thread, so a pin
// there stalls the decode batch (measured: 12 x 162 MiB = 1.3 s on 32B at TP 2, 4x H100,
// tests/perf/RESULTS.md).
// Workers therefore pin slabs once at startup (Prewarm) and every hand-off of any size takes a
// sub-range of them (first fit, 2 MiB granules, neighbours coalesced on release). Only when no
// slab has room does Acquire pin a new slab of the request's size (a miss, logged and counted).
// Slabs beyond `keep_bytes` in all are freed as soon as nothing in them is leased.
class StagingPool {
 public:
  explicit StagingPool(StageCopier* copier, uint64_t keep_bytes = uint64_t{8} << 30);
  ~StagingPool();  // every Lease must be gone
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  struct Slab;
  // `size` bytes at `data`, inside one slab, until destroyed.
  class Lease {
   public:
    Lease(StagingPool* pool, Slab* slab, uint64_t offset, uint64_t size)
        : pool_(pool), slab_(slab), offset_(offset), size_(size) {}
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    char* data() const;
    uint64_t size() const { return size_; }

   private:
    StagingPool* pool_;
    Slab* slab_;
    uint64_t offset_;
    uint64_t size_;
  };
  // At least `bytes` (rounded up to 2 MiB). A miss pins a new slab in the caller's thread.
  absl::StatusOr<std::unique_ptr<Lease>> Acquire(uint64_t bytes);
  // Pins `count` slabs of `bytes` now (at startup, off any hot path), within keep_bytes. Any
  // mix of smaller hand-offs shares them. The copier's errors (RESOURCE_EXHAUSTED when the host
  // cannot pin that much).
  absl::Status Prewarm(uint64_t bytes, int count);
  // Acquires that had to pin a new slab since the pool was made (prewarming excluded).
  int64_t misses() const;
  // Pinned bytes held now (leased or free).
  uint64_t pinned_bytes() const;
  StageCopier& copier() const { return *copier_; }

 private:
  // Pins a slab of `size` (in the caller's thread, outside the lock) and adds it: free, or
  // `lease_all` to the caller.
  absl::StatusOr<Slab*> AddSlab(uint64_t size, bool lease_all);
  void Release(Slab* slab, uint64_t offset, uint64_t size);
  StageCopier* const copier_;
  const uint64_t keep_bytes_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Slab>> slabs_ ABSL_GUARDED_BY(mu_);
  uint64_t pinned_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

// Offset of each segment in a staging buffer that holds them in order, 16-byte aligned (the
// copy kernel's fast path); the last element is the total size.
std::vector<uint64_t> StagingOffsets(const std::vector<uint64_t>& lengths);

// --- the sender ----------------------------------------------------------------------------

// One piece of device memory to write: `length` bytes at `src` to `remote_addr` of target
// region `region`. Segments of one `stage` go out together; stages must be nondecreasing, in
// the order the data becomes ready (a layer's KV pages, then its states). `source` picks the
// copier (the GPU holding `src`: a prefill TP rank when ranks are resharded).
struct DeviceSegment {
  const void* src = nullptr;
  uint32_t region = 0;
  uint64_t remote_addr = 0;
  uint64_t length = 0;
  int32_t stage = 0;
  int32_t source = 0;
};

struct StagedSend {
  uint64_t checksum = 0;  // poly61, finalized: OutgoingTransfer::SupplyChecksum's value
  uint64_t bytes = 0;
  int32_t stages = 0;
  // Time the sender thread spent waiting for staging copies (the copy not hidden behind the
  // puts or behind earlier work).
  absl::Duration copy_wait;
};

// One transfer's device-side sending. Two ways to drive it:
//  - all at once (a finished sequence): Start enqueues every stage's device → staging copy
//    (checksum fused) on the copiers' streams at once; PutAll puts each stage as soon as its
//    copy is done, so stage k+1 copies while stage k's puts move. Several transfers (one per
//    decode rank) are Started before the first PutAll, so they copy concurrently.
//  - streamed (a sequence still being prefilled): Create fixes the layout (every segment's
//    destination and size, sources unknown yet); Copy enqueues a group of segments as soon as
//    their sources are final (after the compute stream's marks); PutCopied puts the groups whose
//    copies are done, in order; Checksum once every segment was copied and put.
// Staged path (pool non-null): puts from the pinned staging, which this object holds until
// destroyed — keep it until the transfer's outcome. Direct path (pool null): puts straight from
// device memory, the checksum from checksum-only jobs. Destroying it waits for its copies.
class StagedSender {
 public:
  // INVALID_ARGUMENT for an empty segment, a stage going backwards, an unknown source or
  // overlapping destinations; the pool's or copiers' errors.
  static absl::StatusOr<std::unique_ptr<StagedSender>> Start(std::vector<StageCopier*> copiers,
                                                             StagingPool* pool,
                                                             std::vector<DeviceSegment> segments);
  // The streamed form: `segments`' src may be null (Copy supplies it); stage is unused.
  static absl::StatusOr<std::unique_ptr<StagedSender>> Create(std::vector<StageCopier*> copiers,
                                                              StagingPool* pool,
                                                              std::vector<DeviceSegment> segments);
  ~StagedSender();

  // `cancelled` (may be empty) is checked between stages: CANCELLED. Put's errors are returned
  // as they are. Call once, after Start.
  absl::StatusOr<StagedSend> PutAll(OutgoingTransfer& transfer,
                                    const std::function<bool()>& cancelled);

  // Streamed: enqueues the copies of segments `which` (indices into Create's segments, each
  // copied once) reading `sources[k]` for which[k], on each source's copier after
  // `after[source]` (null or missing: no wait). INVALID_ARGUMENT for an index out of range or
  // already copied, or a null source.
  absl::Status Copy(const std::vector<size_t>& which, const std::vector<const void*>& sources,
                    const std::vector<std::shared_ptr<kernels::StreamMark>>& after);
  // Puts the copied groups in Copy order: those whose copies are done (`wait`: all of them,
  // blocking). Returns the bytes put.
  absl::StatusOr<uint64_t> PutCopied(OutgoingTransfer& transfer, bool wait);
  // Puts the next copied group (in Copy order), waiting for its copies: its bytes, 0 when every
  // copied group was put. Lets a caller interleave several senders group by group.
  absl::StatusOr<uint64_t> PutNextCopied(OutgoingTransfer& transfer);
  // Once every segment was copied and put: OutgoingTransfer::SupplyChecksum's value.
  // FAILED_PRECONDITION naming how many segments are missing otherwise.
  absl::StatusOr<StagedSend> Checksum() const;
  // Waits for every copy enqueued (their sources may be freed after).
  void WaitForCopies();

 private:
  struct Stage;
  StagedSender() = default;
  // Puts the oldest group not put yet if its copies are done (`wait`: once they are); false
  // when there was none to put.
  absl::StatusOr<bool> PutNextGroup(OutgoingTransfer& transfer, bool wait);
  std::vector<StageCopier*> copiers_;
  std::vector<DeviceSegment> segments_;
  std::vector<uint64_t> stream_;   // each segment's offset in the checksummed stream
  std::vector<uint64_t> offsets_;  // in the staging
  std::vector<bool> copied_;
  std::unique_ptr<StagingPool::Lease> staging_;
  std::vector<Stage> stages_;  // copy groups, in Copy order
  size_t next_put_ = 0;        // first group not put yet
  uint64_t bytes_ = 0;
  uint64_t sum_ = 0;  // poly61 of the groups put so far (not finalized)
  uint64_t put_bytes_ = 0;
  absl::Duration copy_wait_;
};

// Start + PutAll for one transfer from one GPU. `staging` receives the sender (it holds the
// staging the puts read): keep it until the outcome.
absl::StatusOr<StagedSend> PutStaged(OutgoingTransfer& transfer, StageCopier& copier,
                                     StagingPool* pool, const std::vector<DeviceSegment>& segments,
                                     const std::function<bool()>& cancelled,
                                     std::unique_ptr<StagedSender>* sender);

// --- the receiver ----------------------------------------------------------------------------

struct DeviceRange {
  void* ptr = nullptr;  // device memory (host memory for the host copier)
  uint64_t bytes = 0;
};

// Where a staged transfer lands: pinned host memory holding the reservation's segments in
// order (StagingOffsets), to be registered as one region for the sender's puts.
class Landing {
 public:
  static absl::StatusOr<std::unique_ptr<Landing>> Create(StagingPool& pool,
                                                         std::vector<DeviceRange> segments);
  char* data() const { return staging_->data(); }
  uint64_t size() const { return offsets_.back(); }
  // Where segment i lands.
  char* landing(size_t i) const { return staging_->data() + offsets_[i]; }
  size_t num_segments() const { return segments_.size(); }
  // The Expect's verify_ranges (bounds of the sender's writes).
  std::vector<LocalRange> VerifyRanges() const;

  // Copies the landing into the device segments and compares the poly61 checksum of what it
  // copied with the sender's: DATA_LOSS on a mismatch or a byte count that differs (the device
  // memory then holds the bad bytes; the caller frees it). Blocks until the copy is done.
  absl::Status CopyInAndVerify(StageCopier& copier, uint64_t sender_checksum,
                               uint64_t sender_bytes);
  // The same in two steps, so the calling thread (a decode engine thread between steps) need
  // not wait for the copy: StartCopyIn enqueues it; FinishCopyIn (blocks only if the job is
  // not Ready yet) compares the checksums. The landing must outlive the job.
  absl::StatusOr<std::unique_ptr<CopyJob>> StartCopyIn(StageCopier& copier);
  absl::Status FinishCopyIn(CopyJob& job, uint64_t sender_checksum, uint64_t sender_bytes);

 private:
  Landing() = default;
  std::unique_ptr<StagingPool::Lease> staging_;
  std::vector<DeviceRange> segments_;
  std::vector<uint64_t> offsets_;
};

// Direct device path, receiver side: the poly61 checksum of device memory that UCX wrote in
// place, compared with the sender's (DATA_LOSS on mismatch). Ranges are the receiver's own
// addresses (its target addresses).
absl::Status VerifyInPlace(StageCopier& copier, const std::vector<DeviceRange>& segments,
                           uint64_t sender_checksum, uint64_t sender_bytes);

}  // namespace gka::transfer::staging
