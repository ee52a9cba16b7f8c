#include "common/transfer/staging/staging.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "kernels/cpu/ops.h"

namespace gka::transfer::staging {
namespace {

constexpr uint64_t kAlign = 16;
constexpr uint64_t kPoolGranule = uint64_t{2} << 20;

uint64_t RoundUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// --- the host copier: the same staging code with memcpy in place of the device copies -------

class HostBuffer final : public StagingBuffer {
 public:
  explicit HostBuffer(uint64_t bytes)
      : data_(std::aligned_alloc(4096, RoundUp(std::max<uint64_t>(bytes, 1), 4096))),
        size_(bytes) {}
  ~HostBuffer() override { std::free(data_); }
  void* data() const override { return data_; }
  uint64_t size() const override { return size_; }

 private:
  void* data_;
  uint64_t size_;
};

class DoneJob final : public CopyJob {
 public:
  explicit DoneJob(uint64_t sum) : sum_(sum) {}
  bool Ready() override { return true; }
  absl::StatusOr<uint64_t> Wait() override { return sum_; }

 private:
  uint64_t sum_;
};

class HostStageCopier final : public StageCopier {
 public:
  absl::string_view name() const override { return "host"; }
  MemoryKind memory_kind() const override { return MemoryKind::kHost; }
  absl::StatusOr<std::unique_ptr<StagingBuffer>> AllocateStaging(uint64_t bytes) override {
    auto b = std::make_unique<HostBuffer>(bytes);
    if (b->data() == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("no host memory for ", bytes, " bytes"));
    }
    return b;
  }
  absl::StatusOr<std::unique_ptr<CopyJob>> Start(std::vector<kernels::CopyChecksumRange> ranges,
                                                 const kernels::StreamMark* after) override {
    // Host memory written by the CPU backend is final when its op returned: no mark to wait on.
    (void)after;
    return std::make_unique<DoneJob>(kernels::cpu::CopyChecksum(ranges));
  }
};

absl::Status CompareChecksums(uint64_t ours, uint64_t bytes, uint64_t sender_checksum,
                              uint64_t sender_bytes) {
  if (bytes != sender_bytes) {
    return absl::DataLossError(
        absl::StrCat("the sender wrote ", sender_bytes, " bytes, the reservation holds ", bytes));
  }
  if (ours != sender_checksum) {
    return absl::DataLossError(absl::StrCat("poly61 checksum mismatch (sender 0x",
                                            absl::Hex(sender_checksum), ", receiver 0x",
                                            absl::Hex(ours), " over ", bytes, " bytes)"));
  }
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<StageCopier> MakeHostStageCopier() { return std::make_unique<HostStageCopier>(); }

// --- path selection ---------------------------------------------------------------------------

absl::string_view TransferPathName(TransferPath path) {
  switch (path) {
    case TransferPath::kHost:
      return "host";
    case TransferPath::kDeviceDirect:
      return "device-direct";
    case TransferPath::kStaged:
      return "staged";
  }
  return "?";
}

absl::StatusOr<StagingMode> ParseStagingMode(absl::string_view text) {
  if (text == "auto") return StagingMode::kAuto;
  if (text == "staged") return StagingMode::kStaged;
  if (text == "direct") return StagingMode::kDirect;
  return absl::InvalidArgumentError(
      absl::StrCat("--device-transfer '", text, "': expected auto, staged or direct"));
}

absl::StatusOr<TransferPath> SelectTransferPath(MemoryKind state_memory,
                                                bool transport_supports_cuda, StagingMode mode) {
  if (state_memory == MemoryKind::kHost) {
    // Staging host memory gains nothing, but asked for explicitly it runs the staged path's
    // code (landing, copy-in, poly61) on CPU-only machines: CPU clusters test it end to end.
    return mode == StagingMode::kStaged ? TransferPath::kStaged : TransferPath::kHost;
  }
  switch (mode) {
    case StagingMode::kStaged:
      return TransferPath::kStaged;
    case StagingMode::kAuto:
      return transport_supports_cuda ? TransferPath::kDeviceDirect : TransferPath::kStaged;
    case StagingMode::kDirect:
      if (!transport_supports_cuda) {
        return absl::FailedPreconditionError(
            "--device-transfer direct: this UCX does not report the cuda memory type "
            "(ucp_context_query memory_types); it needs UCX built with CUDA support (the "
            "cuda_copy/cuda_ipc transports), or use auto/staged");
      }
      return TransferPath::kDeviceDirect;
  }
  return absl::InvalidArgumentError("unknown staging mode");
}

// --- stream layout ------------------------------------------------------------------------------

absl::StatusOr<std::vector<uint64_t>> StreamOffsets(const std::vector<PlacedRange>& ranges) {
  std::vector<size_t> order(ranges.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return ranges[a].target_addr < ranges[b].target_addr; });
  std::vector<uint64_t> offsets(ranges.size());
  uint64_t pos = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const PlacedRange& r = ranges[order[k]];
    if (k > 0) {
      const PlacedRange& prev = ranges[order[k - 1]];
      if (prev.target_addr + prev.length > r.target_addr) {
        return absl::InvalidArgumentError(
            absl::StrCat("ranges overlap in the target: [0x", absl::Hex(prev.target_addr), ", +",
                         prev.length, ") and [0x", absl::Hex(r.target_addr), ", +", r.length, ")"));
      }
    }
    offsets[order[k]] = pos;
    pos += r.length;
  }
  return offsets;
}

