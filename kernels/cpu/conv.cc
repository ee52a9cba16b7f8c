// Placeholder until the CPU op lands; see ops.h.
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
absl::Status CausalConv(const CausalConvParams&) { return absl::UnimplementedError("CausalConv"); }
}  // namespace gka::kernels::cpu
