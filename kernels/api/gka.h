// Gated KalmaNet mixer ops (model-spec §3.4, §5): per-token gates, then the state core.
//
// State pools, per GKA layer (TP rank-local heads H):
//   h_kk [num_slots, H, D, D] F32   key Gram matrix, symmetric
//   h_kv [num_slots, H, D, D] F32   [key dim, value dim] (fla layout)
// addressed by slot index and updated in place.
#pragma once

#include <cstdint>

#include "common/tensor/tensor.h"

namespace gka::kernels {

// Per token and expanded head e (native K/V head e / (H / Hkv), query head e / (H / Hq)):
//   q_hat = q / (‖q‖ + 1e-6),   k_hat = k / (‖k‖ + 1e-6)
//   beta  = sigmoid(b + b_bias)            (b empty: no beta gate, k̃ = k̂ and ṽ = v)
//   k_out = (beta + 1e-6) · k_hat,  v_out = (beta + 1e-6) · v
//   alpha = sigmoid(c + alpha_bias)        (1 when use_alpha = false)
//   g     = -exp(A_log) · softplus(a + dt_bias)  (softplus(z) = z for z > 20; 0 when no gate)
// All math in fp32.
struct GkaGatesParams {
  tensor::TensorView q_conv;      // [T, Hq * D] post-conv
  tensor::TensorView k_conv;      // [T, Hk * D]
  tensor::TensorView v_conv;      // [T, Hv * D]
  tensor::TensorView a;           // [T, H] a_proj output (row stride gate_row_stride)
  tensor::TensorView b;           // [T, H] b_proj output without bias, or empty (no beta gate)
  tensor::TensorView c;           // [T, H] alpha_proj output without bias, or empty (α ≡ 1)
  int64_t gate_row_stride = 0;    // elements between rows of a, b, c; 0 = H
  tensor::TensorView a_log;       // [H] F32
  tensor::TensorView dt_bias;     // [H] F32
  tensor::TensorView b_bias;      // [H] F32 or empty
  tensor::TensorView alpha_bias;  // [H] F32 or empty
  bool use_forgetting_gate = true;
  // Outputs, all F32:
  tensor::TensorView q_out;  // [T, H, D] q_hat
  tensor::TensorView k_out;  // [T, H, D] k̃
  tensor::TensorView v_out;  // [T, H, D] ṽ
  tensor::TensorView alpha;  // [T, H]
  tensor::TensorView g;      // [T, H] log-decay (≤ 0)
};

// The state core for a varlen batch, token by token in each sequence (prefill chunks and
// decode steps alike), from the sequence's slot state, which is updated in place:
//   h_kk ← e^{gk}·h_kk + k̃k̃ᵀ;  fro = ‖h_kk‖_F;  λ = ridge · fro
//   x    = Chebyshev_N((h_kk + λI) x = q̂)  with N = num_iter[b]   (N = 0: x unused)
//   q_mix = q̂ + α(x − q̂)  (N = 0: q_mix = q̂)
//   h_kv ← e^{g}·h_kv + k̃ṽᵀ;   out = scale · h_kvᵀ q_mix
// gk = g when decay_kk, else 0. Everything fp32.
struct GkaCoreParams {
  tensor::TensorView q;                 // [T, H, D] F32 q̂
  tensor::TensorView k;                 // [T, H, D] F32 k̃
  tensor::TensorView v;                 // [T, H, D] F32 ṽ
  tensor::TensorView alpha;             // [T, H] F32
  tensor::TensorView g;                 // [T, H] F32
  tensor::TensorView out;               // [T, H, D] F32
  tensor::TensorView h_kk;              // [num_slots, H, D, D] F32
  tensor::TensorView h_kv;              // [num_slots, H, D, D] F32
  const int32_t* slots = nullptr;       // [B]
  const int32_t* cu_seqlens = nullptr;  // [B + 1]
  const int32_t* num_iter = nullptr;    // [B] Chebyshev iterations per sequence (≥ 0)
  int32_t num_seqs = 0;
  int32_t max_seqlen = 0;     // launch sizing
  float ridge_ratio = 0.02f;  // λ = ridge_ratio · ‖h_kk‖_F
  float scale = 0.0f;         // D^-0.5 (gla_rescale) or 1
  bool decay_kk = true;       // use_forgetting_gate_kk
};

}  // namespace gka::kernels