std::vector<uint64_t> StagingOffsets(const std::vector<uint64_t>& lengths) {
  std::vector<uint64_t> offsets;
  offsets.reserve(lengths.size() + 1);
  uint64_t pos = 0;
  for (uint64_t n : lengths) {
    offsets.push_back(pos);
    pos = RoundUp(pos + n, kAlign);
  }
  offsets.push_back(pos);
  return offsets;
}

// --- pool ---------------------------------------------------------------------------------------

// One pinned allocation and its free ranges (offset -> length, disjoint, never adjacent).
struct StagingPool::Slab {
  std::unique_ptr<StagingBuffer> buffer;
  std::map<uint64_t, uint64_t> free;
  uint64_t leased = 0;

  // First fit: the offset of `size` bytes taken from the lowest free range that holds them.
  std::optional<uint64_t> Take(uint64_t size) {
    for (auto it = free.begin(); it != free.end(); ++it) {
      if (it->second < size) continue;
      const uint64_t offset = it->first;
      const uint64_t rest = it->second - size;
      free.erase(it);
      if (rest > 0) free.emplace(offset + size, rest);
      leased += size;
      return offset;
    }
    return std::nullopt;
  }
  void Give(uint64_t offset, uint64_t size) {
    leased -= size;
    auto next = free.lower_bound(offset);
    if (next != free.end() && offset + size == next->first) {  // merge with the range after
      size += next->second;
      next = free.erase(next);
    }
    if (next != free.begin()) {  // and with the range before
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        prev->second += size;
        return;
      }
    }
    free.emplace(offset, size);
  }
};

StagingPool::StagingPool(StageCopier* copier, uint64_t keep_bytes)
    : copier_(copier), keep_bytes_(keep_bytes) {}

StagingPool::~StagingPool() = default;

StagingPool::Lease::~Lease() { pool_->Release(slab_, offset_, size_); }

char* StagingPool::Lease::data() const {
  return static_cast<char*>(slab_->buffer->data()) + offset_;
}

absl::StatusOr<std::unique_ptr<StagingPool::Lease>> StagingPool::Acquire(uint64_t bytes) {
  const uint64_t size = RoundUp(std::max<uint64_t>(bytes, 1), kPoolGranule);
  {
    absl::MutexLock lock(&mu_);
    for (const std::unique_ptr<Slab>& slab : slabs_) {
      if (std::optional<uint64_t> offset = slab->Take(size)) {
        return std::make_unique<Lease>(this, slab.get(), *offset, size);
      }
    }
  }
  const absl::Time start = absl::Now();
  GKA_ASSIGN_OR_RETURN(Slab * slab, AddSlab(size, /*lease_all=*/true));
  int64_t misses;
  {
    absl::MutexLock lock(&mu_);
    misses = ++misses_;
  }
  GKA_LOG(INFO) << "staging pool miss " << misses << ": pinned " << (size >> 20) << " MiB in "
                << absl::ToDoubleMilliseconds(absl::Now() - start)
                << " ms on this thread (prewarm more: --staging-prewarm)";
  return std::make_unique<Lease>(this, slab, /*offset=*/0, size);
}

