#include "router/openai_protocol.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/status.h"
#include "common/text/chat_template.h"
#include "common/text/utf8.h"

namespace gka::router::openai {
namespace {

namespace v1 = ::gka::serving::v1;
using Json = nlohmann::json;

constexpr absl::string_view kToolCallOpen = "<tool_call>";
constexpr absl::string_view kToolCallClose = "</tool_call>";
constexpr absl::string_view kThinkOpen = "<think>";
constexpr absl::string_view kThinkClose = "</think>";
// Stand-in for a log-probability JSON cannot carry (-inf), as vLLM reports it.
constexpr float kMinLogprob = -9999.0f;

// dump() throws on invalid UTF-8 by default; everything we send goes through here.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

// True when no array/object in `text` nests deeper than `max_depth` (a linear scan that
// skips strings). Run before parsing: nlohmann's dump() and destructor recurse per level.
bool JsonDepthWithin(absl::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

absl::StatusOr<Json> ParseJsonText(absl::string_view text, absl::string_view what, int max_depth) {
  if (!JsonDepthWithin(text, max_depth)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " nests deeper than ", max_depth, " levels"));
  }
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    // nlohmann quotes the offending bytes, which may be the invalid UTF-8 itself.
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not valid JSON: ", text::Utf8Lossy(e.what())));
  }
}

absl::Status TypeError(absl::string_view param, absl::string_view expected, const Json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(param, " must be ", expected, ", not ", got.type_name()));
}

// The value of `key`, or nullptr when absent or null (OpenAI clients send null for unset).
const Json* Find(const Json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<std::optional<bool>> GetBool(const Json& object, const char* key) {
  const Json* v = Find(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return TypeError(key, "a boolean", *v);
  return v->get<bool>();
}

absl::StatusOr<std::optional<std::string>> GetString(const Json& object, const char* key) {
  const Json* v = Find(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return TypeError(key, "a string", *v);
  return v->get<std::string>();
}

absl::StatusOr<std::optional<double>> GetNumber(const Json& object, const char* key) {
  const Json* v = Find(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return TypeError(key, "a number", *v);
  return v->get<double>();
}

// Integers, and floats with an integral value (5.0), as pydantic accepts them for vLLM.
absl::StatusOr<int64_t> ToInteger(const Json& v, absl::string_view param) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(param, ": ", u, " is too large"));
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18) {
      return static_cast<int64_t>(d);
    }
    return absl::InvalidArgumentError(
        absl::StrCat(param, ": ", d, " is not an integer (or is out of range)"));
  }
  return TypeError(param, "an integer", v);
}

absl::StatusOr<std::optional<int64_t>> GetInteger(const Json& object, const char* key) {
  const Json* v = Find(object, key);
  if (v == nullptr) return std::nullopt;
  GKA_ASSIGN_OR_RETURN(int64_t i, ToInteger(*v, key));
  return i;
}

