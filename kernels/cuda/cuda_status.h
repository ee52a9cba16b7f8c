// CUDA runtime and cuBLAS return codes as absl::Status, with the failing call named.
//
//   GKA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, stream));
//   GKA_CUDA_RETURN_IF_ERROR(cudaGetLastError());   // after every kernel launch
//
// Private to kernels/cuda (it includes CUDA headers; the public cuda_backend.h does not).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace gka::kernels::cuda {

// Out-of-memory becomes ResourceExhausted (the engine can shrink its batch); every other
// failure is Internal, since after a kernel fault the context is unusable anyway.
inline absl::Status CudaStatus(cudaError_t e, absl::string_view call) {
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg = absl::StrCat(call, ": ", cudaGetErrorName(e), " (", static_cast<int>(e),
                                       "): ", cudaGetErrorString(e));
  if (e == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

inline absl::Status CublasStatus(cublasStatus_t s, absl::string_view call) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat(call, ": ", cublasGetStatusName(s), " (",
                                       static_cast<int>(s), "): ", cublasGetStatusString(s));
  if (s == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (s == CUBLAS_STATUS_INVALID_VALUE || s == CUBLAS_STATUS_NOT_SUPPORTED) {
    return absl::InvalidArgumentError(msg);
  }
  return absl::InternalError(msg);
}

}  // namespace gka::kernels::cuda

#define GKA_CUDA_RETURN_IF_ERROR(expr)                                                 \
  do {                                                                                 \
    ::absl::Status gka_cuda_status_ = ::gka::kernels::cuda::CudaStatus((expr), #expr); \
    if (!gka_cuda_status_.ok()) return gka_cuda_status_;                               \
  } while (false)

#define GKA_CUBLAS_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                                     \
    ::absl::Status gka_cublas_status_ = ::gka::kernels::cuda::CublasStatus((expr), #expr); \
    if (!gka_cublas_status_.ok()) return gka_cublas_status_;                               \
  } while (false)

// After a launch: the launch error (bad configuration) named with the kernel.
#define GKA_CUDA_RETURN_IF_LAUNCH_ERROR(kernel_name) \
  GKA_RETURN_IF_ERROR(::gka::kernels::cuda::CudaStatus(cudaGetLastError(), kernel_name))
