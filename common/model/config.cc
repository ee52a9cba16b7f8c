#include "common/model/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/status.h"
#include "common/model/json_util.h"

namespace gka::model {
namespace {

using internal::Json;
using internal::OptBool;
using internal::OptDouble;
using internal::OptInt;
using internal::OptString;

absl::Status Invalid(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("'", key, "' ", what));
}

// The model uses a feature gkaserve does not implement (valid config, wrong engine).
absl::Status Unsupported(absl::string_view key, absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat("'", key, "' ", what));
}

absl::StatusOr<int64_t> RequiredPositiveInt(const Json& d, absl::string_view key) {
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(d, key, key));
  if (!v) return Invalid(key, "is missing (required)");
  if (*v <= 0) return Invalid(key, absl::StrCat("must be > 0, got ", *v));
  return *v;
}

// Optional int that must be > 0 when given; `fallback` when absent or null.
absl::StatusOr<int64_t> OptionalPositiveInt(const Json& d, absl::string_view key,
                                            int64_t fallback) {
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(d, key, key));
  if (!v) return fallback;
  if (*v <= 0) return Invalid(key, absl::StrCat("must be > 0, got ", *v));
  return *v;
}

absl::Status CheckPositiveFinite(absl::string_view path, double v) {
  if (v > 0.0 && std::isfinite(v)) return absl::OkStatus();
  return Invalid(path, absl::StrCat("must be a finite number > 0, got ", v));
}

absl::StatusOr<double> OptionalPositiveDouble(const Json& d, absl::string_view key,
                                              double fallback) {
  GKA_ASSIGN_OR_RETURN(std::optional<double> v, OptDouble(d, key, key));
  if (!v) return fallback;
  GKA_RETURN_IF_ERROR(CheckPositiveFinite(key, *v));
  return *v;
}

// eos_token_id: null, an int, or a list of ints.
absl::StatusOr<std::vector<int64_t>> TokenIdList(const Json& d, absl::string_view key) {
  std::vector<int64_t> ids;
  const Json* v = internal::FindNonNull(d, key);
  if (v == nullptr) return ids;
  if (v->is_array()) {
    for (size_t i = 0; i < v->size(); ++i) {
      GKA_ASSIGN_OR_RETURN(int64_t id, internal::AsInt((*v)[i], absl::StrCat(key, "[", i, "]")));
      ids.push_back(id);
    }
  } else {
    GKA_ASSIGN_OR_RETURN(int64_t id, internal::AsInt(*v, key));
    ids.push_back(id);
  }
  for (int64_t id : ids) {
    if (id < 0) return Invalid(key, absl::StrCat("holds a negative token id ", id));
  }
  return ids;
}

absl::Status CheckTokenIdInVocab(absl::string_view key, int64_t id, int64_t vocab_size) {
  if (id >= vocab_size) {
    return Invalid(key, absl::StrCat("is ", id, ", outside vocab_size ", vocab_size));
  }
  return absl::OkStatus();
}

// ---- layer layout --------------------------------------------------------------------

absl::StatusOr<LayerKind> ClassifySymbol(absl::string_view symbol, size_t layer,
                                         absl::string_view source) {
  if (symbol == "*" || symbol == "full_attention") return LayerKind::kAttention;
  if (symbol == "GKA") return LayerKind::kGka;
  std::string hint;
  if (symbol == "GKA*" || symbol == "*DA") {
    hint =
        " (a fused training-time symbol; a released checkpoint lists '*' and 'GKA' "
        "per layer)";
  } else if (symbol == "M2" || symbol == "GDN" || symbol == "BMF" || symbol == "SWA") {
    hint = " (a layer type of the hybrid-model toolkit that gkaserve does not implement)";
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", source, "': layer ", layer, " has unsupported symbol '", symbol,
                   "'; supported are '*' (attention) and 'GKA'", hint));
}

