#include "common/model/tiny_model.h"

#include <cmath>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/status.h"
#include "common/model/config.h"
#include "common/model/json_util.h"
#include "common/model/safetensors.h"
#include "common/model/weights.h"

namespace gka::model {
namespace {

namespace fs = std::filesystem;
using internal::Json;
using tensor::DType;

constexpr int64_t kBosId = 151643;  // <|endoftext|>
constexpr int64_t kEosId = 151645;  // <|im_end|>

// Draws from a standardised engine so the files are identical across standard libraries
// (std::normal_distribution is implementation-defined).
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  double Uniform(double lo = 0.0, double hi = 1.0) {
    return lo + (hi - lo) * static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  }
  double Normal() {  // Box-Muller; 1 - u keeps the log argument in (0, 1]
    const double u1 = 1.0 - Uniform(), u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  std::mt19937_64 engine_;
};

// One value of tensor `name` (shape `shape`), with make_random_weights' distributions:
// activations stay O(1) and every GKA gate is active.
class WeightSampler {
 public:
  WeightSampler(const std::string& name, const tensor::Shape& shape) {
    const std::vector<absl::string_view> parts = absl::StrSplit(name, '.');
    const bool param = absl::EndsWith(name, ".weight") || absl::EndsWith(name, ".bias");
    const absl::string_view leaf = param ? parts[parts.size() - 2] : parts.back();
    if (absl::EndsWith(name, "A_log")) {
      kind_ = kALog;
    } else if (absl::EndsWith(name, "dt_bias")) {
      kind_ = kDtBias;
    } else if (leaf == "input_layernorm" || leaf == "post_attention_layernorm" || leaf == "norm" ||
               leaf == "q_norm" || leaf == "k_norm" || leaf == "o_norm") {
      kind_ = kNorm;
    } else if (absl::EndsWith(leaf, "conv1d")) {
      kind_ = kConv;
    } else if (absl::EndsWith(name, ".bias")) {
      kind_ = kBias;
    } else if (leaf == "embed_tokens") {
      kind_ = kEmbedding;
    } else {
      kind_ = kLinear;
      linear_std_ = 1.0 / std::sqrt(static_cast<double>(shape[1]));
    }
  }

  double Sample(Rng& rng) const {
    switch (kind_) {
      case kALog:
        return std::log(rng.Uniform(1.0, 16.0));
      case kDtBias: {
        // dt log-uniform in [1e-3, 0.1], stored as softplus^-1(dt) (the authors' init).
        const double dt = std::exp(rng.Uniform(std::log(1e-3), std::log(0.1)));
        return dt + std::log(-std::expm1(-dt));
      }
      case kNorm:
        return 1.0 + 0.1 * rng.Normal();
      case kConv:
        return rng.Uniform(-0.5, 0.5);
      case kBias:
        return 0.5 * rng.Normal();
      case kEmbedding:
        return rng.Normal();
      case kLinear:
        return linear_std_ * rng.Normal();
    }
    return 0.0;
  }

