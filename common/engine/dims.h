// Model dimensions the engine uses, derived once from ModelConfig (one place that reads it).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/config.h"

namespace gka::engine {

// Per tensor-parallel rank: head counts and widths are this rank's share (model-spec §6);
// hidden and vocab are whole (norms and the embedding table are replicated; the lm_head is
// vocab-parallel, see vocab_shard).
struct ModelDims {
  int32_t tp_size = 1;
  int32_t tp_rank = 0;
  int64_t vocab = 0;
  // lm_head rows this rank holds and computes logits for: rows
  // [tp_rank * vocab_shard, (tp_rank + 1) * vocab_shard) when vocab_parallel, the ranks then
  // all-gathering the [R, vocab] logits; else all `vocab` rows (TP 1, or a vocabulary that
  // tp_size does not divide: a replicated lm_head, every rank computing every logit).
  int64_t vocab_shard = 0;
  bool vocab_parallel = false;
  int64_t hidden = 0;
  int64_t ffn = 0;
  int32_t num_layers = 0;
  std::vector<bool> is_gka;  // [num_layers]
  // attention
  int32_t hq = 0, hkv = 0, head_dim = 0;
  float rope_theta = 10000.f;
  float rms_eps = 1e-6f;
  // GKA
  int32_t gka_h = 0, gka_hq = 0, gka_hk = 0, gka_hv = 0, gka_d = 0;
  int32_t conv_k = 4;
  int64_t dq = 0, dk = 0, dv = 0, de = 0;
  float ridge = 0.02f;
  float gka_norm_eps = 1e-6f;
  int32_t num_iter = 30;
  bool use_beta = true, use_alpha = true, use_decay = true, use_decay_kk = true;
  bool use_v_conv = true, use_gate = true, gla_rescale = true;
};

// InvalidArgument when tp_size does not divide the attention KV heads, the GKA K/V heads or the
// MLP width (a GQA group or a GKA head must never straddle ranks).
absl::StatusOr<ModelDims> DimsFromConfig(const model::ModelConfig& config, int tp_size = 1,
                                         int tp_rank = 0);

}  // namespace gka::engine
