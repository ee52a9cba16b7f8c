// Cluster-side commands: talk to a running router.
//
//   gka health --addr HOST:PORT                 exit 0 only when the router serves and at least
//                                               one prefill and one decode worker are healthy
//   gka generate --addr HOST:PORT (--prompt T | --prompt-ids 1,2) [--tier T] [sampling] [--json]
//   gka chat --addr HOST:PORT "message"
//
// Written on the C++ SDK (sdk/cpp). The JSON output of generate is the offline form's:
// {"token_ids", "text", "finish_reason"}.
#include "cli/client_commands.h"

#include <grpcpp/channel.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/status.h"
#include "common/rpc/client.h"
#include "gka/sdk/client.h"

namespace gka::cli {

absl::StatusOr<rpc::TlsConfig> ReadClientTls(const TlsFlags& flags) {
  rpc::TlsConfig tls;
  if (flags.cert.empty() != flags.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together (mutual TLS)");
  }
  if (flags.ca.empty()) {
    if (!flags.cert.empty()) {
      return absl::InvalidArgumentError("--tls-cert needs --tls-ca (the server's CA)");
    }
    return tls;
  }
  GKA_ASSIGN_OR_RETURN(tls.ca_pem, rpc::ReadPemFile(flags.ca, "CA"));
  if (!flags.cert.empty()) {
    GKA_ASSIGN_OR_RETURN(tls.cert_pem, rpc::ReadPemFile(flags.cert, "certificate"));
    GKA_ASSIGN_OR_RETURN(tls.key_pem, rpc::ReadPemFile(flags.key, "key"));
  }
  return tls;
}

absl::Status ApplyClientTls(const TlsFlags& flags, sdk::ClientOptions& options) {
  GKA_ASSIGN_OR_RETURN(rpc::TlsConfig tls, ReadClientTls(flags));
  if (!tls.enabled()) return absl::OkStatus();
  options.tls = true;
  options.tls_root_certs_pem = std::move(tls.ca_pem);
  options.tls_cert_chain_pem = std::move(tls.cert_pem);
  options.tls_private_key_pem = std::move(tls.key_pem);
  return absl::OkStatus();
}

absl::Status RunHealth(const std::string& addr, double timeout_s, const TlsFlags& tls_flags) {
  GKA_ASSIGN_OR_RETURN(rpc::TlsConfig tls, ReadClientTls(tls_flags));
  auto channel = rpc::CreateChannel(addr, {.tls = tls});
  GKA_RETURN_IF_ERROR(rpc::WaitForReady(*channel, absl::Now() + absl::Seconds(timeout_s)));
  GKA_ASSIGN_OR_RETURN(bool serving, rpc::CheckHealth(*channel, "gka.serving.v1.GenerateService",
                                                      absl::Now() + absl::Seconds(timeout_s)));
  if (!serving) {
    return absl::UnavailableError(
        absl::StrCat(addr, " is up but not serving (needs a healthy prefill and decode worker)"));
  }
  std::cout << "SERVING" << std::endl;
  return absl::OkStatus();
}

absl::Status RunRemoteGenerate(const RemoteGenerateRequest& r) {
  sdk::ClientOptions options{.address = r.addr, .default_timeout = absl::Seconds(r.timeout_s)};
  GKA_RETURN_IF_ERROR(ApplyClientTls(r.tls, options));
  GKA_ASSIGN_OR_RETURN(auto client, sdk::Client::Create(options));
  sdk::Request req;
  if (r.chat) {
    sdk::Chat chat;
    if (!r.system.empty()) chat.messages.push_back(sdk::ChatMessage::System(r.system));
    chat.messages.push_back(sdk::ChatMessage::User(r.message));
    chat.enable_thinking = r.enable_thinking;  // explicit: the offline chat's default is off
    req.input = std::move(chat);
  } else if (!r.prompt_ids.empty()) {
    req.input = sdk::TokenIds(r.prompt_ids.begin(), r.prompt_ids.end());
  } else {
    req.input = r.prompt;
  }
  req.tier = r.tier;
  if (r.prefill_num_iter >= 0) req.prefill_num_iter = r.prefill_num_iter;
  if (r.decode_num_iter >= 0) req.decode_num_iter = r.decode_num_iter;
  sdk::SamplingParams& s = req.sampling;
  s.max_tokens = r.max_tokens;
  s.temperature = r.temperature;
  s.top_k = r.top_k;
  s.top_p = r.top_p;
  s.min_p = r.min_p;
  s.repetition_penalty = r.repetition_penalty;
  s.presence_penalty = r.presence_penalty;
  s.frequency_penalty = r.frequency_penalty;
  s.seed = r.seed;
  s.ignore_eos = r.ignore_eos;

  std::unique_ptr<sdk::Stream> stream = client->GenerateStream(req);
  sdk::Chunk chunk;
  while (stream->Next(&chunk)) {
    if (!r.json) std::cout << chunk.text << std::flush;
  }
  GKA_ASSIGN_OR_RETURN(sdk::Result result, stream->Finish());
  if (r.json) {
    nlohmann::json out;
    out["token_ids"] = std::vector<int32_t>(result.token_ids.begin(), result.token_ids.end());
    out["text"] = result.text;
    out["finish_reason"] = std::string(sdk::FinishReasonName(result.finish_reason));
    // What served it: tests read the SDK's retries (attempts) and the degrade ladder here.
    out["attempts"] = result.attempts;
    out["migrated_from"] = result.served_by.migrated_from;
    out["tier"] = result.tier;
    out["prefill_num_iter"] = result.num_iter.prefill;
    out["decode_num_iter"] = result.num_iter.decode;
    out["served_by"] = {{"prefill_worker_id", result.served_by.prefill_worker_id},
                        {"decode_worker_id", result.served_by.decode_worker_id}};
    out["degrade_rung"] = result.degrade_rung;
    out["timings"] = {{"ttft_ms", result.timings.ttft_ms},
                      {"admission_ms", result.timings.admission_ms},
                      {"router_ms", result.timings.router_ms},
                      {"total_ms", result.timings.total_ms}};
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace gka::cli
