// The model's weights in backend memory, in the layout the engine's ops want.
//
// GEMM weights keep the checkpoint's [out_features, in_features] layout in the engine dtype;
// gate_proj and up_proj are stacked into one [2F, hidden] matrix (one GEMM, then SiluMul).
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

struct AttentionWeights {
  kernels::DeviceBuffer q_proj;  // [Hq*D, hidden]
  kernels::DeviceBuffer k_proj;  // [Hkv*D, hidden]
  kernels::DeviceBuffer v_proj;  // [Hkv*D, hidden]
  kernels::DeviceBuffer o_proj;  // [hidden, Hq*D]
  kernels::DeviceBuffer q_norm;  // [D] F32
  kernels::DeviceBuffer k_norm;  // [D] F32
};

struct GkaWeights {
  kernels::DeviceBuffer q_proj;      // [Dq, hidden]
  kernels::DeviceBuffer k_proj;      // [Dk, hidden]
  kernels::DeviceBuffer v_proj;      // [Dv, hidden]
  kernels::DeviceBuffer a_proj;      // [H, hidden]
  kernels::DeviceBuffer b_proj;      // [H, hidden] (empty without beta gate)
  kernels::DeviceBuffer alpha_proj;  // [H, hidden] (empty without alpha connection)
  kernels::DeviceBuffer g_proj;      // [H*D, hidden] (empty without output gate)
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
  kernels::DeviceBuffer lm_head;     // [V, hidden] (a copy of embed when tied)
  std::vector<LayerWeights> layers;
};

// Validates the checkpoint against the config (presence, shapes, dtypes), then uploads this
// tensor-parallel rank's share (dims.tp_rank of dims.tp_size).
absl::StatusOr<ModelWeights> LoadWeights(kernels::Backend& backend,
                                         const model::ModelConfig& config,
                                         const model::Checkpoint& checkpoint, tensor::DType dtype,
                                         const ModelDims& dims);

}  // namespace gka::engine
