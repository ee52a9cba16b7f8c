#include "cli/offline_generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

namespace gka::cli {

std::vector<int32_t> EosIds(const model::ModelConfig& config,
                            const model::GenerationDefaults& generation,
                            const text::Tokenizer* tokenizer) {
  std::vector<int32_t> ids;
  for (int64_t id : generation.eos_token_ids) ids.push_back(static_cast<int32_t>(id));
  if (ids.empty()) {
    for (int64_t id : config.eos_token_ids) ids.push_back(static_cast<int32_t>(id));
  }
  if (ids.empty() && tokenizer != nullptr) {
    for (const char* t : {"<|im_end|>", "<|endoftext|>"}) {
      if (auto id = tokenizer->TokenToId(t)) ids.push_back(*id);
    }
  }
  return ids;
}

kernels::SamplingConfig DefaultSampling(const model::GenerationDefaults& generation) {
  kernels::SamplingConfig s;
  s.temperature = static_cast<float>(generation.temperature.value_or(1.0));
  if (generation.do_sample.has_value() && !*generation.do_sample) s.temperature = 0.0f;
  s.top_k = static_cast<int32_t>(generation.top_k.value_or(0));
  s.top_p = static_cast<float>(generation.top_p.value_or(1.0));
  return s;
}

absl::StatusOr<GenerateResult> Generate(engine::Engine& engine, const GenerateOptions& options,
                                        const std::vector<int32_t>& eos_ids, int32_t vocab_limit,
                                        const std::function<void(int32_t)>& on_token) {
  if (options.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (options.max_tokens < 1) return absl::InvalidArgumentError("--max-tokens must be >= 1");
  const int64_t need = static_cast<int64_t>(options.prompt.size()) + options.max_tokens;
  if (need > engine.max_seq_len()) {
    return absl::OutOfRangeError(absl::StrCat("prompt (", options.prompt.size(),
                                              " tokens) + max tokens (", options.max_tokens,
                                              ") exceed the context of ", engine.max_seq_len()));
  }
  const engine::SequenceId id(0);
  GKA_RETURN_IF_ERROR(engine.AddSequence(id));
  GenerateResult result;
  result.finish_reason = "length";
  std::vector<int32_t> next = options.prompt;
  int32_t num_iter = options.prefill_num_iter;
  absl::Status status;
  for (int32_t step = 0; step < options.max_tokens; ++step) {
    auto forward = engine.Forward({{.id = id, .tokens = next, .num_iter = num_iter}});
    if (!forward.ok()) {
      status = forward.status();
      break;
    }
    const engine::Engine::SampleRequest request{.config = options.sampling,
                                                .step = static_cast<uint64_t>(step),
                                                .history = result.token_ids};
    auto sampled = engine.Sample(*forward, {request}, vocab_limit);
    if (!sampled.ok()) {
      status = sampled.status();
      break;
    }
    const int32_t token = (*sampled)[0].token;
    result.token_ids.push_back(token);
    result.samples.push_back(std::move((*sampled)[0]));
    if (on_token) on_token(token);
    const bool is_stop =
        std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), token) !=
            options.stop_token_ids.end() ||
        (!options.ignore_eos && std::find(eos_ids.begin(), eos_ids.end(), token) != eos_ids.end());
    if (is_stop) {
      result.finish_reason = "stop";
      break;
    }
    next = {token};
    num_iter = options.decode_num_iter;
  }
  GKA_RETURN_IF_ERROR(engine.RemoveSequence(id));
  GKA_RETURN_IF_ERROR(status);
  return result;
}

}  // namespace gka::cli
