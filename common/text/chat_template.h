// Chat prompts: OpenAI-style messages -> the ChatML text the model was trained on.
//
// Owns: a native C++ rendering of the Qwen3 chat template (no Jinja engine in C++) that
// produces, byte for byte, what the Jinja chat_template of Qwen3's tokenizer_config.json
// produces under Hugging Face transformers (tested against strings rendered by the real
// template: tools/tokenizer/render_chat_goldens.py). That covers: system/user/assistant/tool
// turns, the generation prompt "<|im_start|>assistant\n", the empty think block
// "<think>\n\n</think>\n\n" when thinking is off, dropping the <think> part of assistant
// turns before the last user query, tool definitions in the system turn (<tools>, each tool
// in transformers' tojson form), assistant tool calls, and tool results as user turns in
// <tool_response>. Also the JSON parsing of OpenAI messages and tools.
// Must not depend on anything above common/base; it does not tokenize (Tokenizer::Encode
// the rendered text).
//
//   GKA_ASSIGN_OR_RETURN(gka::text::ChatTemplate chat,
//                        gka::text::ChatTemplate::FromTokenizerConfig("/models/qwen3"));
//   std::vector<gka::text::ChatMessage> messages = {{.role = gka::text::Role::kUser,
//                                                    .content = "Hello!"}};
//   GKA_ASSIGN_OR_RETURN(std::string prompt, chat.Render(messages));
//   // "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
//
// Thread-safety: a ChatTemplate is immutable; Render may run concurrently.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace gka::text {

enum class Role { kSystem, kUser, kAssistant, kTool };

// "system", "user", "assistant", "tool" -> Role; InvalidArgument naming the accepted roles.
absl::StatusOr<Role> ParseRole(absl::string_view role);
absl::string_view RoleName(Role role);

struct ToolCall {
  // How `arguments` is printed inside <tool_call>.
  enum class ArgumentsFormat {
    // `arguments` is printed as is: OpenAI clients send the arguments as a JSON-encoded
    // string, and the template prints a string argument verbatim.
    kVerbatim,
    // `arguments` is the JSON text of a value (HF-style callers pass a dict); it is printed
    // re-serialized as the template's tojson does (Python json.dumps spacing, key order kept).
    kJsonValue,
  };
  std::string name;
  std::string arguments;
  ArgumentsFormat arguments_format = ArgumentsFormat::kVerbatim;
};

struct ChatMessage {
  Role role = Role::kUser;
  std::string content;
  // Assistant turns only. When set (even to ""), the template uses it as the reasoning and
  // does not look for <think>...</think> in `content`.
  std::optional<std::string> reasoning_content;
  std::vector<ToolCall>
      tool_calls;  // assistant turns only; ignored on others, as the template does
};

struct ChatRenderOptions {
  // End with "<|im_start|>assistant\n" so that the model answers next.
  bool add_generation_prompt = true;
  // Qwen3's switch. false (the default: the Instruct model serves without thinking) appends
  // "<think>\n\n</think>\n\n" after the generation prompt, as enable_thinking=False does in
  // Jinja; true renders as enable_thinking=True or an undefined enable_thinking. Ignored when
  // the template has no such switch.
  bool enable_thinking = false;
  // Tool definitions, each the JSON text of one object as the client sent it (OpenAI:
  // {"type": "function", "function": {...}}). Empty: no tools section.
  std::vector<std::string> tools;
};

class ChatTemplate {
 public:
  enum class Kind {
    kQwen3,   // the Qwen3 template's rendering (tokenizer_config.json has a chat_template)
    kChatMl,  // no chat_template found: plain ChatML turns, no tools, no thinking switch
  };

  // `path` is a tokenizer_config.json file or a directory holding one. The template text is
  // its "chat_template" (a string, or HF's list of {"name", "template"}: "default" is used),
  // else a chat_template.jinja beside it (newer HF checkpoints). With no template at all this
  // still succeeds with Kind::kChatMl and says so in description() and a warning log.
  // NotFound when the file is missing; InvalidArgument when it is not valid JSON.
  static absl::StatusOr<ChatTemplate> FromTokenizerConfig(absl::string_view path);

  // The same from file contents; `chat_template_jinja` is the content of a separate
  // chat_template.jinja, if any. `source` names the input in messages.
  static absl::StatusOr<ChatTemplate> FromTokenizerConfigJson(
      absl::string_view tokenizer_config_json, absl::string_view chat_template_jinja = {},
      absl::string_view source = "tokenizer_config.json");

  // The built-in renderings, without a file.
  static ChatTemplate Qwen3(bool thinking_switch = true);
  static ChatTemplate PlainChatMl();

  // The prompt text for `messages` (at least one). InvalidArgument when messages is empty,
  // when a tool definition or JSON-valued tool-call arguments are not valid JSON (a tool must
  // be an object), or when tools / tool calls are given to a kChatMl template.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     const ChatRenderOptions& options = {}) const;

  Kind kind() const { return kind_; }
  // Whether the template reads enable_thinking (Qwen3: yes; Qwen3-2507 Instruct: no).
  bool has_thinking_switch() const { return thinking_switch_; }
  // One line for logs: where the template came from and how it is rendered.
  const std::string& description() const { return description_; }

 private:
  ChatTemplate(Kind kind, bool thinking_switch, std::string description)
      : kind_(kind), thinking_switch_(thinking_switch), description_(std::move(description)) {}

  Kind kind_;
  bool thinking_switch_;
  std::string description_;
};

// OpenAI chat "messages" (a JSON array) -> ChatMessage. Accepts "content" as a string, null
// (empty) or an array of {"type": "text", "text": ...} parts (concatenated);
// "reasoning_content"; "tool_calls" as [{"function": {"name", "arguments"}}] or
// [{"name", "arguments"}], where a string "arguments" is kVerbatim and any other JSON value
// is kJsonValue. Other keys (name, tool_call_id, ...) are ignored. InvalidArgument naming the
// offending element for anything else.
absl::StatusOr<std::vector<ChatMessage>> ParseChatMessagesJson(absl::string_view messages_json);

// OpenAI "tools" (a JSON array of objects) -> the per-tool JSON texts ChatRenderOptions::tools
// takes. InvalidArgument when it is not an array of objects.
absl::StatusOr<std::vector<std::string>> ParseToolsJson(absl::string_view tools_json);

}  // namespace gka::text
