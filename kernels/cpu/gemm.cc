// Placeholder until the CPU op lands; see ops.h.
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
absl::Status Gemm(const GemmParams&) { return absl::UnimplementedError("Gemm"); }
}  // namespace gka::kernels::cpu