absl::Status CheckRange(absl::string_view param, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(param, ": ", value, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status Unsupported(absl::string_view param, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(param, ": ", why));
}

// Sets a float sampling field; a value past float's range becomes inf, which the core
// rejects by name.
void SetFloat(std::optional<double> v, void (v1::SamplingParams::*set)(float),
              v1::SamplingParams* s) {
  if (v.has_value()) (s->*set)(static_cast<float>(*v));
}

// The fields both endpoints share: sampling, stop, n, tier, streaming, ids.
absl::Status ParseCommon(const Json& body, const ParseLimits& limits, ParsedRequest* out,
                         v1::GenerateRequest* request) {
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> model, GetString(body, "model"));
  out->model = model.value_or("");
  request->set_model(out->model);

  v1::SamplingParams* s = request->mutable_sampling();
  GKA_ASSIGN_OR_RETURN(std::optional<double> temperature, GetNumber(body, "temperature"));
  SetFloat(temperature, &v1::SamplingParams::set_temperature, s);
  GKA_ASSIGN_OR_RETURN(std::optional<double> top_p, GetNumber(body, "top_p"));
  SetFloat(top_p, &v1::SamplingParams::set_top_p, s);
  GKA_ASSIGN_OR_RETURN(std::optional<double> min_p, GetNumber(body, "min_p"));
  SetFloat(min_p, &v1::SamplingParams::set_min_p, s);
  GKA_ASSIGN_OR_RETURN(std::optional<double> frequency, GetNumber(body, "frequency_penalty"));
  SetFloat(frequency, &v1::SamplingParams::set_frequency_penalty, s);
  GKA_ASSIGN_OR_RETURN(std::optional<double> presence, GetNumber(body, "presence_penalty"));
  SetFloat(presence, &v1::SamplingParams::set_presence_penalty, s);
  GKA_ASSIGN_OR_RETURN(std::optional<double> repetition, GetNumber(body, "repetition_penalty"));
  SetFloat(repetition, &v1::SamplingParams::set_repetition_penalty, s);

  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> top_k, GetInteger(body, "top_k"));
  if (top_k.has_value()) {
    // vLLM spells "no top-k cut" -1; serving.proto spells it 0.
    if (*top_k == -1) top_k = 0;
    GKA_RETURN_IF_ERROR(CheckRange("top_k", *top_k, 0, std::numeric_limits<int32_t>::max()));
    s->set_top_k(static_cast<int32_t>(*top_k));
  }
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> seed, GetInteger(body, "seed"));
  // Any 64-bit seed is accepted; negative ones keep their bits.
  if (seed.has_value()) s->set_seed(static_cast<uint64_t>(*seed));

  // max_completion_tokens replaces the deprecated max_tokens when both are sent.
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens, GetInteger(body, "max_tokens"));
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> max_completion,
                       GetInteger(body, "max_completion_tokens"));
  const char* max_name = max_completion.has_value() ? "max_completion_tokens" : "max_tokens";
  if (max_completion.has_value()) max_tokens = max_completion;
  if (max_tokens.has_value()) {
    if (*max_tokens > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(
          max_name, ": ", *max_tokens, " is larger than any model context; ask for fewer"));
    }
    // < 1 is left to the core, which names the rule.
    s->set_max_tokens(
        static_cast<int32_t>(std::max<int64_t>(*max_tokens, std::numeric_limits<int32_t>::min())));
  }

  if (const Json* stop = Find(body, "stop"); stop != nullptr) {
    if (stop->is_string()) {
      s->add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) {
          return TypeError(absl::StrCat("stop[", i, "]"), "a string", (*stop)[i]);
        }
        s->add_stop((*stop)[i].get<std::string>());
      }
    } else {
      return TypeError("stop", "a string or an array of strings", *stop);
    }
  }
  // vLLM's extensions.
  if (const Json* ids = Find(body, "stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return TypeError("stop_token_ids", "an array of integers", *ids);
    for (size_t i = 0; i < ids->size(); ++i) {
      const std::string param = absl::StrCat("stop_token_ids[", i, "]");
      GKA_ASSIGN_OR_RETURN(int64_t id, ToInteger((*ids)[i], param));
      GKA_RETURN_IF_ERROR(CheckRange(param, id, 0, std::numeric_limits<int32_t>::max()));
      s->add_stop_token_ids(static_cast<int32_t>(id));
    }
  }
  GKA_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos, GetBool(body, "ignore_eos"));
  if (ignore_eos.has_value()) s->set_ignore_eos(*ignore_eos);
  GKA_ASSIGN_OR_RETURN(std::optional<bool> as_ids, GetBool(body, "return_tokens_as_token_ids"));
  out->tokens_as_ids = as_ids.value_or(false);
  // gkaserve's own: per-request GKA solver iterations (clamped to the tier's range).
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> prefill_iter, GetInteger(body, "prefill_num_iter"));
  if (prefill_iter.has_value()) {
    GKA_RETURN_IF_ERROR(CheckRange("prefill_num_iter", *prefill_iter, 0, 1 << 20));
    request->set_prefill_num_iter(static_cast<int32_t>(*prefill_iter));
  }
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> decode_iter, GetInteger(body, "decode_num_iter"));
  if (decode_iter.has_value()) {
    GKA_RETURN_IF_ERROR(CheckRange("decode_num_iter", *decode_iter, 0, 1 << 20));
    request->set_decode_num_iter(static_cast<int32_t>(*decode_iter));
  }

  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> n, GetInteger(body, "n"));
  if (n.has_value()) {
    GKA_RETURN_IF_ERROR(CheckRange("n", *n, 1, limits.max_n));
    out->n = static_cast<int>(*n);
  }
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> best_of, GetInteger(body, "best_of"));
  if (best_of.has_value() && *best_of != out->n && *best_of != 1) {
    return Unsupported("best_of", "only best_of == n is supported (no server-side ranking)");
  }

  GKA_ASSIGN_OR_RETURN(std::optional<bool> stream, GetBool(body, "stream"));
  out->stream = stream.value_or(false);
  if (const Json* options = Find(body, "stream_options"); options != nullptr) {
    if (!options->is_object()) return TypeError("stream_options", "an object", *options);
    if (!out->stream) {
      return absl::InvalidArgumentError("stream_options: only allowed when stream is true");
    }
    GKA_ASSIGN_OR_RETURN(std::optional<bool> usage, GetBool(*options, "include_usage"));
    out->include_usage = usage.value_or(false);
  }

  // OpenAI's service tiers "auto" and "default" are our default tier; other names are ours.
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> tier, GetString(body, "service_tier"));
  if (tier.has_value() && *tier != "auto" && *tier != "default") request->set_tier(*tier);
  // Accepted for compatibility; it identifies the end user to OpenAI and means nothing here.
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> user, GetString(body, "user"));
  (void)user;

  if (const Json* bias = Find(body, "logit_bias"); bias != nullptr) {
    if (!bias->is_object()) return TypeError("logit_bias", "an object", *bias);
    if (!bias->empty()) return Unsupported("logit_bias", "not supported by this server");
  }
  if (const Json* format = Find(body, "response_format"); format != nullptr) {
    if (!format->is_object()) return TypeError("response_format", "an object", *format);
    GKA_ASSIGN_OR_RETURN(std::optional<std::string> type, GetString(*format, "type"));
    if (type.has_value() && *type != "text") {
      return Unsupported(
          "response_format",
          absl::StrCat("type '", text::Utf8Lossy(*type),
                       "' is not supported: this server has no constrained (JSON) decoding; "
                       "use {\"type\": \"text\"} and ask for JSON in the prompt"));
    }
  }
  return absl::OkStatus();
}

