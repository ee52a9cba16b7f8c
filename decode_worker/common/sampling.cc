#include "decode_worker/common/sampling.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace gka::worker_common {
namespace {

absl::Status Bad(absl::string_view field, double value, absl::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat("sampling.", field, " = ", value, ": must be ", want));
}

}  // namespace

absl::StatusOr<kernels::SamplingConfig> SamplingFromProto(const wpb::WorkerSamplingParams& p) {
  kernels::SamplingConfig c;
  if (!std::isfinite(p.temperature()) || p.temperature() < 0) {
    return Bad("temperature", p.temperature(), ">= 0 (0 is greedy)");
  }
  if (p.top_k() < 0) return Bad("top_k", p.top_k(), ">= 0 (0 is off)");
  if (!std::isfinite(p.top_p()) || p.top_p() < 0 || p.top_p() > 1) {
    return Bad("top_p", p.top_p(), "in (0, 1] (1 is off)");
  }
  if (!std::isfinite(p.min_p()) || p.min_p() < 0 || p.min_p() > 1) {
    return Bad("min_p", p.min_p(), "in [0, 1]");
  }
  if (!std::isfinite(p.repetition_penalty()) || p.repetition_penalty() < 0) {
    return Bad("repetition_penalty", p.repetition_penalty(), "> 0 (1 is off)");
  }
  if (!std::isfinite(p.presence_penalty())) {
    return Bad("presence_penalty", p.presence_penalty(), "finite");
  }
  if (!std::isfinite(p.frequency_penalty())) {
    return Bad("frequency_penalty", p.frequency_penalty(), "finite");
  }
  if (p.top_logprobs() < 0 || p.top_logprobs() > kernels::kMaxTopLogprobs) {
    return Bad("top_logprobs", p.top_logprobs(),
               absl::StrCat("in [0, ", kernels::kMaxTopLogprobs, "]"));
  }
  c.temperature = p.temperature();
  c.top_k = p.top_k();
  c.top_p = p.top_p() == 0 ? 1.0f : p.top_p();
  c.min_p = p.min_p();
  c.repetition_penalty = p.repetition_penalty() == 0 ? 1.0f : p.repetition_penalty();
  c.presence_penalty = p.presence_penalty();
  c.frequency_penalty = p.frequency_penalty();
  c.seed = p.has_seed() ? p.seed() : 0;
  c.num_top_logprobs = p.top_logprobs();
  return c;
}

}  // namespace gka::worker_common
