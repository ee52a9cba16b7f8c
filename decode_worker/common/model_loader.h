// Loading a worker's model: config.json + safetensors into an Engine sized by the worker's
// flags.
//
// Owns nothing after the call: the LoadedModel holds the engine.
//
//   GKA_ASSIGN_OR_RETURN(LoadedModel m, LoadModel({.model_dir = dir, .num_slots = 8}));
//
// Thread-safety: a plain function; the Engine it returns belongs to one thread (engine.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/engine.h"
#include "common/model/config.h"

namespace gka::worker_common {

struct ModelOptions {
  std::string model_dir;
  std::string backend = "cpu";  // cpu | cuda
  int32_t page_size = 16;
  int32_t num_slots = 8;
  int32_t num_pages = 0;    // 0: enough for every slot at max_seq_len
  int32_t max_seq_len = 0;  // 0: the engine's default (the config's, capped)
};

struct LoadedModel {
  model::ModelConfig config;
  std::unique_ptr<engine::Engine> engine;
  // A short name for registration: the directory's last component.
  std::string name;
  // End-of-sequence ids: generation_config.json's, else config.json's (no tokenizer here).
  std::vector<int32_t> eos_token_ids;
  // Pages and slots of the engine's pools (Engine exposes free counts only).
  int32_t total_pages = 0;
  int32_t total_slots = 0;
};

// INVALID_ARGUMENT for bad options (naming the flag), the loader's error otherwise.
absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options);

}  // namespace gka::worker_common
