// Placeholder until the CPU op lands; see ops.h.
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
absl::Status RmsNorm(const RmsNormParams&) { return absl::UnimplementedError("RmsNorm"); }
absl::Status QkNormRope(const QkNormRopeParams&) { return absl::UnimplementedError("QkNormRope"); }
absl::Status GatedRmsNorm(const GatedRmsNormParams&) { return absl::UnimplementedError("GatedRmsNorm"); }
}  // namespace gka::kernels::cpu