absl::StatusOr<std::vector<LayerKind>> ParseLayout(const Json& d, int64_t num_layers) {
  std::vector<std::string> symbols;
  std::string source;
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> pattern,
                       OptString(d, "hybrid_override_pattern", "hybrid_override_pattern"));
  const Json* types = internal::FindNonNull(d, "layer_types");
  if (pattern && !pattern->empty()) {
    // Authoritative (model-spec §1.2); layer_types is ignored when the pattern exists.
    source = "hybrid_override_pattern";
    symbols = absl::StrSplit(*pattern, '-');
  } else if (types != nullptr) {
    source = "layer_types";
    if (!types->is_array()) {
      return Invalid(
          source, absl::StrCat("must be a list of strings, got ", internal::JsonTypeName(*types)));
    }
    for (size_t i = 0; i < types->size(); ++i) {
      const Json& t = (*types)[i];
      if (!t.is_string()) {
        return Invalid(absl::StrCat(source, "[", i, "]"),
                       absl::StrCat("must be a string, got ", internal::JsonTypeName(t)));
      }
      symbols.push_back(t.get<std::string>());
    }
  } else {
    return std::vector<LayerKind>(static_cast<size_t>(num_layers), LayerKind::kAttention);
  }
  std::vector<LayerKind> kinds;
  kinds.reserve(symbols.size());
  for (size_t i = 0; i < symbols.size(); ++i) {
    GKA_ASSIGN_OR_RETURN(LayerKind k, ClassifySymbol(symbols[i], i, source));
    kinds.push_back(k);
  }
  if (static_cast<int64_t>(kinds.size()) != num_layers) {
    return Invalid(source, absl::StrCat("has ", kinds.size(), " layers but num_hidden_layers is ",
                                        num_layers));
  }
  return kinds;
}

// ---- rope ----------------------------------------------------------------------------

absl::StatusOr<double> ParseRopeTheta(const Json& d) {
  const Json* rp = internal::FindNonNull(d, "rope_parameters");
  if (rp != nullptr && !rp->is_object()) {
    return Invalid("rope_parameters",
                   absl::StrCat("must be an object, got ", internal::JsonTypeName(*rp)));
  }
  std::optional<double> theta;
  std::string theta_key = "rope_parameters.rope_theta";
  if (rp != nullptr) {
    GKA_ASSIGN_OR_RETURN(std::optional<std::string> type,
                         OptString(*rp, "rope_type", "rope_parameters.rope_type"));
    if (type && *type != "default") {
      return Unsupported("rope_parameters.rope_type",
                         absl::StrCat("is '", *type,
                                      "'; only plain RoPE ('default') is "
                                      "implemented"));
    }
    GKA_ASSIGN_OR_RETURN(theta, OptDouble(*rp, "rope_theta", "rope_parameters.rope_theta"));
  }
  const Json* rs = internal::FindNonNull(d, "rope_scaling");
  if (rs != nullptr) {
    if (!rs->is_object()) {
      return Invalid("rope_scaling",
                     absl::StrCat("must be an object or null, got ", internal::JsonTypeName(*rs)));
    }
    GKA_ASSIGN_OR_RETURN(std::optional<std::string> type,
                         OptString(*rs, "rope_type", "rope_scaling.rope_type"));
    if (!type) {
      GKA_ASSIGN_OR_RETURN(type, OptString(*rs, "type", "rope_scaling.type"));
    }
    if (type && *type != "default") {
      return Unsupported("rope_scaling", absl::StrCat("is '", *type,
                                                      "'; only plain RoPE "
                                                      "(null or 'default') is implemented"));
    }
  }
  if (!theta) {
    theta_key = "rope_theta";
    GKA_ASSIGN_OR_RETURN(theta, OptDouble(d, "rope_theta", "rope_theta"));
  }
  const double value = theta.value_or(10000.0);
  GKA_RETURN_IF_ERROR(CheckPositiveFinite(theta_key, value));
  return value;
}

// ---- GKA sub-config ------------------------------------------------------------------

// Head counts and sizes stay unset until both dicts are merged; then the base config
// fills the gaps (an explicit null also means "from the base config", as in the reference).
struct PendingGka {
  GkaConfig cfg;
  std::optional<int64_t> hidden_size, head_dim, num_q_heads, num_k_heads, num_v_heads;
};

struct IntField {
  const char* key;
  int64_t GkaConfig::*member;
};
struct BoolField {
  const char* key;
  bool GkaConfig::*member;
};
struct DoubleField {
  const char* key;
  double GkaConfig::*member;
};
struct DerivedField {
  const char* key;
  std::optional<int64_t> PendingGka::*member;
};