 private:
  enum Kind { kALog, kDtBias, kNorm, kConv, kBias, kEmbedding, kLinear } kind_;
  double linear_std_ = 0.0;
};

Json TokenIdOrNull(int64_t id, int64_t vocab) { return id < vocab ? Json(id) : Json(nullptr); }

Json ConfigJson(const TinyModelOptions& o) {
  const std::vector<std::string> symbols = absl::StrSplit(o.pattern, '-');
  const int64_t layers = static_cast<int64_t>(symbols.size());
  const Json gka = {
      // Derived from the base config and written out in full, as the priming tool does.
      {"hidden_size", o.hidden_size},
      {"head_dim", o.head_dim},
      {"num_q_heads", o.num_attention_heads},
      {"num_k_heads", o.num_key_value_heads},
      {"num_v_heads", o.num_key_value_heads},
      // The released models' values.
      {"use_alpha_connection", true},
      {"use_v_conv", true},
      {"use_forgetting_gate", true},
      {"gla_rescale", true},
      {"solver_type", "chebyshev"},
      {"bp_lambda", true},
      {"num_iter", o.num_iter},
      {"ridge_strength", 0.02},
      {"use_gate", true},
      {"conv_size", 4},
      {"norm_eps", 1e-6},
      {"use_forgetting_gate_kk", true},
      {"use_beta_gate", true},
      {"chunk_size", 64},
      {"kv_proj_rank", nullptr},
      {"kv_learnable_residual", false},
  };
  return {
      {"architectures", Json::array({"HybridQwen3ForCausalLM"})},
      {"model_type", "hybrid_qwen3"},
      {"vocab_size", o.vocab_size},
      {"hidden_size", o.hidden_size},
      {"intermediate_size", o.intermediate_size},
      {"num_hidden_layers", layers},
      {"num_attention_heads", o.num_attention_heads},
      {"num_key_value_heads", o.num_key_value_heads},
      {"head_dim", o.head_dim},
      {"hidden_act", "silu"},
      {"max_position_embeddings", o.max_position_embeddings},
      {"initializer_range", 0.02},
      {"rms_norm_eps", 1e-6},
      {"use_cache", true},
      {"tie_word_embeddings", o.tie_word_embeddings},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"use_sliding_window", false},
      {"sliding_window", nullptr},
      {"max_window_layers", layers},
      {"hybrid_override_pattern", o.pattern},
      {"layer_types", symbols},
      {"gka_config", gka},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", o.rope_theta}}},
      {"bos_token_id", TokenIdOrNull(kBosId, o.vocab_size)},
      {"eos_token_id", TokenIdOrNull(kEosId, o.vocab_size)},
      {"pad_token_id", nullptr},
      {"dtype", o.weight_dtype == DType::kF32   ? "float32"
                : o.weight_dtype == DType::kF16 ? "float16"
                                                : "bfloat16"},
      {"transformers_version", "5.0.0"},
  };
}

// Qwen3-32B's sampling defaults, with the stop ids that exist in this vocabulary.
Json GenerationConfigJson(const TinyModelOptions& o) {
  Json eos = Json::array();
  for (int64_t id : {kEosId, kBosId}) {
    if (id < o.vocab_size) eos.push_back(id);
  }
  return {
      {"bos_token_id", TokenIdOrNull(kBosId, o.vocab_size)},
      {"pad_token_id", TokenIdOrNull(kBosId, o.vocab_size)},
      {"eos_token_id", eos},
      {"do_sample", true},
      {"temperature", 0.6},
      {"top_k", 20},
      {"top_p", 0.95},
      {"transformers_version", "5.0.0"},
  };
}

absl::Status CopyTokenizer(const std::string& from, const fs::path& to) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    const fs::path src = fs::path(from) / name;
    std::error_code ec;
    if (!fs::is_regular_file(src, ec)) {
      return absl::NotFoundError(
          absl::StrCat("tokenizer directory ", from, " has no ", name,
                       " (run the npm install step, or pass another tokenizer directory)"));
    }
    fs::copy_file(src, to / name, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("cannot copy ", src.string(), " to ", to.string(), ": ", ec.message()));
    }
  }
  return absl::OkStatus();
}

// SplitMix64: a counter-based stream, so chunk c of tensor t is the same whatever thread
// draws it.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void StoreValue(const tensor::Buffer& b, int64_t i, float v) {
  switch (b.dtype()) {
    case DType::kF32:
      b.data<float>()[i] = v;
      break;
    case DType::kF16:
      b.data<uint16_t>()[i] = tensor::FloatToF16(v);
      break;
    default:
      b.data<uint16_t>()[i] = tensor::FloatToBF16(v);
  }
}

// Fills `b` for tensor number `index` in parallel chunks of 1 Mi elements.
void FillFast(const ExpectedTensor& e, uint64_t seed, uint64_t index, tensor::Buffer& b) {
  constexpr int64_t kChunk = 1 << 20;
  const int64_t n = e.shape.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const WeightSampler sampler(e.name, e.shape);
  const bool big = e.shape.rank() == 2 && !absl::StrContains(e.name, "conv1d");
  // Uniform(-a, a) has standard deviation a/sqrt(3).
  const double half_width =
      std::sqrt(3.0) * (absl::StrContains(e.name, "embed_tokens")
                            ? 1.0
                            : 1.0 / std::sqrt(static_cast<double>(e.shape[big ? 1 : 0])));
  const int threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int64_t c = t; c < chunks; c += threads) {
        const uint64_t key = Mix(seed ^ Mix(index * 0x100000001b3ull + static_cast<uint64_t>(c)));
        const int64_t end = std::min(n, (c + 1) * kChunk);
        if (big) {
          uint64_t state = key;
          for (int64_t i = c * kChunk; i < end; ++i) {
            state = Mix(state);
            const double u = static_cast<double>(state >> 11) * 0x1.0p-53;
            StoreValue(b, i, static_cast<float>((2.0 * u - 1.0) * half_width));
          }
        } else {
          Rng rng(key);
          for (int64_t i = c * kChunk; i < end; ++i) {
            StoreValue(b, i, static_cast<float>(sampler.Sample(rng)));
          }
        }
      }
    });
  }
  for (std::thread& th : pool) th.join();
}

