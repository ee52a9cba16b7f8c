#include "router/request_validation.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status.h"
#include "common/text/utf8.h"

namespace gka::router {
namespace {

namespace v1 = ::gka::serving::v1;

constexpr size_t kMaxRequestIdBytes = 256;
constexpr int kMaxStopStrings = 64;
constexpr size_t kMaxStopBytes = 1024;
constexpr int kMaxStopTokenIds = 1024;
constexpr int kMaxTopLogprobs = 20;

// Collects one message per bad field; the request is rejected with all of them at once.
class FieldErrors {
 public:
  void Add(absl::string_view field, absl::string_view problem) {
    errors_.push_back(absl::StrCat(field, ": ", problem));
  }
  bool empty() const { return errors_.empty(); }
  absl::Status ToStatus() const { return absl::InvalidArgumentError(absl::StrJoin(errors_, "; ")); }

 private:
  std::vector<std::string> errors_;
};

absl::Status NoTokenizer(absl::string_view field, absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(
      field, ": ", what,
      " needs a tokenizer, and this router has none (start gka-router with --tokenizer DIR or "
      "--model DIR holding tokenizer.json); send token_ids instead"));
}

void CheckUtf8(absl::string_view s, absl::string_view field, FieldErrors& errors) {
  if (!text::IsValidUtf8(s)) {
    errors.Add(field, absl::StrCat("invalid UTF-8 at byte ", text::FirstInvalidUtf8Offset(s)));
  }
}

void CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids, int32_t vocab_size,
                   absl::string_view field, FieldErrors& errors) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || (vocab_size > 0 && ids[i] >= vocab_size)) {
      errors.Add(absl::StrCat(field, "[", i, "]"),
                 vocab_size > 0
                     ? absl::StrCat(ids[i], " is outside the vocabulary [0, ", vocab_size, ")")
                     : absl::StrCat(ids[i], " is negative"));
      return;  // one is enough: a bad array tends to be bad everywhere
    }
  }
}

// Chat messages' text fields must be UTF-8 before they reach the template.
void CheckChatUtf8(const v1::ChatMessages& chat, absl::string_view field, FieldErrors& errors) {
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    const std::string at = absl::StrCat(field, ".messages[", i, "]");
    CheckUtf8(m.role(), absl::StrCat(at, ".role"), errors);
    CheckUtf8(m.content(), absl::StrCat(at, ".content"), errors);
    for (int j = 0; j < m.tool_calls_size(); ++j) {
      CheckUtf8(m.tool_calls(j).function().name(),
                absl::StrCat(at, ".tool_calls[", j, "].function.name"), errors);
      CheckUtf8(m.tool_calls(j).function().arguments(),
                absl::StrCat(at, ".tool_calls[", j, "].function.arguments"), errors);
    }
  }
  CheckUtf8(chat.tools_json(), absl::StrCat(field, ".tools_json"), errors);
}

void CheckModel(absl::string_view model, const RequestContext& context, FieldErrors& errors) {
  if (!model.empty() && !context.served_model.empty() && model != context.served_model) {
    errors.Add("model", absl::StrCat("unknown model ", QuoteForMessage(model),
                                     "; this router serves '", context.served_model, "'"));
  }
}

absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text, const RequestContext& context,
                                            absl::string_view field) {
  absl::StatusOr<std::vector<int32_t>> ids = context.tokenizer->Encode(text);
  if (!ids.ok()) return base::Annotate(ids.status(), field);
  return ids;
}

// Text prompts become ids the model may not have (a small test model with a full tokenizer).
absl::Status CheckPromptVocabulary(const std::vector<int32_t>& ids, const RequestContext& context,
                                   absl::string_view field) {
  if (context.vocab_size <= 0) return absl::OkStatus();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= context.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": token ", i, " of the prompt has id ",
                                                     ids[i], ", outside the model's vocabulary of ",
                                                     context.vocab_size));
    }
  }
  return absl::OkStatus();
}

