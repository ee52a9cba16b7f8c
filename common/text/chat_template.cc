#include "common/text/chat_template.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/text/json_util.h"
#include "common/text/python_json.h"

namespace gka::text {
namespace {

using Json = nlohmann::ordered_json;
using internal::FindNonNull;

constexpr absl::string_view kToolsPreamble =
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
constexpr absl::string_view kToolsPostamble =
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";
constexpr absl::string_view kEmptyThink = "<think>\n\n</think>\n\n";

// Python's str.lstrip('\n') / rstrip('\n') / strip('\n').
absl::string_view LstripNewlines(absl::string_view s) {
  while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return s;
}
absl::string_view RstripNewlines(absl::string_view s) {
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}
absl::string_view StripNewlines(absl::string_view s) { return RstripNewlines(LstripNewlines(s)); }

// Python's s.split(sep)[0] and s.split(sep)[-1].
absl::string_view BeforeFirst(absl::string_view s, absl::string_view sep) {
  const size_t pos = s.find(sep);
  return pos == absl::string_view::npos ? s : s.substr(0, pos);
}
absl::string_view AfterLast(absl::string_view s, absl::string_view sep) {
  const size_t pos = s.rfind(sep);
  return pos == absl::string_view::npos ? s : s.substr(pos + sep.size());
}

absl::StatusOr<Json> ParseJsonValue(absl::string_view text, absl::string_view what) {
  return internal::ParseJson<Json>(text, what);
}

// The template's `x | tojson` for JSON text `text`.
absl::StatusOr<std::string> ToJson(absl::string_view text, absl::string_view what) {
  GKA_ASSIGN_OR_RETURN(Json value, ParseJsonValue(text, what));
  return internal::PythonJsonDumps(value);
}

// One assistant turn, following the Qwen3 template line by line (names as in the template).
absl::Status AppendAssistant(const ChatMessage& message, bool after_last_query, bool is_last,
                             std::string* out) {
  absl::string_view content = message.content;
  absl::string_view reasoning_content;
  if (message.reasoning_content.has_value()) {
    reasoning_content = *message.reasoning_content;
  } else if (absl::StrContains(message.content, "</think>")) {
    content = LstripNewlines(AfterLast(message.content, "</think>"));
    reasoning_content = LstripNewlines(
        AfterLast(RstripNewlines(BeforeFirst(message.content, "</think>")), "<think>"));
  }
  if (after_last_query && (is_last || !reasoning_content.empty())) {
    absl::StrAppend(out, "<|im_start|>assistant\n<think>\n", StripNewlines(reasoning_content),
                    "\n</think>\n\n", LstripNewlines(content));
  } else {
    absl::StrAppend(out, "<|im_start|>assistant\n", content);
  }
  for (size_t i = 0; i < message.tool_calls.size(); ++i) {
    const ToolCall& call = message.tool_calls[i];
    if (i > 0 || !content.empty()) out->push_back('\n');
    std::string arguments = call.arguments;
    if (call.arguments_format == ToolCall::ArgumentsFormat::kJsonValue) {
      GKA_ASSIGN_OR_RETURN(
          arguments,
          ToJson(call.arguments, absl::StrCat("arguments of tool call ", i, " (", call.name, ")")));
    }
    absl::StrAppend(out, "<tool_call>\n{\"name\": \"", call.name, "\", \"arguments\": ", arguments,
                    "}\n</tool_call>");
  }
  out->append("<|im_end|>\n");
  return absl::OkStatus();
}

bool IsToolResponseText(absl::string_view content) {
  return absl::StartsWith(content, "<tool_response>") &&
         absl::EndsWith(content, "</tool_response>");
}

// Plain ChatML for configs without a template: every turn as <|im_start|>role\n...<|im_end|>.
absl::StatusOr<std::string> RenderChatMl(absl::Span<const ChatMessage> messages,
                                         const ChatRenderOptions& options) {
  std::string out;
  for (const ChatMessage& m : messages) {
    if (!m.tool_calls.empty()) {
      return absl::InvalidArgumentError(
          "tool calls need a chat template; the plain ChatML fallback (no chat_template in "
          "tokenizer_config.json) cannot render them");
    }
    absl::StrAppend(&out, "<|im_start|>", RoleName(m.role), "\n", m.content, "<|im_end|>\n");
  }
  if (options.add_generation_prompt) out.append("<|im_start|>assistant\n");
  return out;
}

absl::Status TypeError(absl::string_view where, absl::string_view expected, const Json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, " must be ", expected, ", not ", got.type_name()));
}

absl::StatusOr<std::string> ParseContent(const Json& message, absl::string_view where) {
  const Json* content = FindNonNull(message, "content");
  if (content == nullptr) return std::string();
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) {
    return TypeError(absl::StrCat(where, ".content"), "a string or an array of text parts",
                     *content);
  }
  std::string text;
  for (size_t i = 0; i < content->size(); ++i) {
    const Json& part = (*content)[i];
    const std::string part_where = absl::StrCat(where, ".content[", i, "]");
    GKA_ASSIGN_OR_RETURN(std::string type, internal::GetString(part, "type", "", part_where));
    const Json* part_text = FindNonNull(part, "text");
    if (type != "text" || part_text == nullptr || !part_text->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          part_where, " must be {\"type\": \"text\", \"text\": string}; only text is supported"));
    }
    text += part_text->get<std::string>();
  }
  return text;
}

