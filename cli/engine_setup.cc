#include "cli/engine_setup.h"

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/model/safetensors.h"
#include "kernels/registry.h"

namespace gka::cli {

void AddEngineFlags(CLI::App& cmd, EngineFlags& flags) {
  cmd.add_option("--model", flags.model_dir, "checkpoint directory (config.json + safetensors)");
  cmd.add_option("--backend", flags.backend, "cpu | cuda")->capture_default_str();
  cmd.add_option("--dtype", flags.dtype, "fp32 | bf16 (bf16 needs --backend cuda)")
      ->capture_default_str();
  cmd.add_option("--num-iter", flags.num_iter,
                 "GKA Chebyshev iterations for every GKA layer (default: the checkpoint's)");
  cmd.add_option("--page-size", flags.page_size, "KV cache page size in tokens")
      ->capture_default_str();
}

absl::StatusOr<LoadedModel> LoadModel(const EngineFlags& flags) {
  if (flags.model_dir.empty()) return absl::InvalidArgumentError("--model DIR is required");
  LoadedModel m;
  GKA_ASSIGN_OR_RETURN(m.config,
                       model::ModelConfig::FromJsonFile(flags.model_dir + "/config.json"));
  GKA_ASSIGN_OR_RETURN(m.generation, model::GenerationDefaults::FromModelDir(flags.model_dir));
  GKA_ASSIGN_OR_RETURN(auto checkpoint, model::Checkpoint::Open(flags.model_dir));
  engine::EngineOptions options;
  GKA_ASSIGN_OR_RETURN(options.backend, kernels::ParseBackendKind(flags.backend));
  if (flags.dtype == "fp32") {
    options.dtype = tensor::DType::kF32;
  } else if (flags.dtype == "bf16") {
    options.dtype = tensor::DType::kBF16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --dtype '", flags.dtype, "' (expected fp32 or bf16)"));
  }
  if (flags.num_iter < -1) {
    return absl::InvalidArgumentError("--num-iter must be >= 0");
  }
  options.default_num_iter = flags.num_iter;
  options.page_size = flags.page_size;
  options.num_state_slots = flags.num_state_slots;
  options.max_seq_len = flags.max_seq_len;
  GKA_ASSIGN_OR_RETURN(m.engine, engine::Engine::Create(options, m.config, *checkpoint));
  GKA_LOG(INFO) << "loaded " << flags.model_dir << " (" << m.config.LayoutString() << ") on "
                << flags.backend << "/" << flags.dtype
                << ", num_iter=" << m.engine->default_num_iter();
  return m;
}

}  // namespace gka::cli
