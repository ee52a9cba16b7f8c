// The model's weights in backend memory, in the layout the engine's ops want.
//
// GEMM weights keep the checkpoint's [out_features, in_features] layout in the engine dtype.
// Projections that read the same input are stacked along the output dimension into one
// matrix, so one GEMM replaces several small ones (at decode a GEMM's time is moving its
// weight; many small ones are launch-bound): attention q|k|v, the GKA layer's seven input
// projections q|k|v|a|b|alpha|g, and the MLP's gate|up. Each part's rows are this rank's slice
// of that projection (column parallel), so a stacked matrix is also the per-rank concatenation
// of the separate ones, and a part is a row range of it (ProjectionParts).
// Small per-channel vectors (norm weights, conv weights, A_log, dt_bias, biases) are F32
// whatever the checkpoint stores (model-spec §10: gates are computed in fp32).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/dims.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "kernels/api/backend.h"

namespace gka::engine {

// Row ranges of a stacked projection matrix, in its order. `sizes[i]` output features of part
// i start at row `offsets[i]`; `total` rows in all. A part that is absent (a GKA flag off) has
// size 0.
struct ProjectionParts {
  std::vector<int64_t> offsets;
  std::vector<int64_t> sizes;
  int64_t total = 0;
};

// Parts of AttentionWeights::qkv.
enum AttnPart : int { kAttnPartQ, kAttnPartK, kAttnPartV, kNumAttnParts };
// Parts of GkaWeights::in_proj; a, b and alpha are adjacent so GkaGates reads them with one
// row stride.
enum GkaPart : int {
  kGkaPartQ,
  kGkaPartK,
  kGkaPartV,
  kGkaPartA,
  kGkaPartB,      // size 0 without the beta gate
  kGkaPartAlpha,  // size 0 without the alpha connection
  kGkaPartG,      // size 0 without the output gate
  kNumGkaParts
};
ProjectionParts AttentionParts(const ModelDims& dims);  // this rank's q, k, v widths
ProjectionParts GkaParts(const ModelDims& dims);        // this rank's seven widths

struct AttentionWeights {
  // [(Hq + 2 Hkv) * D, hidden]: rows AttentionParts(dims) = q_proj | k_proj | v_proj.
  kernels::DeviceBuffer qkv;
  kernels::DeviceBuffer o_proj;  // [hidden, Hq*D]
  kernels::DeviceBuffer q_norm;  // [D] F32
  kernels::DeviceBuffer k_norm;  // [D] F32
};

struct GkaWeights {
  // [GkaParts(dims).total, hidden]: rows q_proj [Dq] | k_proj [Dk] | v_proj [Dv] | a_proj [H] |
  // b_proj [H] (beta gate) | alpha_proj [H] (alpha connection) | g_proj [H*D] (output gate).
  kernels::DeviceBuffer in_proj;
  kernels::DeviceBuffer o_proj;      // [hidden, H*D]
  kernels::DeviceBuffer b_bias;      // [H] F32
  kernels::DeviceBuffer alpha_bias;  // [H] F32
  kernels::DeviceBuffer a_log;       // [H] F32
  kernels::DeviceBuffer dt_bias;     // [H] F32
  kernels::DeviceBuffer q_conv;      // [Dq, K] F32
  kernels::DeviceBuffer k_conv;      // [Dk, K] F32
  kernels::DeviceBuffer v_conv;      // [Dv, K] F32 (empty without v conv)
  kernels::DeviceBuffer o_norm;      // [D] F32
};

struct LayerWeights {
  kernels::DeviceBuffer input_norm;  // [hidden] F32
  kernels::DeviceBuffer post_norm;   // [hidden] F32
  AttentionWeights attn;             // attention layers only
  GkaWeights gka;                    // GKA layers only
  kernels::DeviceBuffer gate_up;     // [2F, hidden]: rows [0, F) gate_proj, [F, 2F) up_proj
  kernels::DeviceBuffer down;        // [hidden, F]
};

struct ModelWeights {
  kernels::DeviceBuffer embed;       // [V, hidden]
  kernels::DeviceBuffer final_norm;  // [hidden] F32
  // [dims.vocab_shard, hidden]: this rank's rows of lm_head (of embed when tied), the whole
  // [V, hidden] when not vocab-parallel.
  kernels::DeviceBuffer lm_head;
  std::vector<LayerWeights> layers;
};

// Validates the checkpoint against the config (presence, shapes, dtypes), then uploads this
// tensor-parallel rank's share (dims.tp_rank of dims.tp_size), reading only that share of each
// tensor from the mapped files.
absl::StatusOr<ModelWeights> LoadWeights(kernels::Backend& backend,
                                         const model::ModelConfig& config,
                                         const model::Checkpoint& checkpoint, tensor::DType dtype,
                                         const ModelDims& dims);

}  // namespace gka::engine