absl::StatusOr<ToolCall> ParseToolCall(const Json& call, absl::string_view where) {
  // OpenAI nests name/arguments under "function"; the template accepts either shape.
  const Json* function = FindNonNull(call, "function");
  const Json& f = function != nullptr ? *function : call;
  ToolCall out;
  GKA_ASSIGN_OR_RETURN(out.name, internal::GetString(f, "name", "", where));
  if (out.name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, " has no name"));
  const Json* arguments = FindNonNull(f, "arguments");
  if (arguments == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(where, " (", out.name, ") has no arguments"));
  }
  if (arguments->is_string()) {
    out.arguments = arguments->get<std::string>();
  } else {
    out.arguments = arguments->dump();
    out.arguments_format = ToolCall::ArgumentsFormat::kJsonValue;
  }
  return out;
}

}  // namespace

absl::StatusOr<Role> ParseRole(absl::string_view role) {
  if (role == "system") return Role::kSystem;
  if (role == "user") return Role::kUser;
  if (role == "assistant") return Role::kAssistant;
  if (role == "tool") return Role::kTool;
  return absl::InvalidArgumentError(absl::StrCat("unknown message role \"", role,
                                                 "\"; expected system, user, assistant or tool"));
}

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
    case Role::kTool:
      return "tool";
  }
  return "user";
}

ChatTemplate ChatTemplate::Qwen3(bool thinking_switch) {
  return ChatTemplate(Kind::kQwen3, thinking_switch,
                      absl::StrCat("built-in Qwen3 chat template (thinking switch ",
                                   thinking_switch ? "on" : "off", ")"));
}

ChatTemplate ChatTemplate::PlainChatMl() {
  return ChatTemplate(Kind::kChatMl, false, "built-in plain ChatML (no tools, no thinking)");
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTokenizerConfigJson(
    absl::string_view tokenizer_config_json, absl::string_view chat_template_jinja,
    absl::string_view source) {
  GKA_ASSIGN_OR_RETURN(Json config, internal::ParseJson<Json>(tokenizer_config_json, source));
  if (!config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " must hold a JSON object"));
  }
  std::string text(chat_template_jinja);
  if (const Json* t = FindNonNull(config, "chat_template"); t != nullptr) {
    if (t->is_string()) {
      text = t->get<std::string>();
    } else if (t->is_array()) {
      // HF's named templates: [{"name": "default", "template": ...}, {"name": "tool_use", ...}].
      for (const Json& named : *t) {
        const Json* name = FindNonNull(named, "name");
        const Json* body = FindNonNull(named, "template");
        if (name != nullptr && *name == "default" && body != nullptr && body->is_string()) {
          text = body->get<std::string>();
        }
      }
    } else {
      return TypeError(absl::StrCat(source, ": chat_template"), "a string or a list", *t);
    }
  }
  if (text.empty()) {
    ChatTemplate fallback = PlainChatMl();
    fallback.description_ = absl::StrCat(
        source,
        " has no chat_template (nor a chat_template.jinja beside it): using plain ChatML "
        "(no tools, no thinking switch)");
    GKA_LOG(WARNING) << fallback.description_;
    return fallback;
  }
  const bool thinking_switch = absl::StrContains(text, "enable_thinking");
  ChatTemplate chat(Kind::kQwen3, thinking_switch,
                    absl::StrCat("Qwen3 chat template from ", source, " (thinking switch ",
                                 thinking_switch ? "on" : "off", ")"));
  // The rendering is native, so a template of another family would render wrongly: say so.
  for (absl::string_view marker :
       {"<|im_start|>", "<tools>", "<tool_call>", "<tool_response>", "last_query_index"}) {
    if (!absl::StrContains(text, marker)) {
      absl::StrAppend(&chat.description_, "; WARNING: its chat_template lacks \"", marker,
                      "\" and may not be Qwen3's, but is rendered as Qwen3's");
      GKA_LOG(WARNING) << chat.description_;
      break;
    }
  }
  return chat;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTokenizerConfig(absl::string_view path) {
  const bool is_dir = internal::IsDirectory(path);
  const std::string dir = is_dir ? std::string(path) : internal::DirName(path);
  const std::string config_path =
      is_dir ? absl::StrCat(path, "/tokenizer_config.json") : std::string(path);
  GKA_ASSIGN_OR_RETURN(std::string config, internal::ReadFile(config_path));
  std::string jinja;
  if (auto read = internal::ReadFile(absl::StrCat(dir, "/chat_template.jinja")); read.ok()) {
    jinja = *std::move(read);
  }
  return FromTokenizerConfigJson(config, jinja, config_path);
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 const ChatRenderOptions& options) const {
  if (messages.empty()) {
    return absl::InvalidArgumentError("a chat needs at least one message");
  }
  if (kind_ == Kind::kChatMl) {
    if (!options.tools.empty()) {
      return absl::InvalidArgumentError(
          "tools need a chat template; the plain ChatML fallback (no chat_template in "
          "tokenizer_config.json) cannot render them");
    }
    return RenderChatMl(messages, options);
  }

  std::string out;
  const ChatMessage& first = messages.front();
  if (!options.tools.empty()) {
    out.append("<|im_start|>system\n");
    if (first.role == Role::kSystem) absl::StrAppend(&out, first.content, "\n\n");
    absl::StrAppend(&out, kToolsPreamble);
    for (size_t i = 0; i < options.tools.size(); ++i) {
      const std::string what = absl::StrCat("tools[", i, "]");
      GKA_ASSIGN_OR_RETURN(Json tool, ParseJsonValue(options.tools[i], what));
      if (!tool.is_object()) return TypeError(what, "a JSON object", tool);
      absl::StrAppend(&out, "\n", internal::PythonJsonDumps(tool));
    }
    absl::StrAppend(&out, kToolsPostamble);
  } else if (first.role == Role::kSystem) {
    absl::StrAppend(&out, "<|im_start|>system\n", first.content, "<|im_end|>\n");
  }

  // The last user turn that is a real query, not tool output pasted as a user turn; thinking
  // is kept only for assistant turns after it (the current multi-step tool exchange).
  const size_t n = messages.size();
  size_t last_query_index = n - 1;
  for (size_t i = n; i-- > 0;) {
    if (messages[i].role == Role::kUser && !IsToolResponseText(messages[i].content)) {
      last_query_index = i;
      break;
    }
  }

  for (size_t i = 0; i < n; ++i) {
    const ChatMessage& m = messages[i];
    switch (m.role) {
      case Role::kSystem:
        if (i == 0) break;  // rendered above
        [[fallthrough]];
      case Role::kUser:
        absl::StrAppend(&out, "<|im_start|>", RoleName(m.role), "\n", m.content, "<|im_end|>\n");
        break;
      case Role::kAssistant:
        GKA_RETURN_IF_ERROR(AppendAssistant(m, i > last_query_index, i + 1 == n, &out));
        break;
      case Role::kTool:
        // Consecutive tool results share one user turn.
        if (i == 0 || messages[i - 1].role != Role::kTool) out.append("<|im_start|>user");
        absl::StrAppend(&out, "\n<tool_response>\n", m.content, "\n</tool_response>");
        if (i + 1 == n || messages[i + 1].role != Role::kTool) out.append("<|im_end|>\n");
        break;
    }
  }

  if (options.add_generation_prompt) {
    out.append("<|im_start|>assistant\n");
    if (thinking_switch_ && !options.enable_thinking) absl::StrAppend(&out, kEmptyThink);
  }
  return out;
}