constexpr IntField kIntFields[] = {
    {"num_iter", &GkaConfig::num_iter},
    {"conv_size", &GkaConfig::conv_size},
    {"chunk_size", &GkaConfig::chunk_size},
};
constexpr BoolField kBoolFields[] = {
    {"use_alpha_connection", &GkaConfig::use_alpha_connection},
    {"use_beta_gate", &GkaConfig::use_beta_gate},
    {"use_forgetting_gate", &GkaConfig::use_forgetting_gate},
    {"use_forgetting_gate_kk", &GkaConfig::use_forgetting_gate_kk},
    {"use_v_conv", &GkaConfig::use_v_conv},
    {"use_gate", &GkaConfig::use_gate},
    {"gla_rescale", &GkaConfig::gla_rescale},
    {"bp_lambda", &GkaConfig::bp_lambda},
    {"kv_learnable_residual", &GkaConfig::kv_learnable_residual},
};
constexpr DoubleField kDoubleFields[] = {
    {"ridge_strength", &GkaConfig::ridge_strength},
    {"norm_eps", &GkaConfig::norm_eps},
};
constexpr DerivedField kDerivedFields[] = {
    {"hidden_size", &PendingGka::hidden_size}, {"head_dim", &PendingGka::head_dim},
    {"num_q_heads", &PendingGka::num_q_heads}, {"num_k_heads", &PendingGka::num_k_heads},
    {"num_v_heads", &PendingGka::num_v_heads},
};

bool IsExplicitNull(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_null();
}

// Merges one dict (`gka_config` or `gka_overrides`) over `g`. Unknown keys are ignored, as
// the authors' config classes do.
absl::Status ApplyGkaDict(const Json& dict, absl::string_view dict_name, PendingGka* g) {
  if (!dict.is_object()) {
    return Invalid(dict_name,
                   absl::StrCat("must be an object, got ", internal::JsonTypeName(dict)));
  }
  auto path = [&](const char* key) { return absl::StrCat(dict_name, ".", key); };
  auto null_error = [&](const char* key, absl::string_view want) {
    return Invalid(path(key), absl::StrCat("must be ", want, ", got null"));
  };
  for (const IntField& f : kIntFields) {
    if (IsExplicitNull(dict, f.key)) return null_error(f.key, "an integer");
    GKA_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(dict, f.key, path(f.key)));
    if (v) g->cfg.*f.member = *v;
  }
  for (const BoolField& f : kBoolFields) {
    if (IsExplicitNull(dict, f.key)) return null_error(f.key, "true or false");
    GKA_ASSIGN_OR_RETURN(std::optional<bool> v, OptBool(dict, f.key, path(f.key)));
    if (v) g->cfg.*f.member = *v;
  }
  for (const DerivedField& f : kDerivedFields) {
    GKA_ASSIGN_OR_RETURN(std::optional<int64_t> v, OptInt(dict, f.key, path(f.key)));
    if (v || IsExplicitNull(dict, f.key)) g->*f.member = v;
  }
  for (const DoubleField& f : kDoubleFields) {
    if (IsExplicitNull(dict, f.key)) return null_error(f.key, "a number");
    GKA_ASSIGN_OR_RETURN(std::optional<double> v, OptDouble(dict, f.key, path(f.key)));
    if (v) g->cfg.*f.member = *v;
  }
  if (IsExplicitNull(dict, "solver_type")) return null_error("solver_type", "a string");
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> solver,
                       OptString(dict, "solver_type", path("solver_type")));
  if (solver) g->cfg.solver_type = *solver;
  if (const Json* rank = internal::FindNonNull(dict, "kv_proj_rank")) {
    return Unsupported(path("kv_proj_rank"),
                       absl::StrCat("is ", rank->dump(),
                                    ": the low-rank K/V head expansion "
                                    "is not implemented; only kv_proj_rank = null is "
                                    "supported"));
  }
  GKA_ASSIGN_OR_RETURN(std::optional<bool> conv_bias,
                       OptBool(dict, "conv_bias", path("conv_bias")));
  if (conv_bias.value_or(false)) {
    return Unsupported(path("conv_bias"), "is true; GKA short convolutions have no bias");
  }
  return absl::OkStatus();
}

