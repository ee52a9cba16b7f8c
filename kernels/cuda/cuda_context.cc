#include "kernels/cuda/cuda_context.h"

#include <cstdio>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/gemm_tuner.h"

namespace gka::kernels::cuda {

absl::StatusOr<DeviceMemory> DeviceMemory::Allocate(size_t bytes) {
  DeviceMemory m;
  if (bytes == 0) return m;
  GKA_CUDA_RETURN_IF_ERROR(cudaMalloc(&m.ptr_, bytes));
  m.bytes_ = bytes;
  return m;
}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& o) noexcept {
  if (this != &o) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

DeviceMemory::~DeviceMemory() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

absl::StatusOr<CudaStream> CudaStream::Create() {
  cudaStream_t s = nullptr;
  GKA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return CudaStream(s);
}

CudaStream::~CudaStream() {
  if (s_ != nullptr) cudaStreamDestroy(s_);
}

absl::StatusOr<CudaEvent> CudaEvent::Create() {
  cudaEvent_t e = nullptr;
  GKA_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
  return CudaEvent(e);
}

CudaEvent::~CudaEvent() {
  if (e_ != nullptr) cudaEventDestroy(e_);
}

absl::StatusOr<CublasHandle> CublasHandle::Create(cudaStream_t stream) {
  // 32 MiB: NVIDIA's recommended cuBLAS workspace on Hopper.
  constexpr size_t kWorkspaceBytes = size_t{32} << 20;
  GKA_ASSIGN_OR_RETURN(DeviceMemory ws, DeviceMemory::Allocate(kWorkspaceBytes));
  cublasHandle_t h = nullptr;
  GKA_CUBLAS_RETURN_IF_ERROR(cublasCreate(&h));
  CublasHandle handle(h, std::move(ws));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(h, stream));
  GKA_CUBLAS_RETURN_IF_ERROR(
      cublasSetWorkspace(h, handle.workspace_.get(), handle.workspace_.size()));
  // F32 GEMMs stay true fp32 (no TF32) so the fp32 engine matches the goldens tightly.
  GKA_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  GKA_CUBLAS_RETURN_IF_ERROR(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
  return handle;
}

CublasHandle::~CublasHandle() {
  if (h_ != nullptr) cublasDestroy(h_);
}

absl::StatusOr<std::unique_ptr<CudaContext>> CudaContext::Create(int device_ordinal) {
  int count = 0;
  GKA_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (device_ordinal < 0 || device_ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device_ordinal, " does not exist (", count, " visible)"));
  }
  GKA_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_ordinal));
  cudaDeviceProp prop;
  GKA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device_ordinal));
  if (prop.major < 9) {
    return absl::FailedPreconditionError(absl::StrCat("device ", device_ordinal, " (", prop.name,
                                                      ") is sm_", prop.major, prop.minor,
                                                      "; this build targets sm_90a (Hopper)"));
  }
  GKA_ASSIGN_OR_RETURN(CudaStream stream, CudaStream::Create());
  GKA_ASSIGN_OR_RETURN(CublasHandle cublas, CublasHandle::Create(stream.get()));
  std::unique_ptr<CudaContext> ctx(
      new CudaContext(device_ordinal, std::move(stream), std::move(cublas)));
  GKA_ASSIGN_OR_RETURN(ctx->gemm_tuner_, GemmTuner::Create({}));
  ctx->num_sms_ = prop.multiProcessorCount;
  ctx->max_smem_per_block_ = prop.sharedMemPerBlockOptin;
  std::snprintf(ctx->name_, sizeof(ctx->name_), "%s", prop.name);
  return ctx;
}

CudaContext::CudaContext(int device, CudaStream stream, CublasHandle cublas)
    : device_(device), stream_(std::move(stream)), cublas_(std::move(cublas)) {}
CudaContext::~CudaContext() = default;

absl::StatusOr<void*> CudaContext::Scratch(size_t bytes) const {
  if (bytes > scratch_.size()) {
    // Allocation is illegal while the stream is being captured into a CUDA graph: run the
    // largest step once before capturing, so the arena is already big enough.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    GKA_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream_.get(), &capture));
    if (capture != cudaStreamCaptureStatusNone) {
      return absl::FailedPreconditionError(
          absl::StrCat("CUDA scratch must grow to ", bytes,
                       " bytes during graph capture; run the same step "
                       "once uncaptured first"));
    }
    // Grow by at least 2x so a slowly growing batch does not reallocate every step. The old
    // arena may still be read by queued kernels: cudaFree waits for the device first.
    size_t grow = scratch_.size() * 2;
    if (grow < bytes) grow = bytes;
    scratch_ = DeviceMemory();
    ++scratch_epoch_;
    GKA_ASSIGN_OR_RETURN(scratch_, DeviceMemory::Allocate(grow));
  }
  return scratch_.get();
}

}  // namespace gka::kernels::cuda
