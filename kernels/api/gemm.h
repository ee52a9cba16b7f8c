// GEMM with the weight layout of the checkpoint: y = x · Wᵀ (+ beta · y).
#pragma once

#include "common/tensor/tensor.h"

namespace gka::kernels {

struct GemmParams {
  tensor::TensorView x;  // [M, K] activations (F32 on CPU; BF16 or F32 on CUDA)
  tensor::TensorView w;  // [N, K] weight, row-major as stored ([out_features, in_features])
  tensor::TensorView y;  // [M, N] output, dtype of x (or F32: logits)
  float beta = 0.0f;     // 1.0 accumulates into y (fused residual add)
};

}  // namespace gka::kernels