absl::StatusOr<GkaConfig> ParseGka(const Json& d, const ModelConfig& base) {
  PendingGka g;
  const Json* dicts[2] = {internal::FindNonNull(d, "gka_config"),
                          internal::FindNonNull(d, "gka_overrides")};
  const char* names[2] = {"gka_config", "gka_overrides"};
  for (int i = 0; i < 2; ++i) {
    if (dicts[i] != nullptr) GKA_RETURN_IF_ERROR(ApplyGkaDict(*dicts[i], names[i], &g));
  }
  // Where a value came from, for messages: the last dict that set it, else its default.
  auto key_path = [&](const char* key) -> std::string {
    for (int i = 1; i >= 0; --i) {
      if (dicts[i] != nullptr && dicts[i]->contains(key)) return absl::StrCat(names[i], ".", key);
    }
    return absl::StrCat("gka_config.", key, " (default)");
  };
  GkaConfig c = g.cfg;
  c.hidden_size = g.hidden_size.value_or(base.hidden_size);
  c.head_dim = g.head_dim.value_or(base.head_dim);
  c.num_q_heads = g.num_q_heads.value_or(base.num_attention_heads);
  c.num_k_heads = g.num_k_heads.value_or(base.num_key_value_heads);
  c.num_v_heads = g.num_v_heads.value_or(base.num_key_value_heads);

  if (c.solver_type != "chebyshev") {
    return Invalid(key_path("solver_type"),
                   absl::StrCat("is '", c.solver_type, "'; only 'chebyshev' exists"));
  }
  const std::pair<const char*, int64_t> sizes[] = {{"hidden_size", c.hidden_size},
                                                   {"head_dim", c.head_dim},
                                                   {"num_q_heads", c.num_q_heads},
                                                   {"num_k_heads", c.num_k_heads},
                                                   {"num_v_heads", c.num_v_heads}};
  for (const auto& [key, v] : sizes) {
    if (v <= 0) return Invalid(key_path(key), absl::StrCat("must be > 0, got ", v));
  }
  if (c.hidden_size != base.hidden_size) {
    return Invalid(key_path("hidden_size"),
                   absl::StrCat("is ", c.hidden_size, " but hidden_size is ", base.hidden_size,
                                "; GKA layers read and write the residual stream"));
  }
  if (c.num_k_heads != c.num_v_heads) {
    return Invalid(
        key_path("num_k_heads"),
        absl::StrCat("(", c.num_k_heads, ") must equal num_v_heads (", c.num_v_heads, ")"));
  }
  const int64_t h = std::max({c.num_q_heads, c.num_k_heads, c.num_v_heads});
  for (const auto& [key, n] : {sizes[2], sizes[3], sizes[4]}) {
    if (h % n != 0) {
      return Invalid(key_path(key), absl::StrCat("(", n,
                                                 ") must divide the expanded head "
                                                 "count max(q, k, v heads) = ",
                                                 h));
    }
  }
  if (c.conv_size < 2) {
    return Invalid(key_path("conv_size"), absl::StrCat("must be >= 2, got ", c.conv_size));
  }
  if (c.num_iter < 0) {
    return Invalid(key_path("num_iter"), absl::StrCat("must be >= 0, got ", c.num_iter));
  }
  if (c.chunk_size <= 0) {
    return Invalid(key_path("chunk_size"), absl::StrCat("must be > 0, got ", c.chunk_size));
  }
  GKA_RETURN_IF_ERROR(CheckPositiveFinite(key_path("ridge_strength"), c.ridge_strength));
  GKA_RETURN_IF_ERROR(CheckPositiveFinite(key_path("norm_eps"), c.norm_eps));
  return c;
}

// ---- whole config --------------------------------------------------------------------

