// Picks a kernel backend by name. The only file that knows which backends were compiled in.
//
//   GKA_ASSIGN_OR_RETURN(std::unique_ptr<Backend> be, CreateBackend({.kind = BackendKind::kCuda}));
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/api/backend.h"

namespace gka::kernels {

struct BackendOptions {
  BackendKind kind = BackendKind::kCpu;
  int device_ordinal = 0;  // CUDA device index
};

// Unavailable when the backend was not compiled in or no device is present.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options);

// "cpu" | "cuda" → kind; InvalidArgument otherwise.
absl::StatusOr<BackendKind> ParseBackendKind(absl::string_view name);

// True when the CUDA backend was compiled in and a GPU is visible.
bool CudaAvailable();

// The stream a backend runs its ops on, for device communicators (NCCL) that must order
// their collectives with those ops: a cudaStream_t for the CUDA backend, null otherwise.
void* NativeStream(Backend& backend);

}  // namespace gka::kernels
