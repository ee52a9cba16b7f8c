#include "common/text/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/text/python_json.h"
#include "common/text/test_util.h"

namespace gka::text {
namespace {

using ::testing::HasSubstr;
using OrderedJson = nlohmann::ordered_json;

// The real Qwen3 template; std::nullopt (and a test failure) when it cannot be read.
std::optional<ChatTemplate> RealQwen3Template() {
  if (::testing::AssertionResult installed = Qwen3TokenizerInstalled(); !installed) {
    ADD_FAILURE() << installed.message();
    return std::nullopt;
  }
  auto chat = ChatTemplate::FromTokenizerConfig(Qwen3TokenizerDir());
  EXPECT_TRUE(chat.ok()) << chat.status();
  if (!chat.ok()) return std::nullopt;
  return *std::move(chat);
}

TEST(ChatTemplateTest, RealConfigIsQwen3WithThinkingSwitch) {
  std::optional<ChatTemplate> chat = RealQwen3Template();
  ASSERT_TRUE(chat.has_value());
  EXPECT_EQ(chat->kind(), ChatTemplate::Kind::kQwen3);
  EXPECT_TRUE(chat->has_thinking_switch());
  EXPECT_THAT(chat->description(), HasSubstr("tokenizer_config.json"));
  EXPECT_THAT(chat->description(), ::testing::Not(HasSubstr("WARNING")));
}

// Every case was rendered by the real Jinja template (tools/tokenizer/render_chat_goldens.py).
TEST(ChatTemplateTest, MatchesJinjaGoldens) {
  const std::optional<ChatTemplate> chat = RealQwen3Template();
  ASSERT_TRUE(chat.has_value());
  const OrderedJson goldens = OrderedJson::parse(ReadFileOrDie(TestDataPath("chat_golden.json")));
  ASSERT_GE(goldens.size(), 15u);
  for (const OrderedJson& g : goldens) {
    SCOPED_TRACE(g["name"].get<std::string>());
    auto messages = ParseChatMessagesJson(g["messages"].dump());
    ASSERT_TRUE(messages.ok()) << messages.status();
    ChatRenderOptions options;
    options.add_generation_prompt = g["add_generation_prompt"].get<bool>();
    // Jinja's undefined enable_thinking renders like true.
    options.enable_thinking = g["enable_thinking"].is_null() || g["enable_thinking"].get<bool>();
    if (!g["tools"].is_null()) {
      auto tools = ParseToolsJson(g["tools"].dump());
      ASSERT_TRUE(tools.ok()) << tools.status();
      options.tools = *tools;
    }
    auto rendered = chat->Render(*messages, options);
    ASSERT_TRUE(rendered.ok()) << rendered.status();
    EXPECT_EQ(*rendered, g["expected"].get<std::string>());
  }
}

TEST(ChatTemplateTest, DefaultsServeTheInstructModelWithoutThinking) {
  const ChatTemplate chat = ChatTemplate::Qwen3();
  std::vector<ChatMessage> messages = {{.role = Role::kUser, .content = "Hello!"}};
  EXPECT_EQ(chat.Render(messages).value(),
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  // A template without the switch never adds the empty think block.
  EXPECT_EQ(ChatTemplate::Qwen3(/*thinking_switch=*/false).Render(messages).value(),
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, ConfigWithoutTemplateFallsBackToPlainChatMl) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/no_template");
  ASSERT_EQ(system(absl::StrCat("mkdir -p ", dir).c_str()), 0);
  WriteTempFile("no_template/tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  auto chat = ChatTemplate::FromTokenizerConfig(dir);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->kind(), ChatTemplate::Kind::kChatMl);
  EXPECT_THAT(chat->description(), HasSubstr("no chat_template"));
  std::vector<ChatMessage> messages = {{.role = Role::kSystem, .content = "S"},
                                       {.role = Role::kUser, .content = "U"}};
  EXPECT_EQ(chat->Render(messages).value(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
            "<|im_start|>assistant\n");
  ChatRenderOptions with_tools;
  with_tools.tools = {R"({"type": "function"})"};
  EXPECT_EQ(chat->Render(messages, with_tools).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, TemplateFromSeparateJinjaFileAndNamedList) {
  auto from_jinja = ChatTemplate::FromTokenizerConfigJson("{}", "{{ '<|im_start|>' }} <tools>");
  ASSERT_TRUE(from_jinja.ok());
  EXPECT_EQ(from_jinja->kind(), ChatTemplate::Kind::kQwen3);
  EXPECT_FALSE(from_jinja->has_thinking_switch());
  EXPECT_THAT(from_jinja->description(), HasSubstr("WARNING"));  // not a full Qwen3 template

  auto named = ChatTemplate::FromTokenizerConfigJson(
      R"({"chat_template": [{"name": "tool_use", "template": "x"},
                            {"name": "default", "template": "{% if enable_thinking %}{% endif %}"}]})");
  ASSERT_TRUE(named.ok());
  EXPECT_TRUE(named->has_thinking_switch());
}

TEST(ChatTemplateTest, BadInputIsInvalidArgument) {
  const ChatTemplate chat = ChatTemplate::Qwen3();
  EXPECT_EQ(chat.Render({}).status().code(), absl::StatusCode::kInvalidArgument);

  std::vector<ChatMessage> messages = {{.role = Role::kUser, .content = "hi"}};
  ChatRenderOptions bad_tool;
  bad_tool.tools = {"{not json"};
  auto r = chat.Render(messages, bad_tool);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("tools[0]"));
  bad_tool.tools = {"[1, 2]"};
  EXPECT_THAT(chat.Render(messages, bad_tool).status().message(), HasSubstr("a JSON object"));

  messages.push_back({.role = Role::kAssistant,
                      .tool_calls = {{.name = "f",
                                      .arguments = "{oops",
                                      .arguments_format = ToolCall::ArgumentsFormat::kJsonValue}}});
  EXPECT_EQ(chat.Render(messages).status().code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(ChatTemplate::FromTokenizerConfigJson("{oops").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChatTemplate::FromTokenizerConfig("/nonexistent/tokenizer_config.json").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ChatTemplateTest, ParsesOpenAiMessages) {
  auto messages = ParseChatMessagesJson(R"([
    {"role": "system", "content": null},
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "assistant", "content": "", "reasoning_content": "r",
     "tool_calls": [{"id": "1", "type": "function",
                     "function": {"name": "f", "arguments": "{\"x\":1}"}},
                    {"name": "g", "arguments": {"y": [1, 2]}}]},
    {"role": "tool", "tool_call_id": "1", "content": "ok"}])");
  ASSERT_TRUE(messages.ok()) << messages.status();
  ASSERT_EQ(messages->size(), 4u);
  EXPECT_EQ((*messages)[0].content, "");
  EXPECT_EQ((*messages)[1].content, "ab");
  EXPECT_EQ((*messages)[2].reasoning_content, "r");
  ASSERT_EQ((*messages)[2].tool_calls.size(), 2u);
  EXPECT_EQ((*messages)[2].tool_calls[0].arguments, "{\"x\":1}");
  EXPECT_EQ((*messages)[2].tool_calls[0].arguments_format, ToolCall::ArgumentsFormat::kVerbatim);
  EXPECT_EQ((*messages)[2].tool_calls[1].name, "g");
  EXPECT_EQ((*messages)[2].tool_calls[1].arguments_format, ToolCall::ArgumentsFormat::kJsonValue);
  EXPECT_EQ((*messages)[3].role, Role::kTool);
}

TEST(ChatTemplateTest, MalformedMessagesNameTheElement) {
  struct Case {
    const char* json;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"role": "user"})", "messages must be an array"},
           {R"([{"role": "developer", "content": "x"}])", "unknown message role \"developer\""},
           {R"([{"content": "x"}])", "unknown message role \"\""},
           {R"([{"role": "user", "content": 5}])", "messages[0].content"},
           {R"([{"role": "user", "content": [{"type": "image_url"}]}])", "only text"},
           {R"([{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}])",
            "has no arguments"},
           {R"([{"role": "assistant", "tool_calls": {}}])", "tool_calls must be an array"},
           {R"([1])", "messages[0] must be an object"},
           {"[", "not valid JSON"}}) {
    auto messages = ParseChatMessagesJson(c.json);
    ASSERT_FALSE(messages.ok()) << c.json;
    EXPECT_EQ(messages.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(messages.status().message(), HasSubstr(c.message)) << c.json;
  }
  EXPECT_THAT(ParseToolsJson(R"([{"type": "function"}, 3])").status().message(),
              HasSubstr("tools[1] must be an object"));
}

TEST(PythonJsonTest, FloatsFollowPythonRepr) {
  using internal::PythonFloatRepr;
  EXPECT_EQ(PythonFloatRepr(0.0), "0.0");
  EXPECT_EQ(PythonFloatRepr(-0.0), "-0.0");
  EXPECT_EQ(PythonFloatRepr(3.0), "3.0");
  EXPECT_EQ(PythonFloatRepr(0.1), "0.1");
  EXPECT_EQ(PythonFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(PythonFloatRepr(0.00001), "1e-05");
  EXPECT_EQ(PythonFloatRepr(1.5e-7), "1.5e-07");
  EXPECT_EQ(PythonFloatRepr(1e15), "1000000000000000.0");
  EXPECT_EQ(PythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(PythonFloatRepr(123456.789), "123456.789");
  EXPECT_EQ(PythonFloatRepr(-2.5e300), "-2.5e+300");
  EXPECT_EQ(PythonFloatRepr(1.0 / 3), "0.3333333333333333");
}

TEST(PythonJsonTest, DumpsLikeJsonDumps) {
  const auto v = OrderedJson::parse(
      R"({"z": 1, "a": [true, null, 2.50, "q\"\\\n\t\u0001\u007f é"], "e": {}, "l": []})");
  EXPECT_EQ(internal::PythonJsonDumps(v),
            "{\"z\": 1, \"a\": [true, null, 2.5, \"q\\\"\\\\\\n\\t\\u0001\x7f é\"], \"e\": {}, "
            "\"l\": []}");
}

}  // namespace
}  // namespace gka::text
