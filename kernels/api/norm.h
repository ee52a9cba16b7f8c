// RMSNorm (optionally fused with the residual add) and per-head q/k RMSNorm + neox RoPE.
#pragma once

#include <cstdint>

#include "common/tensor/tensor.h"

namespace gka::kernels {

// out = weight ⊙ (x' · rsqrt(mean(x'²) + eps)), computed in fp32, where
// x' = x + residual when `residual` is set (then residual is updated in place to x', the
// vLLM fused-add form), else x' = x.
struct RmsNormParams {
  tensor::TensorView x;         // [rows, n]
  tensor::TensorView residual;  // [rows, n] or empty; updated in place to x + residual
  tensor::TensorView weight;    // [n]
  tensor::TensorView out;       // [rows, n]; may alias x
  float eps = 1e-6f;
};

// In place on q and k: per-head RMSNorm over head_dim with a shared [head_dim] weight, then
// neox (rotate-half, pairs (j, j + D/2)) RoPE over all head_dim dims at `positions`.
// inv_freq[j] = theta^(-2j/D); angle computed as positions[t] * inv_freq[j] in fp32.
struct QkNormRopeParams {
  tensor::TensorView q;  // [T, Hq, D]
  tensor::TensorView k;  // [T, Hkv, D]
  // Elements between consecutive tokens of q and of k; 0 = packed (Hq·D for q, Hkv·D for k).
  // Set when q and k are column ranges of one fused projection output [T, q|k|v].
  int64_t row_stride = 0;
  tensor::TensorView q_weight;         // [D]
  tensor::TensorView k_weight;         // [D]
  const int32_t* positions = nullptr;  // [T] absolute positions
  float theta = 10000.0f;
  float eps = 1e-6f;
};

// GKA output norm per expanded head: out = x · rsqrt(mean(x²) + eps) ⊙ weight ⊙ silu(gate)
// (gate factor dropped when gate is empty), fp32 math.
struct GatedRmsNormParams {
  tensor::TensorView x;     // [rows, D] (rows = T · H), the GKA core output
  tensor::TensorView gate;  // [rows, D] g_proj output, or empty (use_gate = false)
  // A strided gate: its rows come in groups of gate_heads (one token's heads, D apart), and
  // groups start gate_token_stride elements apart, so row r is at
  // (r / gate_heads)·gate_token_stride + (r % gate_heads)·D. gate_token_stride = 0: packed.
  // Set when the gate is a column range of the GKA layer's fused projection [T, q|k|...|g].
  int64_t gate_token_stride = 0;
  int32_t gate_heads = 1;
  tensor::TensorView weight;  // [D] o_norm weight, shared by all heads
  tensor::TensorView out;     // [rows, D]
  float eps = 1e-6f;
};

}  // namespace gka::kernels
