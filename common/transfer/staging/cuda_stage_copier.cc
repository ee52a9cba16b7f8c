#include "common/transfer/staging/cuda_stage_copier.h"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/check.h"
#include "common/base/status.h"
#include "kernels/cuda/copy_checksum.h"

namespace gka::transfer::staging {
namespace {

absl::Status Cuda(cudaError_t e, absl::string_view call) {
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat(call, ": ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
  if (e == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}
#define GKA_CUDA_OK(expr) GKA_RETURN_IF_ERROR(Cuda((expr), #expr))

// Makes `device` current for a scope and restores the caller's device after: the CUDA current
// device is per thread, and the engine thread that calls a copier (the decode worker copying a
// landing in) must keep its own device for its engine.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    status_ = Cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  const absl::Status& status() const { return status_; }

 private:
  int previous_ = -1;
  absl::Status status_;
};

class PinnedBuffer final : public StagingBuffer {
 public:
  PinnedBuffer(void* data, uint64_t size) : data_(data), size_(size) {}
  ~PinnedBuffer() override { cudaFreeHost(data_); }
  void* data() const override { return data_; }
  uint64_t size() const override { return size_; }

 private:
  void* data_;
  uint64_t size_;
};

constexpr int kSlots = 1024;

class CudaStageCopier;

class CudaCopyJob final : public CopyJob {
 public:
  CudaCopyJob(CudaStageCopier* copier, int slot, cudaEvent_t done)
      : copier_(copier), slot_(slot), done_(done) {}
  ~CudaCopyJob() override;
  bool Ready() override { return waited_ || cudaEventQuery(done_) == cudaSuccess; }
  absl::StatusOr<uint64_t> Wait() override;

 private:
  CudaStageCopier* copier_;
  int slot_;
  cudaEvent_t done_;
  bool waited_ = false;
};

class CudaStageCopier final : public StageCopier {
 public:
  static absl::StatusOr<std::unique_ptr<StageCopier>> Create(int ordinal) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      return absl::UnavailableError("no CUDA device visible for the staging copier");
    }
    if (ordinal < 0 || ordinal >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA device ", ordinal, " does not exist (", count, " visible)"));
    }
    std::unique_ptr<CudaStageCopier> c(new CudaStageCopier(ordinal));
    DeviceGuard device(ordinal);
    GKA_RETURN_IF_ERROR(device.status());
    // The copies run as kernels (the fused poly61 copy), beside a prefill that fills every SM:
    // at equal priority the block scheduler keeps feeding the compute stream's kernels and a
    // layer's staging copy waits for the end of the step, which defeats the streamed hand-off.
    // At the greatest priority its blocks go first as SMs free up; it is PCIe-bound and short.
    // GKA_STAGE_COPY_PRIORITY=0 keeps the default priority (for A/B measurements).
    int least = 0, greatest = 0;
    GKA_CUDA_OK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    const char* knob = std::getenv("GKA_STAGE_COPY_PRIORITY");
    const bool high = knob == nullptr || absl::string_view(knob) != "0";
    GKA_CUDA_OK(
        cudaStreamCreateWithPriority(&c->stream_, cudaStreamNonBlocking, high ? greatest : least));
    GKA_CUDA_OK(
        cudaMalloc(reinterpret_cast<void**>(&c->device_acc_), kSlots * 2 * sizeof(uint64_t)));
    GKA_CUDA_OK(cudaHostAlloc(reinterpret_cast<void**>(&c->host_acc_),
                              kSlots * 2 * sizeof(uint64_t), cudaHostAllocDefault));
    for (int i = kSlots - 1; i >= 0; --i) c->free_slots_.push_back(i);
    return std::unique_ptr<StageCopier>(std::move(c));
  }

  ~CudaStageCopier() override {
    DeviceGuard device(ordinal_);
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
    if (device_acc_ != nullptr) cudaFree(device_acc_);
    if (host_acc_ != nullptr) cudaFreeHost(host_acc_);
  }

  absl::string_view name() const override { return "cuda"; }
  MemoryKind memory_kind() const override { return MemoryKind::kCuda; }