void CheckSampling(const v1::SamplingParams& s, const RequestContext& context,
                   FieldErrors& errors) {
  const auto range = [&](bool present, float v, absl::string_view name, bool ok,
                         absl::string_view rule) {
    if (present && (!std::isfinite(v) || !ok)) {
      errors.Add(absl::StrCat("sampling.", name), absl::StrCat(v, " ", rule));
    }
  };
  range(s.has_temperature(), s.temperature(), "temperature", s.temperature() >= 0,
        "must be >= 0 (0 is greedy)");
  if (s.has_top_k() && s.top_k() < 0) {
    errors.Add("sampling.top_k", absl::StrCat(s.top_k(), " must be >= 0 (0 disables top-k)"));
  }
  range(s.has_top_p(), s.top_p(), "top_p", s.top_p() > 0 && s.top_p() <= 1, "is outside (0, 1]");
  range(s.has_min_p(), s.min_p(), "min_p", s.min_p() >= 0 && s.min_p() <= 1, "is outside [0, 1]");
  range(s.has_repetition_penalty(), s.repetition_penalty(), "repetition_penalty",
        s.repetition_penalty() > 0, "must be > 0 (1 is none)");
  range(s.has_presence_penalty(), s.presence_penalty(), "presence_penalty",
        s.presence_penalty() >= -2 && s.presence_penalty() <= 2, "is outside [-2, 2]");
  range(s.has_frequency_penalty(), s.frequency_penalty(), "frequency_penalty",
        s.frequency_penalty() >= -2 && s.frequency_penalty() <= 2, "is outside [-2, 2]");
  if (s.has_max_tokens() && s.max_tokens() < 1) {
    errors.Add("sampling.max_tokens", absl::StrCat(s.max_tokens(), " must be >= 1"));
  }
  if (s.has_top_logprobs() && (s.top_logprobs() < 0 || s.top_logprobs() > kMaxTopLogprobs)) {
    errors.Add("sampling.top_logprobs",
               absl::StrCat(s.top_logprobs(), " is outside [0, ", kMaxTopLogprobs, "]"));
  }
  if (s.stop_size() > kMaxStopStrings) {
    errors.Add("sampling.stop",
               absl::StrCat(s.stop_size(), " stop strings; at most ", kMaxStopStrings));
  }
  for (int i = 0; i < s.stop_size() && i < kMaxStopStrings; ++i) {
    const std::string field = absl::StrCat("sampling.stop[", i, "]");
    if (s.stop(i).empty()) {
      errors.Add(field, "empty stop string");
    } else if (s.stop(i).size() > kMaxStopBytes) {
      errors.Add(field, absl::StrCat(s.stop(i).size(), " bytes; at most ", kMaxStopBytes));
    } else {
      CheckUtf8(s.stop(i), field, errors);
    }
  }
  if (s.stop_token_ids_size() > kMaxStopTokenIds) {
    errors.Add("sampling.stop_token_ids",
               absl::StrCat(s.stop_token_ids_size(), " ids; at most ", kMaxStopTokenIds));
  } else {
    CheckTokenIds(s.stop_token_ids(), context.vocab_size, "sampling.stop_token_ids", errors);
  }
}

worker::v1::WorkerSamplingParams ResolveSampling(const v1::SamplingParams& s,
                                                 const RequestContext& context) {
  const SamplingDefaults& d = context.sampling_defaults;
  worker::v1::WorkerSamplingParams w;
  w.set_temperature(s.has_temperature() ? s.temperature() : d.temperature);
  w.set_top_k(s.has_top_k() ? s.top_k() : d.top_k);
  w.set_top_p(s.has_top_p() ? s.top_p() : d.top_p);
  w.set_min_p(s.has_min_p() ? s.min_p() : d.min_p);
  w.set_repetition_penalty(s.has_repetition_penalty() ? s.repetition_penalty()
                                                      : d.repetition_penalty);
  w.set_presence_penalty(s.presence_penalty());
  w.set_frequency_penalty(s.frequency_penalty());
  if (s.has_seed()) w.set_seed(s.seed());
  w.set_ignore_eos(s.ignore_eos());
  w.set_top_logprobs(s.top_logprobs());
  w.set_logprobs(s.logprobs() || s.top_logprobs() > 0);
  std::vector<int32_t> stops(s.stop_token_ids().begin(), s.stop_token_ids().end());
  if (!s.ignore_eos())
    stops.insert(stops.end(), context.eos_token_ids.begin(), context.eos_token_ids.end());
  std::vector<int32_t> unique;
  for (int32_t id : stops) {
    if (std::find(unique.begin(), unique.end(), id) == unique.end()) unique.push_back(id);
  }
  for (int32_t id : unique) w.add_stop_token_ids(id);
  return w;
}

}  // namespace

std::string QuoteForMessage(absl::string_view s, size_t max_bytes) {
  std::string shown = text::Utf8Lossy(s.substr(0, max_bytes));
  return absl::StrCat("'", shown, s.size() > max_bytes ? "...'" : "'");
}