// OpenAI messages -> serving.proto chat messages, through common/text's parser (content
// parts, tool_calls in both spellings) so that the gRPC and HTTP paths accept the same.
absl::Status ParseMessages(const Json& body, v1::ChatMessages* chat) {
  const Json* messages = Find(body, "messages");
  if (messages == nullptr) return absl::InvalidArgumentError("messages: required");
  if (!messages->is_array()) return TypeError("messages", "an array", *messages);
  if (messages->empty()) return absl::InvalidArgumentError("messages: no messages");
  // Newer OpenAI clients send "developer" where chat templates know "system".
  Json copy = *messages;
  for (Json& m : copy) {
    if (m.is_object() && m.contains("role") && m["role"] == "developer") m["role"] = "system";
  }
  GKA_ASSIGN_OR_RETURN(std::vector<text::ChatMessage> parsed,
                       text::ParseChatMessagesJson(Dump(copy)));
  for (size_t i = 0; i < parsed.size(); ++i) {
    v1::ChatMessage* m = chat->add_messages();
    m->set_role(std::string(text::RoleName(parsed[i].role)));
    m->set_content(std::move(parsed[i].content));
    for (text::ToolCall& call : parsed[i].tool_calls) {
      v1::ToolCall* c = m->add_tool_calls();
      c->set_type("function");
      c->mutable_function()->set_name(std::move(call.name));
      c->mutable_function()->set_arguments(std::move(call.arguments));
    }
    const Json& raw = copy[i];
    if (const Json* id = Find(raw, "tool_call_id"); id != nullptr && id->is_string()) {
      m->set_tool_call_id(id->get<std::string>());
    }
    if (const Json* name = Find(raw, "name"); name != nullptr && name->is_string()) {
      m->set_name(name->get<std::string>());
    }
  }
  return absl::OkStatus();
}

