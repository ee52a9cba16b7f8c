// Loading a worker's model: config.json + safetensors into one Engine per tensor-parallel
// rank (rank_group.h), sized by the worker's flags.
//
// Owns nothing after the call: the LoadedModel holds the ranks.
//
//   GKA_ASSIGN_OR_RETURN(LoadedModel m, LoadModel({.model_dir = dir, .tp_size = 2}));
//   m.lead().vocab_size();
//
// Thread-safety: a plain function; the engines it returns belong to one thread (engine.h)
// driving them through RankGroup::RunOnAll.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/engine.h"
#include "common/model/config.h"
#include "decode_worker/common/rank_group.h"

namespace gka::worker_common {

struct ModelOptions {
  std::string model_dir;
  std::string backend = "cpu";  // cpu | cuda
  int32_t page_size = 16;
  int32_t num_slots = 8;
  int32_t num_pages = 0;    // 0: enough for every slot at max_seq_len
  int32_t max_seq_len = 0;  // 0: the engine's default (the config's, capped)
  // CUDA backend: the device of rank 0 (rank r uses gpu + r), as numbered inside the process
  // (after CUDA_VISIBLE_DEVICES). Weights, activations and KV bf16; GKA state fp32.
  int32_t gpu = 0;
  // Tensor-parallel ranks (--tp): one engine and one thread per rank, each holding 1/tp of
  // the heads, MLP width and GKA state.
  int32_t tp_size = 1;
  // How the ranks' communicators are made (empty: in-process on the CPU backend, NCCL on
  // cuda — rank r on device gpu + r).
  CommunicatorFactory communicators;
};

struct LoadedModel {
  model::ModelConfig config;
  std::unique_ptr<RankGroup> ranks;
  engine::Engine& lead() const { return ranks->lead(); }
  // A short name for registration: the directory's last component.
  std::string name;
  // End-of-sequence ids: generation_config.json's, else config.json's (no tokenizer here).
  std::vector<int32_t> eos_token_ids;
  // Pages and slots of each rank's pools (Engine exposes free counts only).
  int32_t total_pages = 0;
  int32_t total_slots = 0;
};

// INVALID_ARGUMENT for bad options (naming the flag), the loader's error otherwise.
absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options);

}  // namespace gka::worker_common
