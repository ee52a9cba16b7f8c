// Causal depthwise short convolution + SiLU, carrying the last K-1 raw inputs per sequence.
#pragma once

#include <cstdint>

#include "common/tensor/tensor.h"

namespace gka::kernels {

// For each sequence b (tokens cu_seqlens[b] .. cu_seqlens[b+1]-1) and channel c:
//   xp = [state[slot_b, c, 0..K-2], x[t0.., c]]   (oldest first)
//   y[t, c] = silu(Σ_j weight[c, j] · xp[t + j])  (tap K-1 multiplies the current input)
// and afterwards state[slot_b, c, :] = the last K-1 raw inputs (state included if T < K-1).
// A whole prompt, a continuation chunk and a one-token decode step are the same op.
struct CausalConvParams {
  tensor::TensorView x;            // [T_total, C] raw projection outputs (row stride x_row_stride)
  int64_t x_row_stride = 0;        // elements between rows of x; 0 = C (contiguous)
  tensor::TensorView out;          // [T_total, C] post-SiLU, contiguous
  tensor::TensorView weight;       // [C, K] (checkpoint [C, 1, K] squeezed)
  tensor::TensorView state;        // [num_slots, C, K-1] F32, updated in place
  const int32_t* slots = nullptr;  // [B] state slot of each sequence
  const int32_t* cu_seqlens = nullptr;  // [B + 1]
  int32_t num_seqs = 0;
};

}  // namespace gka::kernels
