// Embedding lookup, SwiGLU activation, elementwise add.
#pragma once

#include <cstdint>

#include "common/tensor/tensor.h"

namespace gka::kernels {

struct EmbeddingParams {
  tensor::TensorView table;      // [V, hidden]
  const int32_t* ids = nullptr;  // [T]; caller guarantees 0 <= id < V (checked at admission)
  tensor::TensorView out;        // [T, hidden]
};

// out = silu(gate_up[:, :F]) ⊙ gate_up[:, F:]   (gate and up projections fused in one GEMM)
struct SiluMulParams {
  tensor::TensorView gate_up;  // [T, 2F]
  tensor::TensorView out;      // [T, F]
};

// y += x
struct AddParams {
  tensor::TensorView x;  // [n...]
  tensor::TensorView y;  // same shape
};

}  // namespace gka::kernels
