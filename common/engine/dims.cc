#include "common/engine/dims.h"

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

namespace gka::engine {

absl::StatusOr<ModelDims> DimsFromConfig(const model::ModelConfig& c, int tp, int rank) {
  if (tp < 1 || rank < 0 || rank >= tp) {
    return absl::InvalidArgumentError(absl::StrCat("bad tensor-parallel rank ", rank, " of ", tp));
  }
  const model::GkaDims g0 = c.gka.dims();
  auto divides = [&](int64_t n, const char* what) -> absl::Status {
    if (n % tp != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor-parallel size ", tp, " does not divide ", what, " (", n, ")"));
    }
    return absl::OkStatus();
  };
  GKA_RETURN_IF_ERROR(divides(c.num_key_value_heads, "num_key_value_heads"));
  GKA_RETURN_IF_ERROR(divides(c.num_attention_heads, "num_attention_heads"));
  GKA_RETURN_IF_ERROR(divides(c.intermediate_size, "intermediate_size"));
  if (c.num_gka_layers() > 0) {
    GKA_RETURN_IF_ERROR(divides(g0.num_k_heads, "gka num_k_heads"));
    GKA_RETURN_IF_ERROR(divides(g0.num_q_heads, "gka num_q_heads"));
    GKA_RETURN_IF_ERROR(divides(g0.num_heads, "gka heads"));
  }
  ModelDims d;
  d.tp_size = tp;
  d.tp_rank = rank;
  d.vocab = c.vocab_size;
  d.vocab_parallel = tp > 1 && c.vocab_size % tp == 0;
  d.vocab_shard = d.vocab_parallel ? c.vocab_size / tp : c.vocab_size;
  d.hidden = c.hidden_size;
  d.ffn = c.intermediate_size / tp;
  d.num_layers = c.num_layers();
  for (model::LayerKind k : c.layer_kinds) d.is_gka.push_back(k == model::LayerKind::kGka);
  d.hq = static_cast<int32_t>(c.num_attention_heads / tp);
  d.hkv = static_cast<int32_t>(c.num_key_value_heads / tp);
  d.head_dim = static_cast<int32_t>(c.head_dim);
  d.rope_theta = static_cast<float>(c.rope_theta);
  d.rms_eps = static_cast<float>(c.rms_norm_eps);
  const model::GkaDims& g = g0;
  d.gka_h = static_cast<int32_t>(g.num_heads / tp);
  d.gka_hq = static_cast<int32_t>(g.num_q_heads / tp);
  d.gka_hk = static_cast<int32_t>(g.num_k_heads / tp);
  d.gka_hv = static_cast<int32_t>(g.num_v_heads / tp);
  d.gka_d = static_cast<int32_t>(g.head_dim);
  d.dq = g.q_dim / tp;
  d.dk = g.k_dim / tp;
  d.dv = g.v_dim / tp;
  d.de = g.expanded_dim / tp;
  d.conv_k = static_cast<int32_t>(c.gka.conv_size);
  d.ridge = static_cast<float>(c.gka.ridge_strength);
  d.gka_norm_eps = static_cast<float>(c.gka.norm_eps);
  d.num_iter = static_cast<int32_t>(c.gka.num_iter);
  d.use_beta = c.gka.use_beta_gate;
  d.use_alpha = c.gka.use_alpha_connection;
  d.use_decay = c.gka.use_forgetting_gate;
  d.use_decay_kk = c.gka.use_forgetting_gate_kk;
  d.use_v_conv = c.gka.use_v_conv;
  d.use_gate = c.gka.use_gate;
  d.gla_rescale = c.gka.gla_rescale;
  return d;
}

}  // namespace gka::engine
