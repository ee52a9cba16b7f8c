// Per-backend CUDA state shared by every op: the device, its stream, the cuBLAS handle, the
// GEMM tuner (cuBLASLt) and a grow-only scratch arena, plus RAII owners for the C handles.
//
// Private to kernels/cuda. Thread-safety: owned by one CudaBackend, used by one thread.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gka::kernels::cuda {

class GemmTuner;

// Owns one cudaMalloc allocation.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  static absl::StatusOr<DeviceMemory> Allocate(size_t bytes);
  DeviceMemory(DeviceMemory&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceMemory& operator=(DeviceMemory&& o) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory();

  void* get() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Owns a non-blocking stream (it never synchronises with the legacy default stream).
class CudaStream {
 public:
  static absl::StatusOr<CudaStream> Create();
  CudaStream(CudaStream&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  CudaStream& operator=(CudaStream&&) = delete;
  CudaStream(const CudaStream&) = delete;
  ~CudaStream();
  cudaStream_t get() const { return s_; }

 private:
  explicit CudaStream(cudaStream_t s) : s_(s) {}
  cudaStream_t s_ = nullptr;
};

// Owns a timing-capable event.
class CudaEvent {
 public:
  static absl::StatusOr<CudaEvent> Create();
  CudaEvent(CudaEvent&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  CudaEvent& operator=(CudaEvent&&) = delete;
  CudaEvent(const CudaEvent&) = delete;
  ~CudaEvent();
  cudaEvent_t get() const { return e_; }

 private:
  explicit CudaEvent(cudaEvent_t e) : e_(e) {}
  cudaEvent_t e_ = nullptr;
};

// Owns a cuBLAS handle bound to a stream, with its own workspace (so GEMMs can be captured in
// CUDA graphs: cuBLAS then never allocates behind our back).
class CublasHandle {
 public:
  static absl::StatusOr<CublasHandle> Create(cudaStream_t stream);
  CublasHandle(CublasHandle&& o) noexcept : h_(o.h_), workspace_(std::move(o.workspace_)) {
    o.h_ = nullptr;
  }
  CublasHandle& operator=(CublasHandle&&) = delete;
  CublasHandle(const CublasHandle&) = delete;
  ~CublasHandle();
  cublasHandle_t get() const { return h_; }
  void* workspace() const { return workspace_.get(); }
  size_t workspace_bytes() const { return workspace_.size(); }

 private:
  CublasHandle(cublasHandle_t h, DeviceMemory ws) : h_(h), workspace_(std::move(ws)) {}
  cublasHandle_t h_ = nullptr;
  DeviceMemory workspace_;
};

// What a kernel launcher needs. The ops take it by const reference; Scratch() is the one
// mutating call (it may grow the arena, which synchronises the device).
class CudaContext {
 public:
  static absl::StatusOr<std::unique_ptr<CudaContext>> Create(int device_ordinal);
  ~CudaContext();

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_.get(); }
  cublasHandle_t cublas() const { return cublas_.get(); }
  // The cuBLAS handle's workspace, also lent to cuBLASLt calls (same stream: never both at once).
  void* cublas_workspace() const { return cublas_.workspace(); }
  size_t cublas_workspace_bytes() const { return cublas_.workspace_bytes(); }
  // The bf16 GEMM algorithm cache (gemm_tuner.h); mutable like the scratch arena.
  GemmTuner& gemm_tuner() const { return *gemm_tuner_; }
  int num_sms() const { return num_sms_; }
  size_t max_smem_per_block() const { return max_smem_per_block_; }
  const char* device_name() const { return name_; }

  // Device scratch of at least `bytes`, valid until the next Scratch() call. Ops run in
  // stream order, so one op's scratch is free again when the next op starts.
  absl::StatusOr<void*> Scratch(size_t bytes) const;
  // Counts the arena's reallocations: a CUDA graph captured at one epoch holds the arena's
  // old address and must not be launched at a later one.
  uint64_t scratch_epoch() const { return scratch_epoch_; }

 private:
  CudaContext(int device, CudaStream stream, CublasHandle cublas);
  int device_;
  CudaStream stream_;
  CublasHandle cublas_;
  int num_sms_ = 0;
  size_t max_smem_per_block_ = 0;
  char name_[256] = {};
  std::unique_ptr<GemmTuner> gemm_tuner_;
  mutable DeviceMemory scratch_;
  mutable uint64_t scratch_epoch_ = 0;
};

}  // namespace gka::kernels::cuda
