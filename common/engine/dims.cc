#include "common/engine/dims.h"

namespace gka::engine {

ModelDims DimsFromConfig(const model::ModelConfig& c) {
  ModelDims d;
  d.vocab = c.vocab_size;
  d.hidden = c.hidden_size;
  d.ffn = c.intermediate_size;
  d.num_layers = c.num_layers();
  for (model::LayerKind k : c.layer_kinds) d.is_gka.push_back(k == model::LayerKind::kGka);
  d.hq = static_cast<int32_t>(c.num_attention_heads);
  d.hkv = static_cast<int32_t>(c.num_key_value_heads);
  d.head_dim = static_cast<int32_t>(c.head_dim);
  d.rope_theta = static_cast<float>(c.rope_theta);
  d.rms_eps = static_cast<float>(c.rms_norm_eps);
  const model::GkaDims g = c.gka.dims();
  d.gka_h = static_cast<int32_t>(g.num_heads);
  d.gka_hq = static_cast<int32_t>(g.num_q_heads);
  d.gka_hk = static_cast<int32_t>(g.num_k_heads);
  d.gka_hv = static_cast<int32_t>(g.num_v_heads);
  d.gka_d = static_cast<int32_t>(g.head_dim);
  d.dq = g.q_dim;
  d.dk = g.k_dim;
  d.dv = g.v_dim;
  d.de = g.expanded_dim;
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
