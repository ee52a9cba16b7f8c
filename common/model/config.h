// Model configuration: config.json of a HybridQwen3 + Gated KalmaNet checkpoint
// (model-spec §1) and the optional generation_config.json.
//
// Owns: parsing and validation of both files into plain structs — layer layout
// (`hybrid_override_pattern`, else `layer_types`, else all attention), rope theta (both the
// `rope_parameters` and the legacy `rope_theta` form), the GKA sub-config (defaults, then
// `gka_config`, then `gka_overrides`). Bad input is an absl::Status naming the key and the
// file, never a crash. Must not depend on anything but base (no tensor, no kernels, no engine).
//
//   GKA_ASSIGN_OR_RETURN(ModelConfig cfg,
//                        ModelConfig::FromJsonFile("/models/gka-32b/config.json"));
//   for (int layer : cfg.GkaLayerIndices()) { ... }
//   const GkaDims d = cfg.gka.dims();          // d.num_heads, d.q_dim, d.expanded_dim, ...
//
// Thread-safety: the structs are plain values; parse once, share const copies freely.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::model {

enum class LayerKind : uint8_t {
  kAttention,  // "*" (or "full_attention" in a plain Qwen3 `layer_types`)
  kGka,        // "GKA"
};

// "*" or "GKA": the symbol a `hybrid_override_pattern` uses.
absl::string_view LayerKindSymbol(LayerKind kind);

// Sizes derived from the GKA head counts. H is the number of "expanded" heads every
// per-head quantity (gates, h_kk, h_kv) lives on.
struct GkaDims {
  int64_t num_q_heads = 0;   // Hq
  int64_t num_k_heads = 0;   // Hk
  int64_t num_v_heads = 0;   // Hv
  int64_t num_heads = 0;     // H = max(Hq, Hk, Hv)
  int64_t head_dim = 0;      // D
  int64_t q_dim = 0;         // Dq = Hq * D
  int64_t k_dim = 0;         // Dk = Hk * D
  int64_t v_dim = 0;         // Dv = Hv * D
  int64_t expanded_dim = 0;  // De = H * D (g_proj rows, o_proj columns)
};

// The merged GKA sub-config (model-spec §1.3). Field defaults are the authors' defaults
// (GKA_DEFAULTS of the reference); head counts and sizes default from the base config.
struct GkaConfig {
  int64_t hidden_size = 0;
  int64_t head_dim = 0;
  int64_t num_q_heads = 0;
  int64_t num_k_heads = 0;
  int64_t num_v_heads = 0;
  int64_t num_iter = 30;         // Chebyshev iterations; the serving default, tiers override
  double ridge_strength = 0.02;  // a ratio: lambda_t = ridge_strength * ||h_kk||_F
  int64_t conv_size = 4;         // short-conv kernel width K; state keeps K-1 columns
  double norm_eps = 1e-6;        // eps of the gated output norm o_norm
  int64_t chunk_size = 64;       // training-kernel block size; no effect on the math
  bool use_alpha_connection = true;
  bool use_beta_gate = true;
  bool use_forgetting_gate = true;
  bool use_forgetting_gate_kk = true;
  bool use_v_conv = true;
  bool use_gate = true;
  bool gla_rescale = true;  // readout scale D^-0.5 (else 1)
  bool bp_lambda = true;    // training only
  bool kv_learnable_residual = false;
  std::string solver_type = "chebyshev";

  GkaDims dims() const;
};

struct ModelConfig {
  std::string model_type;  // e.g. "hybrid_qwen3"; informational
  std::string dtype;       // "dtype"/"torch_dtype" as written, e.g. "bfloat16"; informational,
                           // the safetensors header is authoritative for each tensor
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // explicit, else hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  // Default when absent: 32768 (the transformers Qwen3Config default).
  int64_t max_position_embeddings = 32768;
  bool tie_word_embeddings = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config.json's eos_token_id (int or list); may be empty
  std::vector<LayerKind> layer_kinds;  // one per layer, size num_hidden_layers
  GkaConfig gka;

  // `source` names the input in error messages (a path, or "config.json").
  static absl::StatusOr<ModelConfig> FromJsonString(absl::string_view json,
                                                    absl::string_view source = "config.json");
  static absl::StatusOr<ModelConfig> FromJsonFile(absl::string_view path);

  int num_layers() const { return static_cast<int>(layer_kinds.size()); }
  std::vector<int> LayerIndices(LayerKind kind) const;  // ascending
  std::vector<int> GkaLayerIndices() const { return LayerIndices(LayerKind::kGka); }
  std::vector<int> AttentionLayerIndices() const { return LayerIndices(LayerKind::kAttention); }
  int num_gka_layers() const;
  // The layout as a pattern string, e.g. "*-GKA-*-GKA".
  std::string LayoutString() const;

  int64_t q_dim() const { return num_attention_heads * head_dim; }   // attention q rows
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }  // attention k/v rows
};

// Sampling defaults from generation_config.json; every field is optional there.
struct GenerationDefaults {
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id, int or list

  static absl::StatusOr<GenerationDefaults> FromJsonString(
      absl::string_view json, absl::string_view source = "generation_config.json");
  static absl::StatusOr<GenerationDefaults> FromJsonFile(absl::string_view path);
  // <dir>/generation_config.json, or all-empty defaults when the file does not exist.
  static absl::StatusOr<GenerationDefaults> FromModelDir(absl::string_view dir);
};

}  // namespace gka::model