  absl::StatusOr<std::unique_ptr<StagingBuffer>> AllocateStaging(uint64_t bytes) override {
    DeviceGuard device(ordinal_);
    GKA_RETURN_IF_ERROR(device.status());
    void* p = nullptr;
    // Portable: any device of the process may address it; mapped: kernels read and write it
    // directly (the copy kernel's zero-copy side).
    GKA_CUDA_OK(cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped));
    return std::make_unique<PinnedBuffer>(p, bytes);
  }

  absl::StatusOr<std::unique_ptr<CopyJob>> Start(std::vector<kernels::CopyChecksumRange> ranges,
                                                 const kernels::StreamMark* after) override {
    int slot;
    {
      absl::MutexLock lock(&mu_);
      if (free_slots_.empty()) {
        return absl::ResourceExhaustedError(
            absl::StrCat("more than ", kSlots, " staging copies in flight"));
      }
      slot = free_slots_.back();
      free_slots_.pop_back();
    }
    cudaEvent_t done = nullptr;
    auto fail = [&](absl::Status s) {
      if (done != nullptr) cudaEventDestroy(done);
      ReleaseSlot(slot);
      return s;
    };
    DeviceGuard device(ordinal_);
    if (!device.status().ok()) return fail(device.status());
    if (absl::Status s =
            Cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreate");
        !s.ok()) {
      return fail(s);
    }
    uint64_t* acc = device_acc_ + 2 * slot;
    absl::MutexLock lock(&stream_mu_);  // one job's launches stay together on the stream
    if (after != nullptr) {
      // The sources are being written by the compute stream (a layer of a prefill still
      // running): copy only once it has passed the mark. Cross-device waits are fine.
      if (absl::Status s =
              Cuda(cudaStreamWaitEvent(stream_, static_cast<cudaEvent_t>(after->native_event()), 0),
                   "cudaStreamWaitEvent");
          !s.ok()) {
        return fail(s);
      }
    }
    if (absl::Status s =
            Cuda(cudaMemsetAsync(acc, 0, 2 * sizeof(uint64_t), stream_), "cudaMemsetAsync");
        !s.ok()) {
      return fail(s);
    }
    if (absl::Status s = kernels::cuda::CopyChecksumAsync(ranges, acc, stream_); !s.ok()) {
      return fail(s);
    }
    if (absl::Status s = Cuda(cudaMemcpyAsync(host_acc_ + 2 * slot, acc, 2 * sizeof(uint64_t),
                                              cudaMemcpyDeviceToHost, stream_),
                              "cudaMemcpyAsync");
        !s.ok()) {
      return fail(s);
    }
    if (absl::Status s = Cuda(cudaEventRecord(done, stream_), "cudaEventRecord"); !s.ok()) {
      return fail(s);
    }
    return std::unique_ptr<CopyJob>(new CudaCopyJob(this, slot, done));
  }

  uint64_t SumOf(int slot) const {
    return kernels::Poly61FromHalves(host_acc_[2 * slot], host_acc_[2 * slot + 1]);
  }
  void ReleaseSlot(int slot) {
    absl::MutexLock lock(&mu_);
    free_slots_.push_back(slot);
  }

 private:
  explicit CudaStageCopier(int ordinal) : ordinal_(ordinal) {}
  const int ordinal_;
  cudaStream_t stream_ = nullptr;
  uint64_t* device_acc_ = nullptr;  // [kSlots, 2] device
  uint64_t* host_acc_ = nullptr;    // [kSlots, 2] pinned
  absl::Mutex mu_;
  std::vector<int> free_slots_ ABSL_GUARDED_BY(mu_);
  absl::Mutex stream_mu_;
};

CudaCopyJob::~CudaCopyJob() {
  // Events are not tied to the current device for synchronize/destroy.
  // The slot is written by the stream until the event: it may be reused only after it.
  if (!waited_) cudaEventSynchronize(done_);
  cudaEventDestroy(done_);
  copier_->ReleaseSlot(slot_);
}

absl::StatusOr<uint64_t> CudaCopyJob::Wait() {
  GKA_CHECK(!waited_) << "a staging copy job is waited for once";
  GKA_CUDA_OK(cudaEventSynchronize(done_));
  waited_ = true;
  return copier_->SumOf(slot_);
}

}  // namespace

absl::StatusOr<std::unique_ptr<StageCopier>> MakeCudaStageCopier(int ordinal) {
  return CudaStageCopier::Create(ordinal);
}

}  // namespace gka::transfer::staging
