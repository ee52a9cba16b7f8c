#include "kernels/registry.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#if GKA_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace gka::kernels {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options) {
  switch (options.kind) {
    case BackendKind::kCpu:
      return std::unique_ptr<Backend>(std::make_unique<cpu::CpuBackend>());
    case BackendKind::kCuda:
#if GKA_WITH_CUDA
      return cuda::CudaBackend::Create({.device_ordinal = options.device_ordinal});
#else
      return absl::UnavailableError(
          "this build has no CUDA backend (configure with -DGKA_WITH_CUDA=ON)");
#endif
  }
  return absl::InvalidArgumentError("unknown backend kind");
}

absl::StatusOr<BackendKind> ParseBackendKind(absl::string_view name) {
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda") return BackendKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", name, "' (expected cpu or cuda)"));
}

bool CudaAvailable() {
#if GKA_WITH_CUDA
  return cuda::CudaDeviceCount() > 0;
#else
  return false;
#endif
}

void* NativeStream(Backend& backend) {
#if GKA_WITH_CUDA
  if (auto* cuda = dynamic_cast<cuda::CudaBackend*>(&backend)) return cuda->stream_handle();
#endif
  return nullptr;
}

}  // namespace gka::kernels