absl::StatusOr<Prompt> BuildChatPrompt(const v1::ChatMessages& chat, const RequestContext& context,
                                       absl::string_view field) {
  if (context.tokenizer == nullptr || context.chat_template == nullptr) {
    return NoTokenizer(field, "chat input");
  }
  if (chat.messages_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".messages: no messages"));
  }
  std::vector<text::ChatMessage> messages;
  messages.reserve(chat.messages_size());
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    absl::StatusOr<text::Role> role = text::ParseRole(m.role());
    if (!role.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".messages[", i, "].role: ", role.status().message()));
    }
    text::ChatMessage message{.role = *role, .content = m.content()};
    for (const v1::ToolCall& call : m.tool_calls()) {
      message.tool_calls.push_back(
          {.name = call.function().name(), .arguments = call.function().arguments()});
    }
    messages.push_back(std::move(message));
  }
  text::ChatRenderOptions options;
  // serving.proto: an absent enable_thinking means the template's default, which is on.
  options.enable_thinking = chat.has_enable_thinking() ? chat.enable_thinking() : true;
  if (!chat.tools_json().empty()) {
    absl::StatusOr<std::vector<std::string>> tools = text::ParseToolsJson(chat.tools_json());
    if (!tools.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".tools_json: ", tools.status().message()));
    }
    options.tools = std::move(*tools);
  }
  absl::StatusOr<std::string> rendered = context.chat_template->Render(messages, options);
  if (!rendered.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", rendered.status().message()));
  }
  Prompt prompt;
  GKA_ASSIGN_OR_RETURN(prompt.token_ids, Encode(*rendered, context, field));
  prompt.text = std::move(*rendered);
  return prompt;
}

absl::StatusOr<Prompt> TokenizeRequest(const v1::TokenizeRequest& request,
                                       const RequestContext& context) {
  FieldErrors errors;
  CheckModel(request.model(), context, errors);
  switch (request.input_case()) {
    case v1::TokenizeRequest::kText:
      CheckUtf8(request.text(), "text", errors);
      break;
    case v1::TokenizeRequest::kChat:
      CheckChatUtf8(request.chat(), "chat", errors);
      break;
    case v1::TokenizeRequest::INPUT_NOT_SET:
      errors.Add("input", "set one of text or chat");
      break;
  }
  if (!errors.empty()) return errors.ToStatus();
  if (request.input_case() == v1::TokenizeRequest::kChat) {
    return BuildChatPrompt(request.chat(), context, "chat");
  }
  if (context.tokenizer == nullptr) return NoTokenizer("text", "text input");
  Prompt prompt;
  GKA_ASSIGN_OR_RETURN(prompt.token_ids, Encode(request.text(), context, "text"));
  prompt.text = request.text();
  return prompt;
}