// Streams shards to disk one tensor at a time (a 32B model does not fit in memory twice).
absl::Status WriteSharded(const ModelConfig& config, const TinyModelOptions& o,
                          const fs::path& dir) {
  const std::vector<ExpectedTensor> all = ExpectedWeightShapes(config);
  const size_t elem = tensor::DTypeSize(o.weight_dtype);
  std::vector<std::vector<size_t>> shards(1);
  int64_t in_shard = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const int64_t bytes = all[i].shape.numel() * static_cast<int64_t>(elem);
    if (in_shard > 0 && in_shard + bytes > o.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += bytes;
  }
  Json weight_map = Json::object();
  int64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    Json header = {{"__metadata__", {{"format", "pt"}}}};
    uint64_t offset = 0;
    for (size_t i : shards[s]) {
      const uint64_t bytes = static_cast<uint64_t>(all[i].shape.numel()) * elem;
      std::vector<int64_t> dims;
      for (int d = 0; d < all[i].shape.rank(); ++d) dims.push_back(all[i].shape[d]);
      header[all[i].name] = {{"dtype", std::string(tensor::DTypeName(o.weight_dtype))},
                             {"shape", dims},
                             {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
      weight_map[all[i].name] = name;
    }
    total += static_cast<int64_t>(offset);
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const fs::path path = dir / name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return absl::InternalError(absl::StrCat("cannot write ", path.string()));
    const uint64_t len = text.size();
    bool ok = std::fwrite(&len, 8, 1, f) == 1 && std::fwrite(text.data(), 1, len, f) == len;
    for (size_t i : shards[s]) {
      if (!ok) break;
      tensor::Buffer b = tensor::Buffer::Allocate(all[i].shape, o.weight_dtype);
      FillFast(all[i], o.seed, i, b);
      ok = std::fwrite(b.data<void>(), 1, b.nbytes(), f) == b.nbytes();
    }
    if (std::fclose(f) != 0 || !ok) {
      return absl::InternalError(absl::StrCat("short write to ", path.string(), " (disk full?)"));
    }
  }
  const Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  return internal::WriteFileAtomically((dir / "model.safetensors.index.json").string(),
                                       index.dump(2) + "\n");
}

}  // namespace

absl::StatusOr<TinyModelOptions> PresetOptions(absl::string_view preset) {
  TinyModelOptions o;
  o.vocab_size = 151936;
  o.hidden_size = 5120;
  o.intermediate_size = 25600;
  o.num_attention_heads = 64;
  o.num_key_value_heads = 8;
  o.head_dim = 128;
  o.max_position_embeddings = 131072;
  o.rope_theta = 5e6;
  o.shard_bytes = 5'000'000'000;
  std::vector<std::string> layers(64, "*");
  if (preset == "hqwen3-32b-gka") {
    for (int i = 1; i < 64; i += 2) layers[i] = "GKA";
  } else if (preset == "hqwen3-32b-gka-importance") {
    for (int i : {2,  3,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 20, 22, 23, 24,
                  26, 27, 28, 29, 32, 33, 35, 36, 39, 40, 41, 43, 44, 57, 60, 63}) {
      layers[i] = "GKA";
    }
  } else if (preset != "qwen3-32b") {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown preset '", preset, "' (hqwen3-32b-gka, hqwen3-32b-gka-importance, qwen3-32b)"));
  }
  o.pattern = absl::StrJoin(layers, "-");
  return o;
}

absl::Status MakeTinyModel(const TinyModelOptions& options, absl::string_view out_dir) {
  if (options.weight_dtype != DType::kBF16 && options.weight_dtype != DType::kF32 &&
      options.weight_dtype != DType::kF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiny model weight_dtype must be BF16, F16 or F32, got ",
                     tensor::DTypeName(options.weight_dtype)));
  }
  const Json config_json = ConfigJson(options);
  const std::string config_text = config_json.dump(2) + "\n";
  // The parser is the single judge of what makes a valid model; errors name the key, which
  // matches the option of the same name.
  absl::StatusOr<ModelConfig> config =
      ModelConfig::FromJsonString(config_text, "tiny model options");
  if (!config.ok()) return absl::InvalidArgumentError(config.status().message());

  const fs::path dir{std::string(out_dir)};
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  }
  GKA_RETURN_IF_ERROR(internal::WriteFileAtomically((dir / "config.json").string(), config_text));
  GKA_RETURN_IF_ERROR(internal::WriteFileAtomically((dir / "generation_config.json").string(),
                                                    GenerationConfigJson(options).dump(2) + "\n"));

  if (options.shard_bytes > 0) {
    GKA_RETURN_IF_ERROR(WriteSharded(*config, options, dir));
    if (options.tokenizer_dir) GKA_RETURN_IF_ERROR(CopyTokenizer(*options.tokenizer_dir, dir));
    return absl::OkStatus();
  }
  Rng rng(options.seed);
  std::vector<tensor::Buffer> buffers;
  std::vector<NamedTensor> tensors;
  for (const ExpectedTensor& e : ExpectedWeightShapes(*config)) {
    const WeightSampler sampler(e.name, e.shape);
    tensor::Buffer b = tensor::Buffer::Allocate(e.shape, options.weight_dtype);
    const int64_t n = e.shape.numel();
    for (int64_t i = 0; i < n; ++i) {
      StoreValue(b, i, static_cast<float>(sampler.Sample(rng)));
    }
    tensors.push_back({e.name, b.view()});
    buffers.push_back(std::move(b));
  }
  GKA_RETURN_IF_ERROR(
      WriteSafetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}}));
  if (options.tokenizer_dir) GKA_RETURN_IF_ERROR(CopyTokenizer(*options.tokenizer_dir, dir));
  return absl::OkStatus();
}

}  // namespace gka::model
