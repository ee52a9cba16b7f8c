// Placeholder until the CPU op lands; see ops.h.
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
absl::Status Sample(const SampleParams&) { return absl::UnimplementedError("Sample"); }
}  // namespace gka::kernels::cpu