absl::StatusOr<ModelConfig> ParseModelConfig(const Json& d) {
  ModelConfig c;
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> model_type,
                       OptString(d, "model_type", "model_type"));
  c.model_type = model_type.value_or("");
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> dtype, OptString(d, "dtype", "dtype"));
  if (!dtype) {
    GKA_ASSIGN_OR_RETURN(dtype, OptString(d, "torch_dtype", "torch_dtype"));
  }
  c.dtype = dtype.value_or("");

  GKA_ASSIGN_OR_RETURN(c.vocab_size, RequiredPositiveInt(d, "vocab_size"));
  GKA_ASSIGN_OR_RETURN(c.hidden_size, RequiredPositiveInt(d, "hidden_size"));
  GKA_ASSIGN_OR_RETURN(c.intermediate_size, RequiredPositiveInt(d, "intermediate_size"));
  GKA_ASSIGN_OR_RETURN(c.num_hidden_layers, RequiredPositiveInt(d, "num_hidden_layers"));
  GKA_ASSIGN_OR_RETURN(c.num_attention_heads, RequiredPositiveInt(d, "num_attention_heads"));
  GKA_ASSIGN_OR_RETURN(c.num_key_value_heads,
                       OptionalPositiveInt(d, "num_key_value_heads", c.num_attention_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return Invalid("num_key_value_heads",
                   absl::StrCat("(", c.num_key_value_heads, ") must divide num_attention_heads (",
                                c.num_attention_heads, ")"));
  }
  // Floor division when derived, as transformers and the reference do.
  GKA_ASSIGN_OR_RETURN(c.head_dim,
                       OptionalPositiveInt(d, "head_dim", c.hidden_size / c.num_attention_heads));
  if (c.head_dim <= 0) {
    return Invalid("head_dim", absl::StrCat("derived as hidden_size / num_attention_heads = ",
                                            c.head_dim, "; set it explicitly"));
  }
  if (c.head_dim % 2 != 0) {
    return Invalid("head_dim",
                   absl::StrCat("must be even (RoPE rotates dimension pairs), got ", c.head_dim));
  }
  GKA_ASSIGN_OR_RETURN(c.rms_norm_eps, OptionalPositiveDouble(d, "rms_norm_eps", 1e-6));
  GKA_ASSIGN_OR_RETURN(c.rope_theta, ParseRopeTheta(d));
  GKA_ASSIGN_OR_RETURN(c.max_position_embeddings,
                       OptionalPositiveInt(d, "max_position_embeddings", 32768));
  GKA_ASSIGN_OR_RETURN(std::optional<bool> tie,
                       OptBool(d, "tie_word_embeddings", "tie_word_embeddings"));
  c.tie_word_embeddings = tie.value_or(false);

  GKA_ASSIGN_OR_RETURN(std::optional<bool> bias, OptBool(d, "attention_bias", "attention_bias"));
  if (bias.value_or(false)) {
    return Unsupported("attention_bias",
                       "is true; Qwen3 attention without q/k/v/o biases is "
                       "the only form implemented");
  }
  GKA_ASSIGN_OR_RETURN(std::optional<bool> sliding,
                       OptBool(d, "use_sliding_window", "use_sliding_window"));
  if (sliding.value_or(false)) {
    return Unsupported("use_sliding_window",
                       "is true; only full causal attention is "
                       "implemented");
  }
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> act, OptString(d, "hidden_act", "hidden_act"));
  if (act && *act != "silu") {
    return Unsupported("hidden_act",
                       absl::StrCat("is '", *act, "'; only 'silu' (SwiGLU MLP) is implemented"));
  }

  GKA_ASSIGN_OR_RETURN(c.bos_token_id, OptInt(d, "bos_token_id", "bos_token_id"));
  if (c.bos_token_id) {
    if (*c.bos_token_id < 0) return Invalid("bos_token_id", "must be >= 0");
    GKA_RETURN_IF_ERROR(CheckTokenIdInVocab("bos_token_id", *c.bos_token_id, c.vocab_size));
  }
  GKA_ASSIGN_OR_RETURN(c.eos_token_ids, TokenIdList(d, "eos_token_id"));
  for (int64_t id : c.eos_token_ids) {
    GKA_RETURN_IF_ERROR(CheckTokenIdInVocab("eos_token_id", id, c.vocab_size));
  }

  GKA_ASSIGN_OR_RETURN(c.layer_kinds, ParseLayout(d, c.num_hidden_layers));
  GKA_ASSIGN_OR_RETURN(c.gka, ParseGka(d, c));
  return c;
}

