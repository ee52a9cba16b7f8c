// Flags and loading shared by every offline command that runs the model.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/engine/engine.h"
#include "common/model/config.h"

namespace CLI {
class App;
}

namespace gka::cli {

struct EngineFlags {
  std::string model_dir;
  std::string backend = "cpu";
  std::string dtype = "fp32";
  int32_t num_iter = -1;  // -1: the checkpoint's (gka_config merged with gka_overrides)
  int32_t page_size = 16;
  int32_t num_state_slots = 1;
  int32_t max_seq_len = 0;
};

// --model, --backend, --dtype, --num-iter, --page-size.
void AddEngineFlags(CLI::App& cmd, EngineFlags& flags);

struct LoadedModel {
  model::ModelConfig config;
  model::GenerationDefaults generation;
  std::unique_ptr<engine::Engine> engine;
};

absl::StatusOr<LoadedModel> LoadModel(const EngineFlags& flags);

}  // namespace gka::cli
