// gka make-tiny-model: a small random-weight hybrid checkpoint in the real release format
// (config.json, generation_config.json, model.safetensors, and the real Qwen3 tokenizer.json +
// tokenizer_config.json), so a fresh machine can chat end to end.
//
//   gka make-tiny-model --out DIR [--pattern '*-GKA-*-GKA'] [--hidden 128] [--seed 0]
//                       [--tokenizer-dir third_party/npm/.../models | --no-tokenizer]
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/model/tiny_model.h"

namespace gka::cli {
namespace {

struct TinyFlags {
  model::TinyModelOptions options;
  std::string out;
  std::string tokenizer_dir = GKA_DEFAULT_TOKENIZER_DIR;
  bool no_tokenizer = false;
  std::string dtype = "bf16";
};

absl::Status RunTiny(TinyFlags flags) {
  if (!flags.no_tokenizer) flags.options.tokenizer_dir = flags.tokenizer_dir;
  if (flags.dtype == "fp32") {
    flags.options.weight_dtype = tensor::DType::kF32;
  } else if (flags.dtype != "bf16") {
    return absl::InvalidArgumentError("--dtype must be bf16 or fp32");
  }
  absl::Status s = model::MakeTinyModel(flags.options, flags.out);
  if (s.ok()) GKA_LOG(INFO) << "wrote tiny model to " << flags.out;
  return s;
}

struct RandomFlags {
  std::string preset = "hqwen3-32b-gka";
  std::string out;
  uint64_t seed = 0;
  double shard_gb = 5.0;
  std::string tokenizer_dir = GKA_DEFAULT_TOKENIZER_DIR;
  bool no_tokenizer = false;
};

absl::Status RunRandom(const RandomFlags& f) {
  GKA_ASSIGN_OR_RETURN(model::TinyModelOptions o, model::PresetOptions(f.preset));
  o.seed = f.seed;
  o.shard_bytes = static_cast<int64_t>(f.shard_gb * 1e9);
  if (o.shard_bytes <= 0) return absl::InvalidArgumentError("--shard-gb must be > 0");
  if (!f.no_tokenizer) o.tokenizer_dir = f.tokenizer_dir;
  GKA_LOG(INFO) << "writing " << f.preset << " (" << o.pattern << ") to " << f.out;
  GKA_RETURN_IF_ERROR(model::MakeTinyModel(o, f.out));
  GKA_LOG(INFO) << "done";
  return absl::OkStatus();
}

}  // namespace

void RegisterMakeRandomModel(CLI::App& app, Action& run) {
  auto f = std::make_shared<RandomFlags>();
  CLI::App* cmd = app.add_subcommand(
      "make-random-model", "Write a real-size random checkpoint (sharded, with an index)");
  cmd->add_option("--preset", f->preset, "hqwen3-32b-gka | hqwen3-32b-gka-importance | qwen3-32b")
      ->capture_default_str();
  cmd->add_option("--out", f->out, "output directory")->required();
  cmd->add_option("--seed", f->seed, "weight seed")->capture_default_str();
  cmd->add_option("--shard-gb", f->shard_gb, "shard size in GB")->capture_default_str();
  cmd->add_option("--tokenizer-dir", f->tokenizer_dir, "tokenizer.json + tokenizer_config.json")
      ->capture_default_str();
  cmd->add_flag("--no-tokenizer", f->no_tokenizer, "write no tokenizer files");
  cmd->callback([f, &run] { run = [f] { return RunRandom(*f); }; });
}

void RegisterMakeTinyModel(CLI::App& app, Action& run) {
  auto f = std::make_shared<TinyFlags>();
  CLI::App* cmd = app.add_subcommand("make-tiny-model", "Write a small random hybrid checkpoint");
  cmd->add_option("--out", f->out, "output directory")->required();
  cmd->add_option("--pattern", f->options.pattern, "hybrid_override_pattern")
      ->capture_default_str();
  cmd->add_option("--hidden", f->options.hidden_size, "hidden size")->capture_default_str();
  cmd->add_option("--intermediate", f->options.intermediate_size, "MLP width")
      ->capture_default_str();
  cmd->add_option("--heads", f->options.num_attention_heads, "query heads")->capture_default_str();
  cmd->add_option("--kv-heads", f->options.num_key_value_heads, "key/value heads")
      ->capture_default_str();
  cmd->add_option("--head-dim", f->options.head_dim, "head dimension")->capture_default_str();
  cmd->add_option("--vocab", f->options.vocab_size, "vocabulary rows")->capture_default_str();
  cmd->add_option("--num-iter", f->options.num_iter, "gka_config.num_iter")->capture_default_str();
  cmd->add_option("--seed", f->options.seed, "weight seed")->capture_default_str();
  cmd->add_option("--dtype", f->dtype, "bf16 | fp32 weights")->capture_default_str();
  cmd->add_option("--tokenizer-dir", f->tokenizer_dir,
                  "directory with tokenizer.json and tokenizer_config.json")
      ->capture_default_str();
  cmd->add_flag("--no-tokenizer", f->no_tokenizer, "write no tokenizer files");
  cmd->callback([f, &run] { run = [f] { return RunTiny(*f); }; });
}

}  // namespace gka::cli