absl::Status ParseChat(const Json& body, const ParseLimits& limits, ParsedRequest* out) {
  v1::GenerateRequest request;
  GKA_RETURN_IF_ERROR(ParseCommon(body, limits, out, &request));
  v1::ChatMessages* chat = request.mutable_chat();
  GKA_RETURN_IF_ERROR(ParseMessages(body, chat));

  GKA_ASSIGN_OR_RETURN(std::optional<bool> logprobs, GetBool(body, "logprobs"));
  out->logprobs = logprobs.value_or(false);
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> top, GetInteger(body, "top_logprobs"));
  if (top.has_value()) {
    GKA_RETURN_IF_ERROR(CheckRange("top_logprobs", *top, 0, limits.max_top_logprobs));
    if (!out->logprobs && *top > 0) {
      return absl::InvalidArgumentError("top_logprobs: requires logprobs to be true");
    }
    out->top_logprobs = static_cast<int>(*top);
  }

  if (Find(body, "functions") != nullptr || Find(body, "function_call") != nullptr) {
    return Unsupported("functions", "the deprecated functions API is not supported; use tools");
  }
  bool tools_on = true;
  if (const Json* choice = Find(body, "tool_choice"); choice != nullptr) {
    if (choice->is_string()) {
      const std::string c = choice->get<std::string>();
      if (c == "none") {
        tools_on = false;
      } else if (c != "auto") {
        return Unsupported("tool_choice",
                           absl::StrCat("'", text::Utf8Lossy(c),
                                        "' is not supported: this server cannot force a tool "
                                        "call (no constrained decoding); use 'auto' or 'none'"));
      }
    } else if (choice->is_object()) {
      return Unsupported("tool_choice",
                         "naming a function is not supported: this server cannot force a tool "
                         "call (no constrained decoding); use 'auto' or 'none'");
    } else {
      return TypeError("tool_choice", "a string or an object", *choice);
    }
  }
  if (const Json* tools = Find(body, "tools"); tools != nullptr) {
    if (!tools->is_array()) return TypeError("tools", "an array", *tools);
    for (size_t i = 0; i < tools->size(); ++i) {
      if (!(*tools)[i].is_object()) {
        return TypeError(absl::StrCat("tools[", i, "]"), "an object", (*tools)[i]);
      }
    }
    // tool_choice "none": the model is not told about the tools at all.
    if (tools_on && !tools->empty()) {
      chat->set_tools_json(Dump(*tools));
      out->parse_tool_calls = true;
    }
  }
  GKA_ASSIGN_OR_RETURN(std::optional<bool> parallel, GetBool(body, "parallel_tool_calls"));
  (void)parallel;  // Qwen3 decides how many calls to make; accepted for compatibility.
  if (const Json* kwargs = Find(body, "chat_template_kwargs"); kwargs != nullptr) {
    if (!kwargs->is_object()) return TypeError("chat_template_kwargs", "an object", *kwargs);
    GKA_ASSIGN_OR_RETURN(std::optional<bool> thinking, GetBool(*kwargs, "enable_thinking"));
    if (thinking.has_value()) chat->set_enable_thinking(*thinking);
  }
  // Only a request that turns thinking on gets <think> parsed: with it off the template closes
  // an empty think block in the prompt and a literal "<think>" in the answer stays content.
  out->parse_reasoning = chat->enable_thinking();
  GKA_ASSIGN_OR_RETURN(std::optional<bool> include, GetBool(body, "include_reasoning"));
  out->include_reasoning = include.value_or(true);
  out->prompts.push_back(std::move(request));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> ParseTokenArray(const Json& array, absl::string_view param) {
  std::vector<int32_t> ids;
  ids.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const std::string at = absl::StrCat(param, "[", i, "]");
    GKA_ASSIGN_OR_RETURN(int64_t id, ToInteger(array[i], at));
    GKA_RETURN_IF_ERROR(CheckRange(at, id, 0, std::numeric_limits<int32_t>::max()));
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

absl::Status ParseCompletion(const Json& body, const ParseLimits& limits, ParsedRequest* out) {
  v1::GenerateRequest common;
  GKA_RETURN_IF_ERROR(ParseCommon(body, limits, out, &common));
  GKA_ASSIGN_OR_RETURN(std::optional<int64_t> logprobs, GetInteger(body, "logprobs"));
  if (logprobs.has_value()) {
    GKA_RETURN_IF_ERROR(CheckRange("logprobs", *logprobs, 0, limits.max_top_logprobs));
    out->logprobs = true;
    out->top_logprobs = static_cast<int>(*logprobs);
  }
  GKA_ASSIGN_OR_RETURN(std::optional<bool> echo, GetBool(body, "echo"));
  out->echo = echo.value_or(false);
  if (out->echo && out->logprobs) {
    return Unsupported("echo", "echo with logprobs is not supported (no prompt logprobs)");
  }
  GKA_ASSIGN_OR_RETURN(std::optional<std::string> suffix, GetString(body, "suffix"));
  if (suffix.has_value() && !suffix->empty()) {
    return Unsupported("suffix", "not supported by this model");
  }

  const Json* prompt = Find(body, "prompt");
  if (prompt == nullptr) return absl::InvalidArgumentError("prompt: required");
  std::vector<v1::GenerateRequest> prompts;
  auto add = [&]() -> v1::GenerateRequest& {
    prompts.push_back(common);
    return prompts.back();
  };
  if (prompt->is_string()) {
    add().set_text(prompt->get<std::string>());
  } else if (!prompt->is_array()) {
    return TypeError("prompt", "a string, an array of strings or an array of token ids", *prompt);
  } else if (prompt->empty()) {
    return absl::InvalidArgumentError("prompt: the prompt is empty");
  } else if ((*prompt)[0].is_number()) {
    GKA_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseTokenArray(*prompt, "prompt"));
    add().mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  } else {
    // A batch: strings, or arrays of token ids.
    if (static_cast<int>(prompt->size()) > limits.max_prompts) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt: ", prompt->size(), " prompts; at most ", limits.max_prompts));
    }
    for (size_t i = 0; i < prompt->size(); ++i) {
      const Json& p = (*prompt)[i];
      const std::string at = absl::StrCat("prompt[", i, "]");
      if (p.is_string()) {
        add().set_text(p.get<std::string>());
      } else if (p.is_array()) {
        GKA_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseTokenArray(p, at));
        add().mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
      } else {
        return TypeError(at, "a string or an array of token ids", p);
      }
    }
  }
  out->prompts = std::move(prompts);
  return absl::OkStatus();
}

const char* FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    case v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return nullptr;
  }
}

Json FinishReasonJson(const char* name) { return name == nullptr ? Json(nullptr) : Json(name); }

// The token's bytes (a token may hold part of a character: shown with U+FFFD in `token`,
// exact in `bytes`); "token_id:<id>" with return_tokens_as_token_ids, as vLLM spells it.
std::string TokenBytes(const text::Tokenizer* tokenizer, int32_t id, bool as_ids) {
  if (as_ids) return absl::StrCat("token_id:", id);
  if (tokenizer == nullptr) return "";
  absl::StatusOr<absl::string_view> bytes = tokenizer->TokenBytes(id);
  return bytes.ok() ? std::string(*bytes) : "";
}

float SafeLogprob(float lp) { return std::isfinite(lp) ? lp : kMinLogprob; }