absl::StatusOr<StagingPool::Slab*> StagingPool::AddSlab(uint64_t size, bool lease_all) {
  // Pinned outside the lock: other hand-offs keep taking from the slabs meanwhile.
  auto slab = std::make_unique<Slab>();
  GKA_ASSIGN_OR_RETURN(slab->buffer, copier_->AllocateStaging(size));
  if (lease_all) {
    slab->leased = size;
  } else {
    slab->free.emplace(0, size);
  }
  Slab* raw = slab.get();
  absl::MutexLock lock(&mu_);
  pinned_bytes_ += size;
  slabs_.push_back(std::move(slab));
  return raw;
}

absl::Status StagingPool::Prewarm(uint64_t bytes, int count) {
  const uint64_t size = RoundUp(std::max<uint64_t>(bytes, 1), kPoolGranule);
  for (int i = 0; i < count; ++i) {
    {
      absl::MutexLock lock(&mu_);
      if (pinned_bytes_ + size > keep_bytes_) return absl::OkStatus();  // Release would free it
    }
    GKA_RETURN_IF_ERROR(AddSlab(size, /*lease_all=*/false).status());
  }
  return absl::OkStatus();
}

int64_t StagingPool::misses() const {
  absl::MutexLock lock(&mu_);
  return misses_;
}

uint64_t StagingPool::pinned_bytes() const {
  absl::MutexLock lock(&mu_);
  return pinned_bytes_;
}

void StagingPool::Release(Slab* slab, uint64_t offset, uint64_t size) {
  std::unique_ptr<Slab> unpin;  // freed after the lock: unpinning is slow too
  {
    absl::MutexLock lock(&mu_);
    slab->Give(offset, size);
    if (slab->leased == 0 && pinned_bytes_ > keep_bytes_) {
      auto it = std::find_if(slabs_.begin(), slabs_.end(),
                             [&](const std::unique_ptr<Slab>& s) { return s.get() == slab; });
      pinned_bytes_ -= slab->buffer->size();
      unpin = std::move(*it);
      slabs_.erase(it);
    }
  }
}

// --- sender --------------------------------------------------------------------------------------

struct StagedSender::Stage {
  std::vector<size_t> segments;                // indices, in put order
  std::vector<std::unique_ptr<CopyJob>> jobs;  // one per copier with segments in the group
};

StagedSender::~StagedSender() { WaitForCopies(); }

void StagedSender::WaitForCopies() {
  // A job's destructor waits for its copy; the groups not put yet still hold theirs.
  for (size_t g = next_put_; g < stages_.size(); ++g) stages_[g].jobs.clear();
  stages_.resize(next_put_);  // what was not put never will be (its sums are gone)
}

absl::StatusOr<std::unique_ptr<StagedSender>> StagedSender::Create(
    std::vector<StageCopier*> copiers, StagingPool* pool, std::vector<DeviceSegment> segments) {
  std::unique_ptr<StagedSender> s(new StagedSender());
  std::vector<PlacedRange> placed;
  std::vector<uint64_t> lengths;
  placed.reserve(segments.size());
  lengths.reserve(segments.size());
  for (size_t i = 0; i < segments.size(); ++i) {
    const DeviceSegment& d = segments[i];
    if (d.length == 0) return absl::InvalidArgumentError(absl::StrCat("segment ", i, " is empty"));
    if (d.source < 0 || d.source >= static_cast<int32_t>(copiers.size()) ||
        copiers[d.source] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment ", i, " names source ", d.source, " without a copier"));
    }
    placed.push_back({d.remote_addr, d.length});
    lengths.push_back(d.length);
    s->bytes_ += d.length;
  }
  GKA_ASSIGN_OR_RETURN(s->stream_, StreamOffsets(placed));
  s->offsets_ = StagingOffsets(lengths);
  if (pool != nullptr) {
    GKA_ASSIGN_OR_RETURN(s->staging_, pool->Acquire(s->offsets_.back()));
  }
  s->copiers_ = std::move(copiers);
  s->copied_.assign(segments.size(), false);
  s->segments_ = std::move(segments);
  return s;
}

