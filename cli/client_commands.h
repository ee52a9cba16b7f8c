// Commands that talk to a running router (built only with GKA_WITH_GRPC).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/commands.h"
#include "common/rpc/tls.h"
#include "gka/sdk/client.h"

namespace gka::cli {

// The PEM text of the files `flags` name (all empty without --tls-ca). INVALID_ARGUMENT for a
// certificate without its key or the other way round; NOT_FOUND for an unreadable file.
absl::StatusOr<rpc::TlsConfig> ReadClientTls(const TlsFlags& flags);
// Sets the SDK's TLS options from `flags` (nothing without --tls-ca).
absl::Status ApplyClientTls(const TlsFlags& flags, sdk::ClientOptions& options);

struct RemoteGenerateRequest {
  std::string addr;
  TlsFlags tls;
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

absl::Status RunHealth(const std::string& addr, double timeout_s, const TlsFlags& tls);
absl::Status RunRemoteGenerate(const RemoteGenerateRequest& request);

}  // namespace gka::cli
