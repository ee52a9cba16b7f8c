// Placeholder until the CPU op lands; see ops.h.
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
absl::Status KvCacheWrite(const KvCacheWriteParams&) { return absl::UnimplementedError("KvCacheWrite"); }
absl::Status PagedAttention(const PagedAttentionParams&) { return absl::UnimplementedError("PagedAttention"); }
}  // namespace gka::kernels::cpu