absl::StatusOr<std::unique_ptr<StagedSender>> StagedSender::Start(
    std::vector<StageCopier*> copiers, StagingPool* pool, std::vector<DeviceSegment> segments) {
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].src == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("segment ", i, " is empty or has no source"));
    }
    if (i > 0 && segments[i].stage < segments[i - 1].stage) {
      return absl::InvalidArgumentError(absl::StrCat("segment ", i, " goes back to stage ",
                                                     segments[i].stage, " after stage ",
                                                     segments[i - 1].stage));
    }
  }
  GKA_ASSIGN_OR_RETURN(std::unique_ptr<StagedSender> s,
                       Create(std::move(copiers), pool, std::move(segments)));
  // Every stage's copies now: the copy streams run them back to back while PutAll puts the
  // finished ones.
  for (size_t i = 0; i < s->segments_.size();) {
    std::vector<size_t> which;
    std::vector<const void*> sources;
    size_t j = i;
    for (; j < s->segments_.size() && s->segments_[j].stage == s->segments_[i].stage; ++j) {
      which.push_back(j);
      sources.push_back(s->segments_[j].src);
    }
    GKA_RETURN_IF_ERROR(s->Copy(which, sources, {}));
    i = j;
  }
  return s;
}

absl::Status StagedSender::Copy(const std::vector<size_t>& which,
                                const std::vector<const void*>& sources,
                                const std::vector<std::shared_ptr<kernels::StreamMark>>& after) {
  if (which.size() != sources.size()) {
    return absl::InvalidArgumentError("one source per segment to copy");
  }
  if (which.empty()) return absl::OkStatus();
  char* base = staging_ == nullptr ? nullptr : staging_->data();
  std::vector<std::vector<kernels::CopyChecksumRange>> by_source(copiers_.size());
  for (size_t n = 0; n < which.size(); ++n) {
    const size_t i = which[n];
    if (i >= segments_.size() || copied_[i] || sources[n] == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment ", i, " does not exist, was copied already, or has no source"));
    }
  }
  Stage st;
  for (size_t n = 0; n < which.size(); ++n) {
    const size_t i = which[n];
    segments_[i].src = sources[n];
    copied_[i] = true;
    by_source[segments_[i].source].push_back({.src = sources[n],
                                              .dst = base == nullptr ? nullptr : base + offsets_[i],
                                              .bytes = segments_[i].length,
                                              .stream_offset = stream_[i]});
    st.segments.push_back(i);
  }
  for (size_t c = 0; c < copiers_.size(); ++c) {
    if (by_source[c].empty()) continue;
    const kernels::StreamMark* mark = c < after.size() ? after[c].get() : nullptr;
    GKA_ASSIGN_OR_RETURN(std::unique_ptr<CopyJob> job,
                         copiers_[c]->Start(std::move(by_source[c]), mark));
    st.jobs.push_back(std::move(job));
  }
  stages_.push_back(std::move(st));
  return absl::OkStatus();
}

absl::StatusOr<bool> StagedSender::PutNextGroup(OutgoingTransfer& transfer, bool wait) {
  if (next_put_ == stages_.size()) return false;
  Stage& st = stages_[next_put_];
  if (!wait) {
    for (auto& job : st.jobs) {
      if (!job->Ready()) return false;
    }
  }
  const absl::Time wait_start = absl::Now();
  for (auto& job : st.jobs) {
    GKA_ASSIGN_OR_RETURN(uint64_t part, job->Wait());
    sum_ = kernels::AddMod61(sum_, part);
  }
  copy_wait_ += absl::Now() - wait_start;
  const char* base = staging_ == nullptr ? nullptr : staging_->data();
  TransferDescriptor d;
  for (size_t i : st.segments) {
    const DeviceSegment& seg = segments_[i];
    d.Add(base == nullptr ? seg.src : base + offsets_[i], seg.region, seg.remote_addr, seg.length);
  }
  ++next_put_;  // waited for: whatever Put says, this group's copies are done
  GKA_RETURN_IF_ERROR(transfer.Put(d));
  put_bytes_ += d.TotalBytes();
  return true;
}

absl::StatusOr<uint64_t> StagedSender::PutCopied(OutgoingTransfer& transfer, bool wait) {
  const uint64_t before = put_bytes_;
  while (true) {
    GKA_ASSIGN_OR_RETURN(bool put, PutNextGroup(transfer, wait));
    if (!put) break;
  }
  return put_bytes_ - before;
}

absl::StatusOr<uint64_t> StagedSender::PutNextCopied(OutgoingTransfer& transfer) {
  const uint64_t before = put_bytes_;
  GKA_RETURN_IF_ERROR(PutNextGroup(transfer, /*wait=*/true).status());
  return put_bytes_ - before;
}

absl::StatusOr<StagedSend> StagedSender::Checksum() const {
  if (put_bytes_ != bytes_ || next_put_ != stages_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("only ", put_bytes_, " of ", bytes_, " bytes were copied and put"));
  }
  StagedSend out;
  out.bytes = bytes_;
  out.stages = static_cast<int32_t>(stages_.size());
  out.copy_wait = copy_wait_;
  out.checksum = kernels::Poly61Finalize(sum_, bytes_);
  return out;
}