absl::StatusOr<std::vector<ChatMessage>> ParseChatMessagesJson(absl::string_view messages_json) {
  GKA_ASSIGN_OR_RETURN(Json messages, internal::ParseJson<Json>(messages_json, "messages"));
  if (!messages.is_array()) return TypeError("messages", "an array", messages);
  std::vector<ChatMessage> out;
  out.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return TypeError(where, "an object", m);
    ChatMessage message;
    GKA_ASSIGN_OR_RETURN(std::string role, internal::GetString(m, "role", "", where));
    GKA_ASSIGN_OR_RETURN(message.role, ParseRole(role));
    GKA_ASSIGN_OR_RETURN(message.content, ParseContent(m, where));
    if (const Json* r = FindNonNull(m, "reasoning_content"); r != nullptr) {
      if (!r->is_string())
        return TypeError(absl::StrCat(where, ".reasoning_content"), "a string", *r);
      message.reasoning_content = r->get<std::string>();
    }
    if (const Json* calls = FindNonNull(m, "tool_calls"); calls != nullptr) {
      if (!calls->is_array())
        return TypeError(absl::StrCat(where, ".tool_calls"), "an array", *calls);
      for (size_t j = 0; j < calls->size(); ++j) {
        GKA_ASSIGN_OR_RETURN(
            ToolCall call, ParseToolCall((*calls)[j], absl::StrCat(where, ".tool_calls[", j, "]")));
        message.tool_calls.push_back(std::move(call));
      }
    }
    out.push_back(std::move(message));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ParseToolsJson(absl::string_view tools_json) {
  GKA_ASSIGN_OR_RETURN(Json tools, internal::ParseJson<Json>(tools_json, "tools"));
  if (!tools.is_array()) return TypeError("tools", "an array", tools);
  std::vector<std::string> out;
  for (size_t i = 0; i < tools.size(); ++i) {
    if (!tools[i].is_object())
      return TypeError(absl::StrCat("tools[", i, "]"), "an object", tools[i]);
    out.push_back(tools[i].dump());
  }
  return out;
}

}  // namespace gka::text