absl::StatusOr<GenerationDefaults> ParseGenerationDefaults(const Json& d) {
  GenerationDefaults g;
  GKA_ASSIGN_OR_RETURN(g.do_sample, OptBool(d, "do_sample", "do_sample"));
  GKA_ASSIGN_OR_RETURN(g.temperature, OptDouble(d, "temperature", "temperature"));
  if (g.temperature && (*g.temperature < 0.0 || !std::isfinite(*g.temperature))) {
    return Invalid("temperature", absl::StrCat("must be >= 0, got ", *g.temperature));
  }
  GKA_ASSIGN_OR_RETURN(g.top_k, OptInt(d, "top_k", "top_k"));
  if (g.top_k && *g.top_k < 0) {
    return Invalid("top_k", absl::StrCat("must be >= 0 (0 = off), got ", *g.top_k));
  }
  GKA_ASSIGN_OR_RETURN(g.top_p, OptDouble(d, "top_p", "top_p"));
  if (g.top_p && !(*g.top_p > 0.0 && *g.top_p <= 1.0)) {
    return Invalid("top_p", absl::StrCat("must be in (0, 1], got ", *g.top_p));
  }
  GKA_ASSIGN_OR_RETURN(g.bos_token_id, OptInt(d, "bos_token_id", "bos_token_id"));
  GKA_ASSIGN_OR_RETURN(g.eos_token_ids, TokenIdList(d, "eos_token_id"));
  return g;
}

// Parses `text` as a JSON object and hands it to `parse`, prefixing any error with the source.
template <typename T, typename Fn>
absl::StatusOr<T> ParseWith(absl::string_view text, absl::string_view source, Fn parse) {
  GKA_ASSIGN_OR_RETURN(Json doc, internal::ParseJson(text, source));
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": top level must be a JSON object, got ", internal::JsonTypeName(doc)));
  }
  absl::StatusOr<T> out = parse(doc);
  if (!out.ok()) return base::Annotate(out.status(), source);
  return out;
}

// T::FromJsonString over the file's contents, the path naming the source.
template <typename T>
absl::StatusOr<T> ParseFile(absl::string_view path) {
  GKA_ASSIGN_OR_RETURN(std::string text, internal::ReadFile(path));
  return T::FromJsonString(text, path);
}

}  // namespace

absl::string_view LayerKindSymbol(LayerKind kind) { return kind == LayerKind::kGka ? "GKA" : "*"; }

GkaDims GkaConfig::dims() const {
  GkaDims d;
  d.num_q_heads = num_q_heads;
  d.num_k_heads = num_k_heads;
  d.num_v_heads = num_v_heads;
  d.num_heads = std::max({num_q_heads, num_k_heads, num_v_heads});
  d.head_dim = head_dim;
  d.q_dim = num_q_heads * head_dim;
  d.k_dim = num_k_heads * head_dim;
  d.v_dim = num_v_heads * head_dim;
  d.expanded_dim = d.num_heads * head_dim;
  return d;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJsonString(absl::string_view json,
                                                        absl::string_view source) {
  return ParseWith<ModelConfig>(json, source, ParseModelConfig);
}

absl::StatusOr<ModelConfig> ModelConfig::FromJsonFile(absl::string_view path) {
  return ParseFile<ModelConfig>(path);
}

std::vector<int> ModelConfig::LayerIndices(LayerKind kind) const {
  std::vector<int> out;
  for (int i = 0; i < num_layers(); ++i) {
    if (layer_kinds[i] == kind) out.push_back(i);
  }
  return out;
}

int ModelConfig::num_gka_layers() const {
  return static_cast<int>(std::count(layer_kinds.begin(), layer_kinds.end(), LayerKind::kGka));
}

std::string ModelConfig::LayoutString() const {
  return absl::StrJoin(layer_kinds, "-", [](std::string* out, LayerKind k) {
    absl::StrAppend(out, LayerKindSymbol(k));
  });
}

absl::StatusOr<GenerationDefaults> GenerationDefaults::FromJsonString(absl::string_view json,
                                                                      absl::string_view source) {
  return ParseWith<GenerationDefaults>(json, source, ParseGenerationDefaults);
}

absl::StatusOr<GenerationDefaults> GenerationDefaults::FromJsonFile(absl::string_view path) {
  return ParseFile<GenerationDefaults>(path);
}

absl::StatusOr<GenerationDefaults> GenerationDefaults::FromModelDir(absl::string_view dir) {
  const std::filesystem::path path =
      std::filesystem::path(std::string(dir)) / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return GenerationDefaults{};
  return FromJsonFile(path.string());
}

}  // namespace gka::model
