// Commands that talk to a running router (built only with GKA_WITH_GRPC).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace gka::cli {

struct RemoteGenerateRequest {
  std::string addr;
  bool chat = false;
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::string system;
  std::string message;
  bool enable_thinking = false;
  std::string tier;
  int32_t max_tokens = 256;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty,
      frequency_penalty;
  std::optional<int32_t> top_k;
  uint64_t seed = 0;
  int32_t prefill_num_iter = -1;
  int32_t decode_num_iter = -1;
  bool ignore_eos = false;
  bool json = false;
  double timeout_s = 300;
};

absl::Status RunHealth(const std::string& addr, double timeout_s);
absl::Status RunRemoteGenerate(const RemoteGenerateRequest& request);

}  // namespace gka::cli