absl::StatusOr<StagedSend> StagedSender::PutAll(OutgoingTransfer& transfer,
                                                const std::function<bool()>& cancelled) {
  while (next_put_ < stages_.size()) {
    if (cancelled && cancelled()) return absl::CancelledError("cancelled between stages");
    GKA_RETURN_IF_ERROR(PutNextGroup(transfer, /*wait=*/true).status());
  }
  return Checksum();
}

absl::StatusOr<StagedSend> PutStaged(OutgoingTransfer& transfer, StageCopier& copier,
                                     StagingPool* pool, const std::vector<DeviceSegment>& segments,
                                     const std::function<bool()>& cancelled,
                                     std::unique_ptr<StagedSender>* sender) {
  GKA_ASSIGN_OR_RETURN(*sender, StagedSender::Start({&copier}, pool, segments));
  return (*sender)->PutAll(transfer, cancelled);
}

// --- receiver ------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Landing>> Landing::Create(StagingPool& pool,
                                                         std::vector<DeviceRange> segments) {
  std::unique_ptr<Landing> l(new Landing());
  std::vector<uint64_t> lengths;
  for (const DeviceRange& s : segments) lengths.push_back(s.bytes);
  l->offsets_ = StagingOffsets(lengths);
  GKA_ASSIGN_OR_RETURN(l->staging_, pool.Acquire(l->offsets_.back()));
  l->segments_ = std::move(segments);
  return l;
}

std::vector<LocalRange> Landing::VerifyRanges() const {
  std::vector<LocalRange> out;
  for (size_t i = 0; i < segments_.size(); ++i) {
    out.push_back({landing(i), segments_[i].bytes});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<CopyJob>> Landing::StartCopyIn(StageCopier& copier) {
  // The stream offsets follow target-address order, which for a landing is segment order.
  std::vector<kernels::CopyChecksumRange> ranges;
  uint64_t pos = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    ranges.push_back({.src = landing(i),
                      .dst = segments_[i].ptr,
                      .bytes = segments_[i].bytes,
                      .stream_offset = pos});
    pos += segments_[i].bytes;
  }
  return copier.Start(std::move(ranges), nullptr);
}

absl::Status Landing::FinishCopyIn(CopyJob& job, uint64_t sender_checksum, uint64_t sender_bytes) {
  uint64_t bytes = 0;
  for (const DeviceRange& s : segments_) bytes += s.bytes;
  GKA_ASSIGN_OR_RETURN(uint64_t sum, job.Wait());
  return CompareChecksums(kernels::Poly61Finalize(sum, bytes), bytes, sender_checksum,
                          sender_bytes);
}

absl::Status Landing::CopyInAndVerify(StageCopier& copier, uint64_t sender_checksum,
                                      uint64_t sender_bytes) {
  GKA_ASSIGN_OR_RETURN(std::unique_ptr<CopyJob> job, StartCopyIn(copier));
  return FinishCopyIn(*job, sender_checksum, sender_bytes);
}

absl::Status VerifyInPlace(StageCopier& copier, const std::vector<DeviceRange>& segments,
                           uint64_t sender_checksum, uint64_t sender_bytes) {
  std::vector<PlacedRange> placed;
  uint64_t bytes = 0;
  for (const DeviceRange& s : segments) {
    placed.push_back({reinterpret_cast<uint64_t>(s.ptr), s.bytes});
    bytes += s.bytes;
  }
  GKA_ASSIGN_OR_RETURN(std::vector<uint64_t> stream, StreamOffsets(placed));
  std::vector<kernels::CopyChecksumRange> ranges;
  for (size_t i = 0; i < segments.size(); ++i) {
    ranges.push_back({.src = segments[i].ptr,
                      .dst = nullptr,
                      .bytes = segments[i].bytes,
                      .stream_offset = stream[i]});
  }
  GKA_ASSIGN_OR_RETURN(std::unique_ptr<CopyJob> job, copier.Start(std::move(ranges), nullptr));
  GKA_ASSIGN_OR_RETURN(uint64_t sum, job->Wait());
  return CompareChecksums(kernels::Poly61Finalize(sum, bytes), bytes, sender_checksum,
                          sender_bytes);
}

}  // namespace gka::transfer::staging
