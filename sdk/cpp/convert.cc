#include "sdk/cpp/convert.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/check.h"

namespace gka::sdk {
namespace internal {
namespace {

// The ErrorDetails payload: "key=value;..." under a type URL of our own (the Status carries
// code and message itself).
constexpr absl::string_view kDetailsUrl = "type.gkaserve.dev/gka.sdk.ErrorDetails";

void ToProto(const SamplingParams& s, pb::SamplingParams* out) {
  if (s.temperature) out->set_temperature(*s.temperature);
  if (s.top_k) out->set_top_k(*s.top_k);
  if (s.top_p) out->set_top_p(*s.top_p);
  if (s.min_p) out->set_min_p(*s.min_p);
  if (s.repetition_penalty) out->set_repetition_penalty(*s.repetition_penalty);
  if (s.presence_penalty) out->set_presence_penalty(*s.presence_penalty);
  if (s.frequency_penalty) out->set_frequency_penalty(*s.frequency_penalty);
  if (s.seed) out->set_seed(*s.seed);
  if (s.max_tokens) out->set_max_tokens(*s.max_tokens);
  for (const std::string& stop : s.stop) out->add_stop(stop);
  for (int32_t id : s.stop_token_ids) out->add_stop_token_ids(id);
  if (s.ignore_eos) out->set_ignore_eos(*s.ignore_eos);
  if (s.logprobs) out->set_logprobs(*s.logprobs);
  if (s.top_logprobs) out->set_top_logprobs(*s.top_logprobs);
}

TokenLogprob FromProto(const pb::TokenLogprob& in) {
  TokenLogprob out{.token_id = in.token_id(), .logprob = in.logprob()};
  for (const pb::TopLogprob& top : in.top()) {
    out.top.push_back({.token_id = top.token_id(), .logprob = top.logprob(), .text = top.text()});
  }
  return out;
}

Usage FromProto(const pb::Usage& in) {
  return {.prompt_tokens = in.prompt_tokens(), .completion_tokens = in.completion_tokens()};
}

FinishReason FromProto(pb::FinishReason in) {
  switch (in) {
    case pb::FINISH_REASON_STOP:
      return FinishReason::kStop;
    case pb::FINISH_REASON_LENGTH:
      return FinishReason::kLength;
    case pb::FINISH_REASON_ABORT:
      return FinishReason::kAbort;
    case pb::FINISH_REASON_ERROR:
      return FinishReason::kError;
    default:
      return FinishReason::kUnspecified;
  }
}

}  // namespace

pb::ChatMessages ToProto(const Chat& chat) {
  pb::ChatMessages out;
  for (const ChatMessage& m : chat.messages) {
    pb::ChatMessage* message = out.add_messages();
    message->set_role(m.role);
    message->set_content(m.content);
    for (const ToolCall& call : m.tool_calls) {
      pb::ToolCall* c = message->add_tool_calls();
      c->set_id(call.id);
      c->set_type(call.type);
      c->mutable_function()->set_name(call.name);
      c->mutable_function()->set_arguments(call.arguments_json);
    }
    message->set_tool_call_id(m.tool_call_id);
    message->set_name(m.name);
  }
  out.set_tools_json(chat.tools_json);
  if (chat.enable_thinking) out.set_enable_thinking(*chat.enable_thinking);
  return out;
}

pb::GenerateRequest ToProto(const Request& request) {
  pb::GenerateRequest out;
  out.set_request_id(request.request_id);
  if (const auto* text = std::get_if<std::string>(&request.input)) {
    out.set_text(*text);
  } else if (const auto* ids = std::get_if<TokenIds>(&request.input)) {
    out.mutable_token_ids()->mutable_ids()->Add(ids->begin(), ids->end());
  } else {
    *out.mutable_chat() = ToProto(std::get<Chat>(request.input));
  }
  ToProto(request.sampling, out.mutable_sampling());
  out.set_tier(request.tier);
  if (request.prefill_num_iter) out.set_prefill_num_iter(*request.prefill_num_iter);
  if (request.decode_num_iter) out.set_decode_num_iter(*request.decode_num_iter);
  out.set_model(request.model);
  return out;
}

Chunk AppendChunk(const pb::Chunk& chunk, Result* result) {
  Chunk out;
  out.token_ids.assign(chunk.token_ids().begin(), chunk.token_ids().end());
  out.text = chunk.text();
  out.usage = FromProto(chunk.usage());
  for (const pb::TokenLogprob& lp : chunk.logprobs()) out.logprobs.push_back(FromProto(lp));
  result->token_ids.insert(result->token_ids.end(), out.token_ids.begin(), out.token_ids.end());
  result->text += out.text;
  result->logprobs.insert(result->logprobs.end(), out.logprobs.begin(), out.logprobs.end());
  result->usage = out.usage;
  return out;
}

void ApplyFinal(const pb::Final& f, Result* result) {
  result->finish_reason = FromProto(f.finish_reason());
  result->usage = FromProto(f.usage());
  const pb::Timings& t = f.timings();
  result->timings = {.queue_ms = t.queue_ms(),
                     .ttft_ms = t.ttft_ms(),
                     .prefill_ms = t.prefill_ms(),
                     .transfer_ms = t.transfer_ms(),
                     .decode_ms = t.decode_ms(),
                     .total_ms = t.total_ms(),
                     .admission_ms = t.admission_ms(),
                     .router_ms = t.router_ms()};
  result->served_by = {.router_id = f.served_by().router_id(),
                       .prefill_worker_id = f.served_by().prefill_worker_id(),
                       .decode_worker_id = f.served_by().decode_worker_id(),
                       .migrated_from = {f.served_by().migrated_from().begin(),
                                         f.served_by().migrated_from().end()}};
  result->tier = f.tier();
  result->num_iter = {.prefill = f.prefill_num_iter(), .decode = f.decode_num_iter()};
  result->degrade_rung = f.degrade_rung();
  result->matched_stop = f.matched_stop();
  if (f.has_matched_stop_token_id()) result->matched_stop_token_id = f.matched_stop_token_id();
}

TokenizeResult FromProto(const pb::TokenizeResponse& response) {
  return {.token_ids = TokenIds(response.token_ids().begin(), response.token_ids().end()),
          .prompt_text = response.prompt_text()};
}

ModelInfo FromProto(const pb::GetModelInfoResponse& response) {
  ModelInfo out{.model = response.model(),
                .max_context_tokens = response.max_context_tokens(),
                .vocab_size = response.vocab_size(),
                .has_tokenizer = response.has_tokenizer(),
                .eos_token_ids = {response.eos_token_ids().begin(), response.eos_token_ids().end()},
                .default_tier = response.default_tier()};
  for (const pb::TierInfo& t : response.tiers()) {
    out.tiers.push_back(
        {.name = t.name(),
         .num_iter = {.prefill = t.prefill_num_iter(), .decode = t.decode_num_iter()},
         .num_iter_min = t.num_iter_min(),
         .num_iter_max = t.num_iter_max(),
         .priority = t.priority(),
         .max_tokens = t.max_tokens()});
  }
  return out;
}

absl::Status MakeError(const ErrorDetails& details) {
  GKA_CHECK(details.code != absl::StatusCode::kOk);
  absl::Status status(details.code, details.message);
  std::string payload =
      absl::StrCat("from_server=", details.from_server ? 1 : 0,
                   ";retryable=", details.retryable ? 1 : 0, ";attempts=", details.attempts);
  if (details.retry_after) {
    absl::StrAppend(&payload, ";retry_after_us=", absl::ToInt64Microseconds(*details.retry_after));
  }
  status.SetPayload(kDetailsUrl, absl::Cord(payload));
  return status;
}

}  // namespace internal

std::optional<ErrorDetails> GetErrorDetails(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  absl::optional<absl::Cord> payload = status.GetPayload(internal::kDetailsUrl);
  if (!payload) return std::nullopt;
  ErrorDetails details{.code = status.code(), .message = std::string(status.message())};
  for (absl::string_view field : absl::StrSplit(std::string(*payload), ';')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(field, absl::MaxSplits('=', 1));
    int64_t value = 0;
    if (!absl::SimpleAtoi(kv.second, &value)) continue;
    if (kv.first == "from_server") details.from_server = value != 0;
    if (kv.first == "retryable") details.retryable = value != 0;
    if (kv.first == "attempts") details.attempts = static_cast<int>(value);
    if (kv.first == "retry_after_us") details.retry_after = absl::Microseconds(value);
  }
  return details;
}

}  // namespace gka::sdk
