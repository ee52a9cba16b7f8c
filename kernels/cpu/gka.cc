// Placeholder until the CPU op lands; see ops.h.
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
absl::Status GkaGates(const GkaGatesParams&) { return absl::UnimplementedError("GkaGates"); }
absl::Status GkaCore(const GkaCoreParams&) { return absl::UnimplementedError("GkaCore"); }
}  // namespace gka::kernels::cpu