absl::StatusOr<ResolvedRequest> ResolveRequest(const v1::GenerateRequest& request,
                                               const RequestContext& context) {
  FieldErrors errors;
  ResolvedRequest plan;

  // Static checks first, all of them, so a client sees every mistake at once.
  if (request.request_id().size() > kMaxRequestIdBytes) {
    errors.Add("request_id",
               absl::StrCat(request.request_id().size(), " bytes; at most ", kMaxRequestIdBytes));
  } else if (std::any_of(request.request_id().begin(), request.request_id().end(),
                         [](char c) { return static_cast<unsigned char>(c) < 0x20; })) {
    errors.Add("request_id", "contains control characters");
  } else {
    CheckUtf8(request.request_id(), "request_id", errors);
  }
  CheckModel(request.model(), context, errors);
  absl::StatusOr<const Tier*> tier = context.tiers->Find(request.tier());
  if (!tier.ok()) {
    errors.Add("tier", absl::StrCat("unknown tier ", QuoteForMessage(request.tier()),
                                    "; this router serves: ", context.tiers->Names()));
  }
  switch (request.input_case()) {
    case v1::GenerateRequest::kText:
      if (request.text().empty()) {
        errors.Add("text", "the prompt is empty");
      } else {
        CheckUtf8(request.text(), "text", errors);
      }
      break;
    case v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids_size() == 0) {
        errors.Add("token_ids.ids", "the prompt is empty");
      } else {
        CheckTokenIds(request.token_ids().ids(), context.vocab_size, "token_ids.ids", errors);
      }
      break;
    case v1::GenerateRequest::kChat:
      if (request.chat().messages_size() == 0) {
        errors.Add("chat.messages", "no messages");
      } else {
        CheckChatUtf8(request.chat(), "chat", errors);
      }
      break;
    case v1::GenerateRequest::INPUT_NOT_SET:
      errors.Add("input", "the request has no prompt; set one of text, token_ids or chat");
      break;
  }
  if (request.has_prefill_num_iter() && request.prefill_num_iter() < 0) {
    errors.Add("prefill_num_iter", absl::StrCat(request.prefill_num_iter(), " must be >= 0"));
  }
  if (request.has_decode_num_iter() && request.decode_num_iter() < 0) {
    errors.Add("decode_num_iter", absl::StrCat(request.decode_num_iter(), " must be >= 0"));
  }
  const v1::SamplingParams& s = request.sampling();
  CheckSampling(s, context, errors);
  if (!errors.empty()) return errors.ToStatus();

  // Preconditions on the router's configuration.
  if (context.tokenizer == nullptr) {
    if (request.input_case() == v1::GenerateRequest::kText) {
      return NoTokenizer("text", "text input");
    }
    if (s.stop_size() > 0) return NoTokenizer("sampling.stop", "stop strings");
  }

  // The prompt.
  switch (request.input_case()) {
    case v1::GenerateRequest::kText: {
      GKA_ASSIGN_OR_RETURN(plan.prompt.token_ids, Encode(request.text(), context, "text"));
      GKA_RETURN_IF_ERROR(CheckPromptVocabulary(plan.prompt.token_ids, context, "text"));
      plan.prompt.text = request.text();
      if (plan.prompt.token_ids.empty()) {
        return absl::InvalidArgumentError("text: the prompt tokenizes to no tokens");
      }
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      plan.prompt.token_ids.assign(request.token_ids().ids().begin(),
                                   request.token_ids().ids().end());
      break;
    case v1::GenerateRequest::kChat: {
      GKA_ASSIGN_OR_RETURN(plan.prompt, BuildChatPrompt(request.chat(), context, "chat"));
      GKA_RETURN_IF_ERROR(CheckPromptVocabulary(plan.prompt.token_ids, context, "chat"));
      break;
    }
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;  // rejected above
  }
  const char* input_field =
      request.input_case() == v1::GenerateRequest::kTokenIds
          ? "token_ids.ids"
          : (request.input_case() == v1::GenerateRequest::kChat ? "chat" : "text");

  // Length: explicit max_tokens must fit; the default shrinks to what is left.
  plan.tier = *tier;
  const int64_t prompt_tokens = static_cast<int64_t>(plan.prompt.token_ids.size());
  const int64_t context_tokens = context.max_context_tokens;
  if (context_tokens > 0 && prompt_tokens >= context_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        input_field, ": the prompt has ", prompt_tokens,
        " tokens, which leaves no room in the model context of ", context_tokens, " tokens"));
  }
  int64_t max_tokens = s.has_max_tokens() ? s.max_tokens() : context.default_max_tokens;
  if (plan.tier->max_tokens > 0) max_tokens = std::min<int64_t>(max_tokens, plan.tier->max_tokens);
  if (context_tokens > 0 && prompt_tokens + max_tokens > context_tokens) {
    if (s.has_max_tokens() && s.max_tokens() <= max_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sampling.max_tokens: the prompt (", prompt_tokens, " tokens) + max_tokens (", max_tokens,
          ") = ", prompt_tokens + max_tokens, " exceeds the model context of ", context_tokens,
          " tokens; ask for at most ", context_tokens - prompt_tokens));
    }
    max_tokens = context_tokens - prompt_tokens;
  }
  plan.max_tokens = static_cast<int32_t>(std::max<int64_t>(max_tokens, 1));

  plan.request_id = request.request_id();
  plan.prefill_num_iter = plan.tier->ClampNumIter(
      request.has_prefill_num_iter() ? std::optional<int>(request.prefill_num_iter())
                                     : std::nullopt,
      plan.tier->prefill_num_iter);
  plan.decode_num_iter = plan.tier->ClampNumIter(
      request.has_decode_num_iter() ? std::optional<int>(request.decode_num_iter()) : std::nullopt,
      plan.tier->decode_num_iter);
  plan.sampling = ResolveSampling(s, context);
  plan.stop_strings.assign(s.stop().begin(), s.stop().end());
  return plan;
}

}  // namespace gka::router