Json BytesJson(absl::string_view bytes) {
  Json out = Json::array();
  for (unsigned char c : bytes) out.push_back(static_cast<int>(c));
  return out;
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
Json ChatLogprobs(absl::Span<const v1::TokenLogprob> logprobs, const text::Tokenizer* tokenizer,
                  bool as_ids) {
  Json content = Json::array();
  for (const v1::TokenLogprob& lp : logprobs) {
    const std::string bytes = TokenBytes(tokenizer, lp.token_id(), as_ids);
    Json top = Json::array();
    for (const v1::TopLogprob& t : lp.top()) {
      const std::string tb = TokenBytes(tokenizer, t.token_id(), as_ids);
      top.push_back({{"token", text::Utf8Lossy(tb)},
                     {"logprob", SafeLogprob(t.logprob())},
                     {"bytes", BytesJson(tb)}});
    }
    content.push_back({{"token", text::Utf8Lossy(bytes)},
                       {"logprob", SafeLogprob(lp.logprob())},
                       {"bytes", BytesJson(bytes)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

// Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; offsets count
// the tokens' text from `offset` on.
Json CompletionLogprobs(absl::Span<const v1::TokenLogprob> logprobs,
                        const text::Tokenizer* tokenizer, bool as_ids, size_t offset) {
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(),
       offsets = Json::array();
  for (const v1::TokenLogprob& lp : logprobs) {
    const std::string token = text::Utf8Lossy(TokenBytes(tokenizer, lp.token_id(), as_ids));
    tokens.push_back(token);
    token_logprobs.push_back(SafeLogprob(lp.logprob()));
    Json alternatives = Json::object();
    for (const v1::TopLogprob& t : lp.top()) {
      alternatives[text::Utf8Lossy(TokenBytes(tokenizer, t.token_id(), as_ids))] =
          SafeLogprob(t.logprob());
    }
    top.push_back(std::move(alternatives));
    offsets.push_back(offset);
    offset += token.size();
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

Json ToolCallsJson(const std::vector<ToolCallOut>& calls, bool with_index) {
  Json out = Json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    Json call = {{"id", calls[i].id},
                 {"type", "function"},
                 {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (with_index) call["index"] = i;
    out.push_back(std::move(call));
  }
  return out;
}

// What `echo` prints before choice text: the prompt as text.
std::string EchoText(const v1::GenerateRequest& prompt, const text::Tokenizer* tokenizer) {
  if (prompt.input_case() == v1::GenerateRequest::kText) return prompt.text();
  if (tokenizer == nullptr) return "";
  absl::StatusOr<std::string> text = tokenizer->Decode(
      std::vector<int32_t>(prompt.token_ids().ids().begin(), prompt.token_ids().ids().end()));
  return text.ok() ? *text : "";
}

Json UsageJson(uint32_t prompt_tokens, uint32_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

std::string RandomAlnum(size_t n, absl::string_view alphabet) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::string out(n, ' ');
  for (char& c : out) c = alphabet[pick(rng)];
  return out;
}

// Rewrites a serving.proto field path into the OpenAI parameter it came from.
std::string OpenAiParam(absl::string_view field) {
  struct Rename {
    absl::string_view from, to;
  };
  static constexpr Rename kRenames[] = {
      {"sampling.", ""},        {"chat.tools_json", "tools"}, {"chat.messages", "messages"},
      {"chat", "messages"},     {"token_ids.ids", "prompt"},  {"text", "prompt"},
      {"tier", "service_tier"},
  };
  for (const Rename& r : kRenames) {
    if (!absl::StartsWith(field, r.from)) continue;
    const absl::string_view rest = field.substr(r.from.size());
    // Whole path components only ("text" is not a prefix of "textual").
    if (!r.from.empty() && r.from.back() != '.' && !rest.empty() && rest[0] != '.' &&
        rest[0] != '[') {
      continue;
    }
    return absl::StrCat(r.to, rest);
  }
  return std::string(field);
}

// The field path a "field: problem" or "field must be ..." message starts with, or "".
// Anything else (a sentence) names no field.
absl::string_view LeadingField(absl::string_view message) {
  size_t end = 0;
  while (end < message.size() &&
         (absl::ascii_isalnum(message[end]) || message[end] == '_' || message[end] == '.' ||
          message[end] == '[' || message[end] == ']')) {
    ++end;
  }
  if (end == 0) return {};
  const absl::string_view rest = message.substr(end);
  if (!absl::StartsWith(rest, ":") && !absl::StartsWith(rest, " must ")) return {};
  return message.substr(0, end);
}

// The length of the longest tail of `held` that is a proper prefix of `tag` (it may grow into
// the tag with the next chunk).
size_t PartialTagTail(absl::string_view held, absl::string_view tag) {
  size_t keep = std::min(held.size(), tag.size() - 1);
  while (keep > 0 && !absl::EndsWith(held, tag.substr(0, keep))) --keep;
  return keep;
}

}  // namespace

std::string ErrorJson(const ApiError& error) {
  Json body = {{"error",
                {{"message", text::Utf8Lossy(error.message)},
                 {"type", error.type},
                 {"param", error.param.empty() ? Json(nullptr) : Json(error.param)},
                 {"code", error.code.empty() ? Json(nullptr) : Json(error.code)}}}};
  return Dump(body);
}

ApiError ErrorFromStatus(const absl::Status& status) {
  ApiError error;
  // Each "; "-separated problem names its field; all are renamed, the first is the param.
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(status.message(), "; ")) {
    const absl::string_view field = LeadingField(part);
    if (field.empty()) {
      parts.emplace_back(part);
      continue;
    }
    const std::string param = OpenAiParam(field);
    if (error.param.empty()) error.param = param;
    parts.push_back(absl::StrCat(param, part.substr(field.size())));
  }
  error.message = absl::StrJoin(parts, "; ");
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      error.http_status = 400;
      break;
    case absl::StatusCode::kUnauthenticated:
      error.http_status = 401;
      error.type = "authentication_error";
      error.code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      error.http_status = 403;
      error.type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      error.http_status = 404;
      error.type = "not_found_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      error.http_status = 429;
      error.type = "rate_limit_error";
      error.code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
      error.http_status = 503;
      error.type = "server_error";
      error.code = "service_unavailable";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      error.http_status = 504;
      error.type = "server_error";
      error.code = "timeout";
      break;
    default:
      error.http_status = 500;
      error.type = "server_error";
      break;
  }
  // Only client mistakes point at a parameter.
  if (error.http_status != 400) error.param.clear();
  return error;
}

absl::StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, absl::string_view body,
                                           const ParseLimits& limits) {
  GKA_ASSIGN_OR_RETURN(Json json, ParseJsonText(body, "the request body", limits.max_json_depth));
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request body must be a JSON object, not ", json.type_name()));
  }
  ParsedRequest out;
  out.endpoint = endpoint;
  if (endpoint == Endpoint::kChatCompletions) {
    GKA_RETURN_IF_ERROR(ParseChat(json, limits, &out));
  } else {
    GKA_RETURN_IF_ERROR(ParseCompletion(json, limits, &out));
  }
  for (v1::GenerateRequest& r : out.prompts) {
    if (out.logprobs) r.mutable_sampling()->set_logprobs(true);
    if (out.top_logprobs > 0) r.mutable_sampling()->set_top_logprobs(out.top_logprobs);
  }
  return out;
}

v1::GenerateRequest RequestForChoice(const ParsedRequest& request, absl::string_view response_id,
                                     int choice) {
  v1::GenerateRequest r = request.prompts[choice / request.n];
  r.set_request_id(request.num_choices() == 1 ? std::string(response_id)
                                              : absl::StrCat(response_id, "-", choice));
  if (r.sampling().has_seed()) {
    r.mutable_sampling()->set_seed(r.sampling().seed() + static_cast<uint64_t>(choice % request.n));
  }
  return r;
}

std::string NewResponseId(Endpoint endpoint) {
  return absl::StrCat(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-",
                      RandomAlnum(24, "0123456789abcdef"));
}

void Accumulate(const v1::GenerateResponse& response, ChoiceResult* choice) {
  switch (response.kind_case()) {
    case v1::GenerateResponse::kChunk: {
      const v1::Chunk& chunk = response.chunk();
      choice->text += chunk.text();
      choice->logprobs.insert(choice->logprobs.end(), chunk.logprobs().begin(),
                              chunk.logprobs().end());
      if (chunk.has_usage()) {
        choice->prompt_tokens = chunk.usage().prompt_tokens();
        choice->completion_tokens = chunk.usage().completion_tokens();
      }
      break;
    }
    case v1::GenerateResponse::kFinal: {
      const v1::Final& final = response.final();
      choice->finish_reason = final.finish_reason();
      choice->prompt_tokens = final.usage().prompt_tokens();
      choice->completion_tokens = final.usage().completion_tokens();
      choice->tier = final.tier();
      break;
    }
    case v1::GenerateResponse::kError:
      choice->error = absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                                   response.error().message());
      break;
    default:
      break;
  }
}

ParsedToolCalls ParseToolCalls(absl::string_view text) {
  ParsedToolCalls out;
  size_t pos = text.find(kToolCallOpen);
  if (pos == absl::string_view::npos) {
    out.content = std::string(text);
    return out;
  }
  const absl::string_view before = text.substr(0, pos);
  while (pos != absl::string_view::npos) {
    const size_t start = pos + kToolCallOpen.size();
    const size_t end = text.find(kToolCallClose, start);
    const absl::string_view block = absl::StripAsciiWhitespace(
        text.substr(start, end == absl::string_view::npos ? absl::string_view::npos : end - start));
    // Model output is untrusted JSON too: the same depth guard as request bodies.
    absl::StatusOr<Json> call = ParseJsonText(block, "tool call", 64);
    const Json* name = call.ok() && call->is_object() ? Find(*call, "name") : nullptr;
    if (name == nullptr || !name->is_string()) {
      return ParsedToolCalls{.content = std::string(text), .calls = {}};
    }
    ToolCallOut c;
    c.id = absl::StrCat(
        "call_", RandomAlnum(24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"));
    c.name = name->get<std::string>();
    const Json* args = Find(*call, "arguments");
    if (args == nullptr) {
      c.arguments = "{}";
    } else if (args->is_string()) {
      c.arguments = args->get<std::string>();  // already JSON text
    } else {
      c.arguments = Dump(*args);
    }
    out.calls.push_back(std::move(c));
    pos = end == absl::string_view::npos ? end
                                         : text.find(kToolCallOpen, end + kToolCallClose.size());
  }
  out.content = std::string(absl::StripAsciiWhitespace(before));
  return out;
}

std::string ResponseJson(const ParsedRequest& request, const ResponseMeta& meta,
                         absl::Span<const ChoiceResult> choices) {
  const bool chat = request.endpoint == Endpoint::kChatCompletions;
  Json out_choices = Json::array();
  uint32_t prompt_tokens = 0, completion_tokens = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    // n choices of one prompt share it: count it once.
    if (i % request.n == 0) prompt_tokens += c.prompt_tokens;
    completion_tokens += c.completion_tokens;
    Json choice = {{"index", i}};
    const char* finish = FinishReasonName(c.finish_reason);
    if (chat) {
      SplitOutput split{.reasoning = std::nullopt, .content = c.text};
      if (request.parse_reasoning) split = SplitReasoning(c.text);
      // vLLM: content is null when the thinking took all the output.
      Json message = {
          {"role", "assistant"},
          {"content", split.reasoning.has_value() && split.content.empty() ? Json(nullptr)
                                                                           : Json(split.content)}};
      if (request.parse_reasoning && request.include_reasoning) {
        message["reasoning_content"] =
            split.reasoning.has_value() ? Json(*split.reasoning) : Json();
      }
      if (request.parse_tool_calls) {
        ParsedToolCalls parsed = ParseToolCalls(split.content);
        if (!parsed.calls.empty()) {
          message["content"] = parsed.content.empty() ? Json(nullptr) : Json(parsed.content);
          message["tool_calls"] = ToolCallsJson(parsed.calls, /*with_index=*/false);
          if (c.finish_reason == v1::FINISH_REASON_STOP) finish = "tool_calls";
        }
      }
      choice["message"] = std::move(message);
      choice["logprobs"] = request.logprobs
                               ? ChatLogprobs(c.logprobs, meta.tokenizer, request.tokens_as_ids)
                               : Json();
    } else {
      const std::string echo =
          request.echo ? EchoText(request.prompts[i / request.n], meta.tokenizer) : "";
      choice["text"] = echo + c.text;
      choice["logprobs"] = request.logprobs ? CompletionLogprobs(c.logprobs, meta.tokenizer,
                                                                 request.tokens_as_ids, echo.size())
                                            : Json();
    }
    choice["finish_reason"] = FinishReasonJson(finish);
    out_choices.push_back(std::move(choice));
  }
  Json body = {{"id", meta.id},
               {"object", chat ? "chat.completion" : "text_completion"},
               {"created", meta.created},
               {"model", meta.model},
               {"choices", std::move(out_choices)},
               {"usage", UsageJson(prompt_tokens, completion_tokens)}};
  if (!choices.empty() && !choices[0].tier.empty()) body["service_tier"] = choices[0].tier;
  return Dump(body);
}

ReasoningStreamFilter::Parts ReasoningStreamFilter::Feed(absl::string_view delta) {
  held_.append(delta.data(), delta.size());
  Parts out;
  while (true) {
    if (state_ == State::kAfter) {
      out.content += held_;
      held_.clear();
      return out;
    }
    const bool thinking = state_ == State::kThinking;
    const absl::string_view tag = thinking ? kThinkClose : kThinkOpen;
    std::string& sink = thinking ? out.reasoning : out.content;
    const size_t p = absl::string_view(held_).find(tag);
    if (p == absl::string_view::npos) {
      const size_t keep = PartialTagTail(held_, tag);
      sink += held_.substr(0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return out;
    }
    sink += held_.substr(0, p);
    held_.erase(0, p + tag.size());
    state_ = thinking ? State::kAfter : State::kThinking;
  }
}

ReasoningStreamFilter::Parts ReasoningStreamFilter::Finish() {
  Parts out;
  (state_ == State::kThinking ? out.reasoning : out.content) = std::move(held_);
  held_.clear();
  return out;
}

SplitOutput SplitReasoning(absl::string_view text) {
  ReasoningStreamFilter filter;
  ReasoningStreamFilter::Parts a = filter.Feed(text);
  ReasoningStreamFilter::Parts b = filter.Finish();
  SplitOutput out;
  out.content = a.content + b.content;
  if (filter.saw_think()) out.reasoning = a.reasoning + b.reasoning;
  return out;
}

std::string ToolCallStreamFilter::Feed(absl::string_view delta) {
  held_.append(delta.data(), delta.size());
  if (in_calls_) return "";
  if (const size_t p = absl::string_view(held_).find(kToolCallOpen); p != std::string::npos) {
    std::string content = held_.substr(0, p);
    held_.erase(0, p);
    in_calls_ = true;
    return content;
  }
  // Keep the longest tail that could still grow into "<tool_call>".
  const size_t keep = PartialTagTail(held_, kToolCallOpen);
  std::string content = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return content;
}

ParsedToolCalls ToolCallStreamFilter::Finish() {
  std::string held = std::move(held_);
  held_.clear();
  if (!in_calls_) return ParsedToolCalls{.content = std::move(held), .calls = {}};
  ParsedToolCalls parsed = ParseToolCalls(held);
  if (parsed.calls.empty()) parsed.content = std::move(held);
  return parsed;
}

StreamEncoder::StreamEncoder(const ParsedRequest& request, ResponseMeta meta)
    : request_(request), meta_(std::move(meta)), choices_(request.num_choices()) {}

std::string StreamEncoder::Event(int choice, absl::string_view text, absl::string_view reasoning,
                                 absl::Span<const v1::TokenLogprob> logprobs,
                                 const char* finish_reason, const std::vector<ToolCallOut>* calls) {
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  Choice& c = choices_[choice];
  Json item = {{"index", choice}};
  if (chat) {
    Json delta = Json::object();
    if (!c.started) delta["role"] = "assistant";
    if (!text.empty() || !c.started) delta["content"] = std::string(text);
    if (!reasoning.empty()) delta["reasoning_content"] = std::string(reasoning);
    if (calls != nullptr) delta["tool_calls"] = ToolCallsJson(*calls, /*with_index=*/true);
    item["delta"] = std::move(delta);
    item["logprobs"] = request_.logprobs && !logprobs.empty()
                           ? ChatLogprobs(logprobs, meta_.tokenizer, request_.tokens_as_ids)
                           : Json();
  } else {
    item["text"] = std::string(text);
    item["logprobs"] =
        request_.logprobs && !logprobs.empty()
            ? CompletionLogprobs(logprobs, meta_.tokenizer, request_.tokens_as_ids, c.text_offset)
            : Json();
    c.text_offset += text.size();
  }
  c.started = true;
  item["finish_reason"] = FinishReasonJson(finish_reason);
  Json chunk = {{"id", meta_.id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", meta_.created},
                {"model", meta_.model},
                {"choices", Json::array({std::move(item)})}};
  // OpenAI: with include_usage every chunk carries "usage": null but the last.
  if (request_.include_usage) chunk["usage"] = nullptr;
  return absl::StrCat("data: ", Dump(chunk), "\n\n");
}

std::string StreamEncoder::OnResponse(int choice, const v1::GenerateResponse& response) {
  Choice& c = choices_[choice];
  std::string out;
  switch (response.kind_case()) {
    case v1::GenerateResponse::kChunk: {
      const v1::Chunk& chunk = response.chunk();
      if (chunk.has_usage()) {
        c.prompt_tokens = chunk.usage().prompt_tokens();
        c.completion_tokens = chunk.usage().completion_tokens();
      }
      std::string text = chunk.text();
      if (!c.started && request_.echo) {
        text = EchoText(request_.prompts[choice / request_.n], meta_.tokenizer) + text;
      }
      std::string reasoning;
      if (request_.parse_reasoning) {
        ReasoningStreamFilter::Parts parts = c.reasoning.Feed(text);
        text = std::move(parts.content);
        if (request_.include_reasoning) reasoning = std::move(parts.reasoning);
      }
      if (request_.parse_tool_calls) text = c.tools.Feed(text);
      const bool with_logprobs = request_.logprobs && chunk.logprobs_size() > 0;
      if (text.empty() && reasoning.empty() && !with_logprobs && c.started) return "";
      const std::vector<v1::TokenLogprob> logprobs(chunk.logprobs().begin(),
                                                   chunk.logprobs().end());
      return Event(choice, text, reasoning, logprobs, nullptr, nullptr);
    }
    case v1::GenerateResponse::kFinal: {
      const v1::Final& final = response.final();
      c.prompt_tokens = final.usage().prompt_tokens();
      c.completion_tokens = final.usage().completion_tokens();
      const char* finish = FinishReasonName(final.finish_reason());
      std::string content;  // released by the reasoning filter, not yet through the tool filter
      if (request_.parse_reasoning) {
        ReasoningStreamFilter::Parts rest = c.reasoning.Finish();
        if (request_.include_reasoning && !rest.reasoning.empty()) {
          out += Event(choice, "", rest.reasoning, {}, nullptr, nullptr);
        }
        content = std::move(rest.content);
      }
      if (request_.parse_tool_calls) {
        const std::string sure = c.tools.Feed(content);
        if (!sure.empty()) out += Event(choice, sure, "", {}, nullptr, nullptr);
        ParsedToolCalls rest = c.tools.Finish();
        if (!rest.content.empty()) out += Event(choice, rest.content, "", {}, nullptr, nullptr);
        if (!rest.calls.empty()) {
          out += Event(choice, "", "", {}, nullptr, &rest.calls);
          if (final.finish_reason() == v1::FINISH_REASON_STOP) finish = "tool_calls";
        }
      } else if (!content.empty()) {
        out += Event(choice, content, "", {}, nullptr, nullptr);
      }
      out += Event(choice, "", "", {}, finish, nullptr);
      return out;
    }
    default:
      return "";
  }
}

std::string StreamEncoder::Error(const ApiError& error) {
  return absl::StrCat("data: ", ErrorJson(error), "\n\n");
}

std::string StreamEncoder::Done() {
  std::string out;
  if (request_.include_usage) {
    uint32_t prompt_tokens = 0, completion_tokens = 0;
    for (size_t i = 0; i < choices_.size(); ++i) {
      if (i % request_.n == 0) prompt_tokens += choices_[i].prompt_tokens;
      completion_tokens += choices_[i].completion_tokens;
    }
    const bool chat = request_.endpoint == Endpoint::kChatCompletions;
    Json chunk = {
        {"id", meta_.id},           {"object", chat ? "chat.completion.chunk" : "text_completion"},
        {"created", meta_.created}, {"model", meta_.model},
        {"choices", Json::array()}, {"usage", UsageJson(prompt_tokens, completion_tokens)}};
    absl::StrAppend(&out, "data: ", Dump(chunk), "\n\n");
  }
  absl::StrAppend(&out, "data: [DONE]\n\n");
  return out;
}

}  // namespace gka::router::openai
