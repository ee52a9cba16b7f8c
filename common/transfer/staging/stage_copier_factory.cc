// The one place that knows whether the CUDA copier was built.
#include "absl/status/statusor.h"
#include "common/transfer/staging/staging.h"
#if GKA_WITH_CUDA
#include "common/transfer/staging/cuda_stage_copier.h"
#endif

namespace gka::transfer::staging {

std::unique_ptr<StageCopier> MakeHostStageCopier();  // staging.cc

absl::StatusOr<std::unique_ptr<StageCopier>> MakeStageCopier(const StageCopierOptions& options) {
  if (!options.device) return MakeHostStageCopier();
#if GKA_WITH_CUDA
  return MakeCudaStageCopier(options.ordinal);
#else
  return absl::UnimplementedError(
      "device staging needs a build with -DGKA_WITH_CUDA=ON (this one has no CUDA)");
#endif
}

}  // namespace gka::transfer::staging
