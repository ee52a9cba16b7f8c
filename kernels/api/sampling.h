// Token sampling from logits, per sequence parameters, seeded and reproducible.
#pragma once

#include <cstdint>

#include "common/tensor/tensor.h"

namespace gka::kernels {

// The most alternatives a sequence may ask for per position (OpenAI's top_logprobs limit).
inline constexpr int32_t kMaxTopLogprobs = 20;

// Per-sequence sampling settings. temperature 0 = greedy (argmax, lowest id on ties).
// Order: penalties on raw logits → temperature → top-k → top-p → min-p → draw.
struct SamplingConfig {
  float temperature = 1.0f;
  int32_t top_k = 0;                // 0 = off
  float top_p = 1.0f;               // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // HF: logit > 0 ? logit / p : logit * p, on seen tokens
  float presence_penalty = 0.0f;    // OpenAI: − p if the token was generated before
  float frequency_penalty = 0.0f;   // OpenAI: − p · count in the generated tokens
  uint64_t seed = 0;
  // 0..kMaxTopLogprobs: how many most likely ids to report with their logprobs (OpenAI's
  // top_logprobs); reporting never changes which token is drawn.
  int32_t num_top_logprobs = 0;
};

// Draw for sequence b uses a counter-based RNG keyed by (seed[b], step[b]) so the result does
// not depend on the batch it runs in.
struct SampleParams {
  tensor::TensorView logits;                // [B, V] F32 (modified in place by penalties)
  int32_t vocab_limit = 0;                  // sample only ids < vocab_limit (0 = V)
  const SamplingConfig* configs = nullptr;  // [B] host
  const uint64_t* steps = nullptr;          // [B] host, generation step index per sequence
  // Token history for penalties: sequence b's previously generated ids are
  // history[history_offsets[b] .. history_offsets[b+1]) (host). Prompt ids are included in
  // the repetition penalty only when listed here too.
  const int32_t* history = nullptr;
  const int32_t* history_offsets = nullptr;  // [B + 1] or null (no penalties)
  int32_t* out_ids = nullptr;                // [B] host
  float* out_logprobs = nullptr;             // [B] host or null: log-softmax of the chosen id
  // [B, kMaxTopLogprobs] host, row-major; required when any configs[b].num_top_logprobs > 0.
  // Row b's first min(num_top_logprobs, vocab) entries are the most likely ids of the same
  // distribution out_logprobs reads (after penalties and temperature, before top-k/top-p/min-p,
  // ids < vocab_limit), by logprob descending then id ascending, with their logprobs; the
  // rest of the row is id -1, logprob -inf. The sampled id need not be among them.
  int32_t* out_top_ids = nullptr;
  float* out_top_logprobs = nullptr;
  int32_t num_seqs = 0;
};

}  // namespace gka::kernels
