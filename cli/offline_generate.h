// Offline generation on one Engine: prefill the prompt, then sample token by token.
//
// The same engine calls the cluster's workers make (Forward, then Sample with the generation
// step as the RNG counter), so a seeded or greedy run here is the reference the cluster's
// output is compared with token for token.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/engine.h"
#include "common/model/config.h"
#include "common/text/tokenizer.h"
#include "kernels/api/sampling.h"

namespace gka::cli {

struct GenerateOptions {
  std::vector<int32_t> prompt;
  int32_t max_tokens = 256;
  kernels::SamplingConfig sampling;
  int32_t prefill_num_iter = -1;  // -1: engine default
  int32_t decode_num_iter = -1;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;  // in addition to the model's EOS ids
};

struct GenerateResult {
  std::vector<int32_t> token_ids;  // generated ids only (a final stop/EOS id included)
  std::string finish_reason;       // "stop" | "length"
  // One per token id: its logprob and the sampling's num_top_logprobs alternatives.
  std::vector<engine::Engine::Sampled> samples;
};

// The model's end-of-sequence ids: generation_config.json's, else config.json's, else the
// tokenizer's <|im_end|> and <|endoftext|>.
std::vector<int32_t> EosIds(const model::ModelConfig& config,
                            const model::GenerationDefaults& generation,
                            const text::Tokenizer* tokenizer);

// Sampling defaults from generation_config.json, overridden by the given flags.
kernels::SamplingConfig DefaultSampling(const model::GenerationDefaults& generation);

// `on_token` (optional) sees each id as soon as it is sampled. `vocab_limit` keeps sampling
// inside the tokenizer's vocabulary (the embedding has padding rows); 0 = the whole vocab.
absl::StatusOr<GenerateResult> Generate(engine::Engine& engine, const GenerateOptions& options,
                                        const std::vector<int32_t>& eos_ids, int32_t vocab_limit,
                                        const std::function<void(int32_t)>& on_token = nullptr);

}  // namespace gka::cli
