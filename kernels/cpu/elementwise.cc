// Placeholder until the CPU op lands; see ops.h.
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
absl::Status Embedding(const EmbeddingParams&) { return absl::UnimplementedError("Embedding"); }
absl::Status SiluMul(const SiluMulParams&) { return absl::UnimplementedError("SiluMul"); }
absl::Status Add(const AddParams&) { return absl::UnimplementedError("Add"); }
}  // namespace gka::kernels::cpu
