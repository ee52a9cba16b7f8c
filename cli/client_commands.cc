// Cluster-side commands: talk to a running router.
//
//   gka health --addr HOST:PORT                 exit 0 only when the router serves and at least
//                                               one prefill and one decode worker are healthy
//   gka generate --addr HOST:PORT (--prompt T | --prompt-ids 1,2) [--tier T] [sampling] [--json]
//   gka chat --addr HOST:PORT "message"
//
// The JSON output of generate is the offline form's: {"token_ids", "text", "finish_reason"}.
#include "cli/client_commands.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/status.h"
#include "common/rpc/client.h"
#include "common/rpc/status.h"
#include "gka/serving/v1/serving.grpc.pb.h"

namespace gka::cli {

namespace pb = ::gka::serving::v1;

absl::Status RunHealth(const std::string& addr, double timeout_s) {
  auto channel = rpc::CreateChannel(addr, rpc::ChannelOptions{});
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
  auto channel = rpc::CreateChannel(r.addr, rpc::ChannelOptions{});
  auto stub = pb::GenerateService::NewStub(channel);
  pb::GenerateRequest req;
  if (r.chat) {
    auto* chat = req.mutable_chat();
    if (!r.system.empty()) {
      auto* m = chat->add_messages();
      m->set_role("system");
      m->set_content(r.system);
    }
    auto* m = chat->add_messages();
    m->set_role("user");
    m->set_content(r.message);
    chat->set_enable_thinking(r.enable_thinking);
  } else if (!r.prompt_ids.empty()) {
    for (int32_t id : r.prompt_ids) req.mutable_token_ids()->add_ids(id);
  } else {
    req.set_text(r.prompt);
  }
  req.set_tier(r.tier);
  if (r.prefill_num_iter >= 0) req.set_prefill_num_iter(r.prefill_num_iter);
  if (r.decode_num_iter >= 0) req.set_decode_num_iter(r.decode_num_iter);
  auto* s = req.mutable_sampling();
  s->set_max_tokens(r.max_tokens);
  if (r.temperature) s->set_temperature(*r.temperature);
  if (r.top_k) s->set_top_k(*r.top_k);
  if (r.top_p) s->set_top_p(*r.top_p);
  if (r.min_p) s->set_min_p(*r.min_p);
  if (r.repetition_penalty) s->set_repetition_penalty(*r.repetition_penalty);
  if (r.presence_penalty) s->set_presence_penalty(*r.presence_penalty);
  if (r.frequency_penalty) s->set_frequency_penalty(*r.frequency_penalty);
  s->set_seed(r.seed);
  s->set_ignore_eos(r.ignore_eos);

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(r.timeout_s * 1000)));
  auto reader = stub->Generate(&ctx, req);
  pb::GenerateResponse resp;
  std::vector<int32_t> ids;
  std::string text;
  std::string finish = "error";
  absl::Status error;
  while (reader->Read(&resp)) {
    if (resp.has_chunk()) {
      ids.insert(ids.end(), resp.chunk().token_ids().begin(), resp.chunk().token_ids().end());
      text += resp.chunk().text();
      if (!r.json) std::cout << resp.chunk().text() << std::flush;
    } else if (resp.has_final()) {
      switch (resp.final().finish_reason()) {
        case pb::FINISH_REASON_STOP:
          finish = "stop";
          break;
        case pb::FINISH_REASON_LENGTH:
          finish = "length";
          break;
        case pb::FINISH_REASON_ABORT:
          finish = "abort";
          break;
        default:
          finish = "error";
      }
    } else if (resp.has_error()) {
      error =
          absl::Status(static_cast<absl::StatusCode>(resp.error().code()), resp.error().message());
    }
  }
  GKA_RETURN_IF_ERROR(rpc::FromGrpcStatus(reader->Finish()));
  GKA_RETURN_IF_ERROR(error);
  if (r.json) {
    nlohmann::json out;
    out["token_ids"] = ids;
    out["text"] = text;
    out["finish_reason"] = finish;
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace gka::cli
