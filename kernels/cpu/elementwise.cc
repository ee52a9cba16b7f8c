// Embedding lookup, SwiGLU activation and elementwise add: row-local, so trivially batch
// invariant.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/cpu/op_util.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {

absl::Status Embedding(const EmbeddingParams& p) {
  constexpr absl::string_view kOp = "Embedding";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "table", p.table, 2));
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "out", p.out, 2));
  const int64_t vocab = p.table.shape[0];
  const int64_t hidden = p.table.shape[1];
  const int64_t num_tokens = p.out.shape[0];
  if (p.out.shape[1] != hidden) {
    return absl::InvalidArgumentError(absl::StrCat("Embedding: out ", p.out.shape.ToString(),
                                                   " must have the table's width ", hidden));
  }
  if (num_tokens == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "ids", p.ids));
  // Admission checks ids, but an out-of-range id here would read outside the table.
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (p.ids[t] < 0 || p.ids[t] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Embedding: ids[", t, "] = ", p.ids[t], " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::memcpy(p.out.data<float>() + t * hidden, p.table.data<float>() + p.ids[t] * hidden,
                hidden * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status SiluMul(const SiluMulParams& p) {
  constexpr absl::string_view kOp = "SiluMul";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "gate_up", p.gate_up, 2));
  const int64_t rows = p.gate_up.shape[0];
  const int64_t width = p.gate_up.shape[1] / 2;
  if (p.gate_up.shape[1] % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("SiluMul: gate_up ", p.gate_up.shape.ToString(),
                                                   " must have an even width [T, 2F]"));
  }
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "out", p.out, tensor::Shape{rows, width}));
  const float* in = p.gate_up.data<float>();
  float* out = p.out.data<float>();
  // Row by row, element j before j is overwritten: safe even if out aliases gate_up's front.
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = in + r * 2 * width;
    const float* up = gate + width;
    float* o = out + r * width;
    for (int64_t j = 0; j < width; ++j) o[j] = internal::Silu(gate[j]) * up[j];
  }
  return absl::OkStatus();
}

absl::Status Add(const AddParams& p) {
  constexpr absl::string_view kOp = "Add";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "x", p.x, p.x.shape.rank()));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "y", p.y, p.x.shape));
  const int64_t n = p.x.numel();
  const float* x = p.x.data<float>();
  float* y = p.y.data<float>();
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  return absl::OkStatus();
}

}  // namespace gka::kernels::cpu
