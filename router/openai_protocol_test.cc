#include "router/openai_protocol.h"

#include <gtest/gtest.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gka::router::openai {
namespace {

namespace v1 = ::gka::serving::v1;
using Json = nlohmann::json;

ParsedRequest ParseOk(Endpoint endpoint, const std::string& body) {
  absl::StatusOr<ParsedRequest> r = ParseRequest(endpoint, body);
  EXPECT_TRUE(r.ok()) << r.status() << " for " << body;
  return r.ok() ? *std::move(r) : ParsedRequest{};
}

// The 4xx error a body gets, as the client would see it.
ApiError ParseError(Endpoint endpoint, absl::string_view body) {
  absl::StatusOr<ParsedRequest> r = ParseRequest(endpoint, body);
  EXPECT_FALSE(r.ok()) << "accepted: " << body;
  return r.ok() ? ApiError{.http_status = 200} : ErrorFromStatus(r.status());
}

const std::unique_ptr<text::Tokenizer>& Qwen3() {
  static const auto* tokenizer = [] {
    auto t = text::Tokenizer::FromFile(GKA_QWEN3_TOKENIZER_DIR);
    return new std::unique_ptr<text::Tokenizer>(t.ok() ? std::move(*t) : nullptr);
  }();
  return *tokenizer;
}

v1::GenerateResponse Chunk(const std::string& text, std::vector<int32_t> ids, uint32_t prompt,
                           uint32_t completion) {
  v1::GenerateResponse r;
  v1::Chunk* c = r.mutable_chunk();
  c->set_text(text);
  for (int32_t id : ids) c->add_token_ids(id);
  c->mutable_usage()->set_prompt_tokens(prompt);
  c->mutable_usage()->set_completion_tokens(completion);
  return r;
}

v1::GenerateResponse Final(v1::FinishReason reason, uint32_t prompt, uint32_t completion) {
  v1::GenerateResponse r;
  r.mutable_final()->set_finish_reason(reason);
  r.mutable_final()->mutable_usage()->set_prompt_tokens(prompt);
  r.mutable_final()->mutable_usage()->set_completion_tokens(completion);
  r.mutable_final()->set_tier("standard");
  return r;
}

// The JSON payloads of "data: ..." events, [DONE] as the string "[DONE]".
std::vector<Json> Events(const std::string& sse) {
  std::vector<Json> out;
  for (absl::string_view event : absl::StrSplit(sse, "\n\n", absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(event, "data: ")) << event;
    const absl::string_view data = event.substr(6);
    out.push_back(data == "[DONE]" ? Json("[DONE]") : Json::parse(data));
  }
  return out;
}

TEST(OpenAiParseTest, ChatFieldsBecomeOneGenerateRequest) {
  const ParsedRequest r = ParseOk(Endpoint::kChatCompletions, R"({
    "model": "m", "messages": [{"role": "developer", "content": "be brief"},
                               {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": -1,
    "min_p": 0.1, "frequency_penalty": 0.2, "presence_penalty": -0.3, "repetition_penalty": 1.1,
    "seed": 42, "stop": "END", "n": 3, "logprobs": true, "top_logprobs": 2,
    "service_tier": "batch", "user": "u-1", "stream": true,
    "stream_options": {"include_usage": true}, "response_format": {"type": "text"},
    "chat_template_kwargs": {"enable_thinking": false}, "ignore_eos": true,
    "some_future_field": {"ignored": true}})");
  EXPECT_EQ(r.model, "m");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.num_choices(), 3);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 2);
  EXPECT_FALSE(r.parse_tool_calls);
  ASSERT_EQ(r.prompts.size(), 1u);
  const v1::GenerateRequest& g = r.prompts[0];
  EXPECT_EQ(g.model(), "m");
  EXPECT_EQ(g.tier(), "batch");
  ASSERT_EQ(g.chat().messages_size(), 2);
  EXPECT_EQ(g.chat().messages(0).role(), "system");  // developer is the system turn
  EXPECT_EQ(g.chat().messages(1).content(), "hi");
  EXPECT_FALSE(g.chat().enable_thinking());
  EXPECT_TRUE(g.chat().has_enable_thinking());
  const v1::SamplingParams& s = g.sampling();
  EXPECT_EQ(s.max_tokens(), 7);  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_TRUE(s.has_top_k());
  EXPECT_EQ(s.top_k(), 0);  // -1 means no cut
  EXPECT_FLOAT_EQ(s.min_p(), 0.1f);
  EXPECT_FLOAT_EQ(s.frequency_penalty(), 0.2f);
  EXPECT_FLOAT_EQ(s.presence_penalty(), -0.3f);
  EXPECT_FLOAT_EQ(s.repetition_penalty(), 1.1f);
  EXPECT_EQ(s.seed(), 42u);
  ASSERT_EQ(s.stop_size(), 1);
  EXPECT_EQ(s.stop(0), "END");
  EXPECT_TRUE(s.logprobs());
  EXPECT_EQ(s.top_logprobs(), 2);
  EXPECT_TRUE(s.ignore_eos());
}

TEST(OpenAiParseTest, UnsetAndNullFieldsStayUnset) {
  const ParsedRequest r = ParseOk(Endpoint::kChatCompletions,
                                  R"({"messages": [{"role": "user", "content": "hi"}],
                                      "temperature": null, "stop": null, "n": null,
                                      "service_tier": "auto", "tools": null})");
  const v1::GenerateRequest& g = r.prompts[0];
  EXPECT_FALSE(g.sampling().has_temperature());
  EXPECT_FALSE(g.sampling().has_max_tokens());
  EXPECT_EQ(g.sampling().stop_size(), 0);
  EXPECT_EQ(g.tier(), "");  // auto: the default tier
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(g.chat().has_enable_thinking());
}

TEST(OpenAiParseTest, ToolsAndToolResultsReachTheChat) {
  const ParsedRequest r = ParseOk(Endpoint::kChatCompletions, R"({
    "messages": [
      {"role": "user", "content": "weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "18C"}],
    "tools": [{"type": "function", "function": {"name": "get_weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "tool_choice": "auto"})");
  EXPECT_TRUE(r.parse_tool_calls);
  const v1::ChatMessages& chat = r.prompts[0].chat();
  ASSERT_EQ(chat.messages_size(), 3);
  ASSERT_EQ(chat.messages(1).tool_calls_size(), 1);
  EXPECT_EQ(chat.messages(1).tool_calls(0).function().name(), "get_weather");
  EXPECT_EQ(chat.messages(1).tool_calls(0).function().arguments(), R"({"city": "Paris"})");
  EXPECT_EQ(chat.messages(2).role(), "tool");
  EXPECT_EQ(chat.messages(2).tool_call_id(), "call_1");
  EXPECT_EQ(Json::parse(chat.tools_json())[0]["function"]["name"], "get_weather");

  // tool_choice none: the model is not told about the tools, and nothing is parsed.
  const ParsedRequest none = ParseOk(Endpoint::kChatCompletions, R"({
    "messages": [{"role": "user", "content": "hi"}], "tool_choice": "none",
    "tools": [{"type": "function", "function": {"name": "f"}}]})");
  EXPECT_FALSE(none.parse_tool_calls);
  EXPECT_EQ(none.prompts[0].chat().tools_json(), "");
}

TEST(OpenAiParseTest, CompletionPrompts) {
  ParsedRequest text = ParseOk(Endpoint::kCompletions, R"({"prompt": "Once upon", "echo": true})");
  ASSERT_EQ(text.prompts.size(), 1u);
  EXPECT_EQ(text.prompts[0].text(), "Once upon");
  EXPECT_TRUE(text.echo);

  ParsedRequest ids = ParseOk(Endpoint::kCompletions, R"({"prompt": [1, 2, 3.0], "logprobs": 3})");
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_EQ(ids.prompts[0].token_ids().ids_size(), 3);
  EXPECT_TRUE(ids.logprobs);
  EXPECT_EQ(ids.top_logprobs, 3);
  EXPECT_TRUE(ids.prompts[0].sampling().logprobs());

  ParsedRequest batch =
      ParseOk(Endpoint::kCompletions, R"({"prompt": ["a", [5, 6]], "n": 2, "seed": 7})");
  ASSERT_EQ(batch.prompts.size(), 2u);
  EXPECT_EQ(batch.num_choices(), 4);
  // Choices are prompt-major; seeded choices of one prompt differ, reproducibly.
  const v1::GenerateRequest c0 = RequestForChoice(batch, "cmpl-x", 0);
  const v1::GenerateRequest c1 = RequestForChoice(batch, "cmpl-x", 1);
  const v1::GenerateRequest c3 = RequestForChoice(batch, "cmpl-x", 3);
  EXPECT_EQ(c0.text(), "a");
  EXPECT_EQ(c3.token_ids().ids(1), 6);
  EXPECT_EQ(c0.sampling().seed(), 7u);
  EXPECT_EQ(c1.sampling().seed(), 8u);
  EXPECT_EQ(c3.sampling().seed(), 8u);
  EXPECT_EQ(c1.request_id(), "cmpl-x-1");
  // One choice: the request id is the response id, so a gRPC Abort finds it by that.
  EXPECT_EQ(RequestForChoice(text, "cmpl-y", 0).request_id(), "cmpl-y");
}

TEST(OpenAiParseTest, MalformedBodiesAre400sNamingTheParameter) {
  struct Case {
    Endpoint endpoint;
    std::string body;
    std::string param;  // "" when the body as a whole is bad
  };
  const std::string user = R"("messages": [{"role": "user", "content": "hi"}])";
  const Case cases[] = {
      {Endpoint::kChatCompletions, "{not json", ""},
      {Endpoint::kChatCompletions, "[1, 2]", ""},
      {Endpoint::kChatCompletions, "", ""},
      {Endpoint::kChatCompletions,
       "{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}", ""},
      {Endpoint::kChatCompletions, std::string(10000, '[') + std::string(10000, ']'), ""},
      {Endpoint::kChatCompletions, R"({"messages": "hi"})", "messages"},
      {Endpoint::kChatCompletions, R"({"messages": []})", "messages"},
      {Endpoint::kChatCompletions, R"({"model": 5, )" + user + "}", "model"},
      {Endpoint::kChatCompletions, R"({"temperature": "hot", )" + user + "}", "temperature"},
      {Endpoint::kChatCompletions, R"({"max_tokens": 1.5, )" + user + "}", "max_tokens"},
      {Endpoint::kChatCompletions, R"({"max_tokens": 99999999999999, )" + user + "}", "max_tokens"},
      {Endpoint::kChatCompletions, R"({"max_tokens": 1e300, )" + user + "}", "max_tokens"},
      {Endpoint::kChatCompletions, R"({"n": 9, )" + user + "}", "n"},
      {Endpoint::kChatCompletions, R"({"n": 0, )" + user + "}", "n"},
      {Endpoint::kChatCompletions, R"({"stop": [1], )" + user + "}", "stop[0]"},
      {Endpoint::kChatCompletions, R"({"stream": "yes", )" + user + "}", "stream"},
      {Endpoint::kChatCompletions, R"({"stream_options": {"include_usage": true}, )" + user + "}",
       "stream_options"},
      {Endpoint::kChatCompletions, R"({"logprobs": true, "top_logprobs": 21, )" + user + "}",
       "top_logprobs"},
      {Endpoint::kChatCompletions, R"({"top_logprobs": 2, )" + user + "}", "top_logprobs"},
      {Endpoint::kChatCompletions, R"({"response_format": {"type": "json_object"}, )" + user + "}",
       "response_format"},
      {Endpoint::kChatCompletions, R"({"tool_choice": "required", )" + user + "}", "tool_choice"},
      {Endpoint::kChatCompletions, R"({"logit_bias": {"5": 10}, )" + user + "}", "logit_bias"},
      {Endpoint::kChatCompletions, R"({"tools": {}, )" + user + "}", "tools"},
      {Endpoint::kChatCompletions, R"({"messages": [{"role": "wizard", "content": "x"}]})", ""},
      {Endpoint::kCompletions, R"({"prompt": 5})", "prompt"},
      {Endpoint::kCompletions, R"({"prompt": []})", "prompt"},
      {Endpoint::kCompletions, R"({"prompt": [1, -2]})", "prompt[1]"},
      {Endpoint::kCompletions, R"({"prompt": [1, "a"]})", "prompt[1]"},
      {Endpoint::kCompletions, R"({})", "prompt"},
      {Endpoint::kCompletions, R"({"prompt": "a", "logprobs": 21})", "logprobs"},
      {Endpoint::kCompletions, R"({"prompt": "a", "suffix": "z"})", "suffix"},
      {Endpoint::kCompletions, R"({"prompt": "a", "best_of": 3})", "best_of"},
  };
  for (const Case& c : cases) {
    const ApiError e = ParseError(c.endpoint, c.body);
    EXPECT_EQ(e.http_status, 400) << c.body.substr(0, 80);
    EXPECT_EQ(e.type, "invalid_request_error") << c.body.substr(0, 80);
    EXPECT_FALSE(e.message.empty());
    if (!c.param.empty()) EXPECT_EQ(e.param, c.param) << e.message;
    // The error body itself must be valid JSON even when the input was not UTF-8.
    const Json body = Json::parse(ErrorJson(e));
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  }
}

TEST(OpenAiErrorTest, StatusCodesMapToHttp) {
  EXPECT_EQ(ErrorFromStatus(absl::InvalidArgumentError("x: bad")).http_status, 400);
  EXPECT_EQ(ErrorFromStatus(absl::FailedPreconditionError("no tokenizer")).http_status, 400);
  EXPECT_EQ(ErrorFromStatus(absl::UnauthenticatedError("key")).http_status, 401);
  EXPECT_EQ(ErrorFromStatus(absl::NotFoundError("x")).http_status, 404);
  const ApiError busy = ErrorFromStatus(absl::ResourceExhaustedError("full"));
  EXPECT_EQ(busy.http_status, 429);
  EXPECT_EQ(busy.code, "rate_limit_exceeded");
  EXPECT_EQ(ErrorFromStatus(absl::UnavailableError("no workers")).http_status, 503);
  EXPECT_EQ(ErrorFromStatus(absl::AbortedError("decode died")).http_status, 503);
  const ApiError internal = ErrorFromStatus(absl::InternalError("sampling.x: oops"));
  EXPECT_EQ(internal.http_status, 500);
  EXPECT_EQ(internal.type, "server_error");
  EXPECT_EQ(internal.param, "");  // only client mistakes name a parameter
}

TEST(OpenAiErrorTest, CoreFieldNamesBecomeOpenAiParameters) {
  const ApiError e = ErrorFromStatus(
      absl::InvalidArgumentError("sampling.top_p: 1.5 is outside (0, 1]; tier: unknown tier 'x'; "
                                 "chat.messages[0].content: invalid UTF-8 at byte 3"));
  EXPECT_EQ(e.param, "top_p");
  EXPECT_EQ(e.message,
            "top_p: 1.5 is outside (0, 1]; service_tier: unknown tier 'x'; "
            "messages[0].content: invalid UTF-8 at byte 3");
  EXPECT_EQ(ErrorFromStatus(absl::InvalidArgumentError("text: the prompt is empty")).param,
            "prompt");
  EXPECT_EQ(ErrorFromStatus(absl::InvalidArgumentError("token_ids.ids[2]: 9 is outside")).param,
            "prompt[2]");
  // A sentence names no parameter.
  EXPECT_EQ(ErrorFromStatus(absl::InvalidArgumentError("the request body is not JSON")).param, "");
  const Json body = Json::parse(ErrorJson(e));
  EXPECT_EQ(body["error"]["param"], "top_p");
  EXPECT_TRUE(body["error"]["code"].is_null());
}

TEST(OpenAiToolCallTest, ParsesQwen3ToolCalls) {
  const ParsedToolCalls one = ParseToolCalls(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Paris\"}}\n</tool_call>");
  EXPECT_EQ(one.content, "Let me check.");
  ASSERT_EQ(one.calls.size(), 1u);
  EXPECT_EQ(one.calls[0].name, "get_weather");
  EXPECT_EQ(Json::parse(one.calls[0].arguments), Json::parse(R"({"city": "Paris"})"));
  EXPECT_TRUE(absl::StartsWith(one.calls[0].id, "call_"));

  const ParsedToolCalls two = ParseToolCalls(
      "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n"
      "{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}");  // the last one unterminated
  EXPECT_EQ(two.content, "");
  ASSERT_EQ(two.calls.size(), 2u);
  EXPECT_EQ(two.calls[1].name, "b");
  EXPECT_EQ(two.calls[1].arguments, R"({"x": 1})");
  EXPECT_NE(two.calls[0].id, two.calls[1].id);

  // Not JSON, or no name: the whole output is content.
  const std::string broken = "<tool_call>\n{\"name\": \"a\", \"arguments\": {</tool_call>";
  EXPECT_TRUE(ParseToolCalls(broken).calls.empty());
  EXPECT_EQ(ParseToolCalls(broken).content, broken);
  EXPECT_TRUE(ParseToolCalls("<tool_call>{\"arguments\": {}}</tool_call>").calls.empty());
  EXPECT_TRUE(ParseToolCalls("<tool_call>" + std::string(500, '[') + "</tool_call>").calls.empty());
  EXPECT_EQ(ParseToolCalls("plain answer").content, "plain answer");
}

TEST(OpenAiToolCallTest, StreamFilterHoldsBackOnlyWhatMayBeACall) {
  ToolCallStreamFilter plain;
  EXPECT_EQ(plain.Feed("Hello <b>wor"), "Hello <b>wor");
  EXPECT_EQ(plain.Feed("ld <tool"), "ld ");  // could become <tool_call>
  EXPECT_EQ(plain.Feed("s> are"), "<tools> are");
  EXPECT_EQ(plain.Feed(" <"), " ");
  ParsedToolCalls end = plain.Finish();
  EXPECT_EQ(end.content, "<");
  EXPECT_TRUE(end.calls.empty());

  ToolCallStreamFilter calls;
  EXPECT_EQ(calls.Feed("Sure.\n<tool_"), "Sure.\n");
  EXPECT_EQ(calls.Feed("call>\n{\"name\": \"f\", "), "");
  EXPECT_EQ(calls.Feed("\"arguments\": {\"a\": 1}}\n</tool_call>"), "");
  end = calls.Finish();
  EXPECT_EQ(end.content, "");
  ASSERT_EQ(end.calls.size(), 1u);
  EXPECT_EQ(end.calls[0].name, "f");

  ToolCallStreamFilter bad;
  EXPECT_EQ(bad.Feed("<tool_call>not json"), "");
  EXPECT_EQ(bad.Finish().content, "<tool_call>not json");  // given back as text
}

TEST(OpenAiResponseTest, ChatCompletionWithToolCallsAndUsage) {
  const ParsedRequest r = ParseOk(Endpoint::kChatCompletions, R"({
    "messages": [{"role": "user", "content": "hi"}], "n": 2,
    "tools": [{"type": "function", "function": {"name": "f"}}]})");
  std::vector<ChoiceResult> choices(2);
  Accumulate(Chunk("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n", {1, 2}, 10, 2),
             &choices[0]);
  Accumulate(Chunk("</tool_call>", {3}, 10, 3), &choices[0]);
  Accumulate(Final(v1::FINISH_REASON_STOP, 10, 3), &choices[0]);
  Accumulate(Chunk("No tools needed.", {4, 5}, 10, 2), &choices[1]);
  Accumulate(Final(v1::FINISH_REASON_LENGTH, 10, 2), &choices[1]);
  const Json body =
      Json::parse(ResponseJson(r, {.id = "chatcmpl-1", .created = 123, .model = "m"}, choices));
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["id"], "chatcmpl-1");
  EXPECT_EQ(body["created"], 123);
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["service_tier"], "standard");
  const Json& c0 = body["choices"][0];
  EXPECT_EQ(c0["finish_reason"], "tool_calls");
  EXPECT_TRUE(c0["message"]["content"].is_null());
  EXPECT_EQ(c0["message"]["tool_calls"][0]["type"], "function");
  EXPECT_EQ(c0["message"]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(c0["message"]["tool_calls"][0]["function"]["arguments"], R"({"a":1})");
  const Json& c1 = body["choices"][1];
  EXPECT_EQ(c1["index"], 1);
  EXPECT_EQ(c1["message"]["content"], "No tools needed.");
  EXPECT_EQ(c1["finish_reason"], "length");
  EXPECT_FALSE(c1["message"].contains("tool_calls"));
  // The prompt is counted once for the n choices that share it.
  EXPECT_EQ(body["usage"], Json::parse(
                               R"({"prompt_tokens": 10, "completion_tokens": 5,
                                   "total_tokens": 15})"));
}

TEST(OpenAiResponseTest, LogprobsCarryTheSampledTokenAndItsAlternatives) {
  if (Qwen3() == nullptr) GTEST_SKIP() << "no Qwen3 tokenizer at " << GKA_QWEN3_TOKENIZER_DIR;
  const int32_t hello = Qwen3()->Encode("Hello").value()[0];
  v1::GenerateResponse chunk = Chunk("Hello", {hello}, 3, 1);
  v1::TokenLogprob* lp = chunk.mutable_chunk()->add_logprobs();
  lp->set_token_id(hello);
  lp->set_logprob(-0.25f);
  const ResponseMeta meta{.id = "x", .created = 1, .model = "m", .tokenizer = Qwen3().get()};

  ParsedRequest chat = ParseOk(Endpoint::kChatCompletions,
                               R"({"messages": [{"role": "user", "content": "hi"}],
                                   "logprobs": true, "top_logprobs": 5})");
  std::vector<ChoiceResult> choices(1);
  Accumulate(chunk, &choices[0]);
  Accumulate(Final(v1::FINISH_REASON_STOP, 3, 1), &choices[0]);
  Json body = Json::parse(ResponseJson(chat, meta, choices));
  const Json& entry = body["choices"][0]["logprobs"]["content"][0];
  EXPECT_EQ(entry["token"], "Hello");
  EXPECT_FLOAT_EQ(entry["logprob"].get<float>(), -0.25f);
  EXPECT_EQ(entry["bytes"], Json::parse("[72, 101, 108, 108, 111]"));
  EXPECT_TRUE(entry["top_logprobs"].empty());  // the worker listed no alternatives

  // Alternatives are passed through in order; -inf becomes -9999.
  const int32_t world = Qwen3()->Encode(" world").value()[0];
  v1::TopLogprob* first = lp->add_top();
  first->set_token_id(world);
  first->set_logprob(-0.125f);
  choices.assign(1, ChoiceResult{});
  Accumulate(chunk, &choices[0]);
  Accumulate(Final(v1::FINISH_REASON_STOP, 3, 1), &choices[0]);
  body = Json::parse(ResponseJson(chat, meta, choices));
  const Json& tops = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"];
  ASSERT_EQ(tops.size(), 1u);
  EXPECT_EQ(tops[0]["token"], " world");
  EXPECT_FLOAT_EQ(tops[0]["logprob"].get<float>(), -0.125f);
  EXPECT_EQ(tops[0]["bytes"], Json::parse("[32, 119, 111, 114, 108, 100]"));
  lp->clear_top();
  v1::TopLogprob* top = lp->add_top();
  top->set_token_id(hello);
  top->set_logprob(-std::numeric_limits<float>::infinity());
  ParsedRequest completion = ParseOk(Endpoint::kCompletions, R"({"prompt": "x", "logprobs": 1})");
  std::vector<ChoiceResult> c2(1);
  Accumulate(chunk, &c2[0]);
  Accumulate(Final(v1::FINISH_REASON_LENGTH, 3, 1), &c2[0]);
  body = Json::parse(ResponseJson(completion, meta, c2));
  const Json& logprobs = body["choices"][0]["logprobs"];
  EXPECT_EQ(logprobs["tokens"], Json::parse(R"(["Hello"])"));
  EXPECT_FLOAT_EQ(logprobs["token_logprobs"][0].get<float>(), -0.25f);
  EXPECT_FLOAT_EQ(logprobs["top_logprobs"][0]["Hello"].get<float>(), -9999.0f);
  EXPECT_EQ(logprobs["text_offset"], Json::parse("[0]"));
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], "Hello");

  // vLLM's return_tokens_as_token_ids spells every token by id, in both shapes.
  completion = ParseOk(Endpoint::kCompletions,
                       R"({"prompt": "x", "logprobs": 1, "return_tokens_as_token_ids": true})");
  body = Json::parse(ResponseJson(completion, meta, c2));
  const std::string id = absl::StrCat("token_id:", hello);
  EXPECT_EQ(body["choices"][0]["logprobs"]["tokens"][0], id);
  EXPECT_TRUE(body["choices"][0]["logprobs"]["top_logprobs"][0].contains(id));
  chat = ParseOk(Endpoint::kChatCompletions,
                 R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": true,
                     "top_logprobs": 1, "return_tokens_as_token_ids": true})");
  body = Json::parse(ResponseJson(chat, meta, c2));
  EXPECT_EQ(body["choices"][0]["logprobs"]["content"][0]["token"], id);
  EXPECT_EQ(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["token"], id);
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello");  // the text is unchanged
}

// ---- reasoning_content ------------------------------------------------------------------

TEST(OpenAiReasoningTest, SplitsAtTheThinkTagsAsVllmsQwen3Parser) {
  SplitOutput s = SplitReasoning("<think>\nLet me see.\n</think>\n\nIt is 4.");
  ASSERT_TRUE(s.reasoning.has_value());
  EXPECT_EQ(*s.reasoning, "\nLet me see.\n");
  EXPECT_EQ(s.content, "\n\nIt is 4.");
  s = SplitReasoning("No thinking here, not even </think>.");
  EXPECT_FALSE(s.reasoning.has_value());
  EXPECT_EQ(s.content, "No thinking here, not even </think>.");
  s = SplitReasoning("<think>cut off by max_tokens");  // an unfinished block is reasoning
  EXPECT_EQ(s.reasoning.value_or("?"), "cut off by max_tokens");
  EXPECT_EQ(s.content, "");
  s = SplitReasoning("<think></think>answer <think> stays");  // only the first block
  EXPECT_EQ(s.reasoning.value_or("?"), "");
  EXPECT_EQ(s.content, "answer <think> stays");
}

TEST(OpenAiReasoningTest, StreamFilterIsSafeAcrossChunkBoundaries) {
  const std::string text = "<think>a<b</thi</think>\n\nx</think>y<";
  const SplitOutput whole = SplitReasoning(text);
  // Every way of cutting the text in three gives the same parts.
  for (size_t i = 0; i <= text.size(); ++i) {
    for (size_t j = i; j <= text.size(); ++j) {
      ReasoningStreamFilter f;
      std::string reasoning, content;
      for (const std::string& piece : {text.substr(0, i), text.substr(i, j - i), text.substr(j)}) {
        ReasoningStreamFilter::Parts p = f.Feed(piece);
        reasoning += p.reasoning;
        content += p.content;
      }
      ReasoningStreamFilter::Parts p = f.Finish();
      EXPECT_EQ(reasoning + p.reasoning, "a<b</thi") << i << " " << j;
      EXPECT_EQ(content + p.content, "\n\nx</think>y<") << i << " " << j;
    }
  }
  EXPECT_EQ(whole.reasoning.value_or("?"), "a<b</thi");
  // Nothing is held longer than a tag could need.
  ReasoningStreamFilter f;
  EXPECT_EQ(f.Feed("<thi").content, "");
  EXPECT_EQ(f.Feed("nk>abc</").reasoning, "abc");
  EXPECT_EQ(f.Feed("b").reasoning, "</b");
}

TEST(OpenAiReasoningTest, OnlyWhenThinkingIsOnAndIncludeReasoningIsNotFalse) {
  const std::string user = R"("messages": [{"role": "user", "content": "hi"}])";
  EXPECT_FALSE(ParseOk(Endpoint::kChatCompletions, "{" + user + "}").parse_reasoning);
  ParsedRequest on =
      ParseOk(Endpoint::kChatCompletions,
              "{" + user + R"(, "chat_template_kwargs": {"enable_thinking": true}})");
  EXPECT_TRUE(on.parse_reasoning);
  EXPECT_TRUE(on.include_reasoning);
  std::vector<ChoiceResult> choices(1);
  Accumulate(Chunk("<think>hmm</think>\n\nHi!", {1, 2, 3}, 3, 3), &choices[0]);
  Accumulate(Final(v1::FINISH_REASON_STOP, 3, 3), &choices[0]);
  const ResponseMeta meta{.id = "x", .created = 1, .model = "m"};
  Json message = Json::parse(ResponseJson(on, meta, choices))["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "hmm");
  EXPECT_EQ(message["content"], "\n\nHi!");

  ParsedRequest off = ParseOk(Endpoint::kChatCompletions, "{" + user + "}");
  message = Json::parse(ResponseJson(off, meta, choices))["choices"][0]["message"];
  EXPECT_FALSE(message.contains("reasoning_content"));
  EXPECT_EQ(message["content"], "<think>hmm</think>\n\nHi!");

  ParsedRequest hidden = ParseOk(Endpoint::kChatCompletions,
                                 "{" + user +
                                     R"(, "chat_template_kwargs": {"enable_thinking": true},
                                     "include_reasoning": false})");
  message = Json::parse(ResponseJson(hidden, meta, choices))["choices"][0]["message"];
  EXPECT_FALSE(message.contains("reasoning_content"));
  EXPECT_EQ(message["content"], "\n\nHi!");

  // All thinking, no answer: content is null, as vLLM has it.
  choices.assign(1, ChoiceResult{});
  Accumulate(Chunk("<think>still thinking", {1}, 3, 1), &choices[0]);
  Accumulate(Final(v1::FINISH_REASON_LENGTH, 3, 1), &choices[0]);
  message = Json::parse(ResponseJson(on, meta, choices))["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "still thinking");
  EXPECT_TRUE(message["content"].is_null());
}

TEST(OpenAiReasoningTest, StreamingDeltasCarryReasoningThenContentThenToolCalls) {
  const ParsedRequest r = ParseOk(Endpoint::kChatCompletions, R"({
    "messages": [{"role": "user", "content": "hi"}], "stream": true,
    "chat_template_kwargs": {"enable_thinking": true},
    "tools": [{"type": "function", "function": {"name": "f"}}]})");
  StreamEncoder sse(r, {.id = "c", .created = 5, .model = "m"});
  std::string out = sse.OnResponse(0, Chunk("<thi", {1}, 4, 1));
  out += sse.OnResponse(0, Chunk("nk>I should call f.</th", {2}, 4, 2));
  out += sse.OnResponse(0, Chunk("ink>\n\nCalling.<tool_call>\n{\"name\": \"f\", ", {3}, 4, 3));
  out += sse.OnResponse(0, Chunk("\"arguments\": {}}\n</tool_call>", {4}, 4, 4));
  out += sse.OnResponse(0, Final(v1::FINISH_REASON_STOP, 4, 4));
  out += sse.Done();
  const std::vector<Json> events = Events(out);
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[0]["choices"][0]["delta"], Json::parse(R"({"role": "assistant",
                                                               "content": ""})"));
  EXPECT_EQ(events[1]["choices"][0]["delta"],
            Json::parse(R"({"reasoning_content": "I should call f."})"));
  EXPECT_EQ(events[2]["choices"][0]["delta"], Json::parse(R"({"content": "\n\nCalling."})"));
  EXPECT_EQ(events[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(events[4]["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(events[5], "[DONE]");
}

TEST(OpenAiReasoningTest, AnUnfinishedThinkBlockStreamsAsReasoning) {
  const ParsedRequest r = ParseOk(Endpoint::kChatCompletions, R"({
    "messages": [{"role": "user", "content": "hi"}], "stream": true,
    "chat_template_kwargs": {"enable_thinking": true}})");
  StreamEncoder sse(r, {.id = "c", .created = 5, .model = "m"});
  std::string out = sse.OnResponse(0, Chunk("<think>a </", {1}, 4, 1));
  out += sse.OnResponse(0, Final(v1::FINISH_REASON_LENGTH, 4, 1));
  const std::vector<Json> events = Events(out);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["choices"][0]["delta"],
            Json::parse(R"({"role": "assistant", "content": "", "reasoning_content": "a "})"));
  EXPECT_EQ(events[1]["choices"][0]["delta"], Json::parse(R"({"reasoning_content": "</"})"));
  EXPECT_EQ(events[2]["choices"][0]["finish_reason"], "length");
}

TEST(OpenAiStreamTest, ChatChunksThenUsageThenDone) {
  const ParsedRequest r = ParseOk(Endpoint::kChatCompletions,
                                  R"({"messages": [{"role": "user", "content": "hi"}],
                                      "stream": true, "stream_options": {"include_usage": true}})");
  StreamEncoder sse(r, {.id = "chatcmpl-9", .created = 5, .model = "m"});
  std::string out = sse.OnResponse(0, Chunk("Hel", {1}, 4, 1));
  out += sse.OnResponse(0, Chunk("", {2}, 4, 2));  // held back text: nothing to say
  out += sse.OnResponse(0, Chunk("lo", {3}, 4, 3));
  out += sse.OnResponse(0, Final(v1::FINISH_REASON_STOP, 4, 3));
  out += sse.Done();
  const std::vector<Json> events = Events(out);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["id"], "chatcmpl-9");
  EXPECT_EQ(events[0]["choices"][0]["delta"], Json::parse(R"({"role": "assistant",
                                                               "content": "Hel"})"));
  EXPECT_TRUE(events[0]["usage"].is_null());
  EXPECT_EQ(events[1]["choices"][0]["delta"], Json::parse(R"({"content": "lo"})"));
  EXPECT_TRUE(events[1]["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(events[2]["choices"][0]["delta"], Json::object());
  EXPECT_EQ(events[2]["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(events[3]["choices"].empty());
  EXPECT_EQ(events[3]["usage"]["total_tokens"], 7);
  EXPECT_EQ(events[4], "[DONE]");
}

TEST(OpenAiStreamTest, ToolCallsArriveWholeAtTheEnd) {
  const ParsedRequest r = ParseOk(Endpoint::kChatCompletions, R"({
    "messages": [{"role": "user", "content": "hi"}], "stream": true,
    "tools": [{"type": "function", "function": {"name": "f"}}]})");
  StreamEncoder sse(r, {.id = "c", .created = 5, .model = "m"});
  std::string out = sse.OnResponse(0, Chunk("<tool_call>\n{\"name\": \"f\", ", {1}, 4, 1));
  out += sse.OnResponse(0, Chunk("\"arguments\": {}}\n</tool_call>", {2}, 4, 2));
  out += sse.OnResponse(0, Final(v1::FINISH_REASON_STOP, 4, 2));
  out += sse.Done();
  const std::vector<Json> events = Events(out);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0]["choices"][0]["delta"], Json::parse(R"({"role": "assistant",
                                                               "content": ""})"));
  const Json& call = events[1]["choices"][0]["delta"]["tool_calls"][0];
  EXPECT_EQ(call["index"], 0);
  EXPECT_EQ(call["function"]["name"], "f");
  EXPECT_EQ(call["function"]["arguments"], "{}");
  EXPECT_EQ(events[2]["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_FALSE(events[2].contains("usage"));  // include_usage not asked
  EXPECT_EQ(events[3], "[DONE]");
}

TEST(OpenAiStreamTest, CompletionChunksEchoThePromptAndErrorsAreEvents) {
  const ParsedRequest r =
      ParseOk(Endpoint::kCompletions, R"({"prompt": "Say", "stream": true, "echo": true})");
  StreamEncoder sse(r, {.id = "cmpl-1", .created = 5, .model = "m"});
  std::string out = sse.OnResponse(0, Chunk(" hi", {1}, 1, 1));
  out += sse.OnResponse(0, Final(v1::FINISH_REASON_LENGTH, 1, 1));
  const std::vector<Json> events = Events(out);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[0]["choices"][0]["text"], "Say hi");
  EXPECT_EQ(events[1]["choices"][0]["finish_reason"], "length");
  const std::vector<Json> error =
      Events(StreamEncoder::Error(ErrorFromStatus(absl::UnavailableError("worker died"))));
  EXPECT_EQ(error[0]["error"]["message"], "worker died");
  EXPECT_EQ(error[0]["error"]["type"], "server_error");
}

TEST(OpenAiIdTest, ResponseIdsAreDistinct) {
  const std::string a = NewResponseId(Endpoint::kChatCompletions);
  EXPECT_TRUE(absl::StartsWith(a, "chatcmpl-"));
  EXPECT_EQ(a.size(), std::string("chatcmpl-").size() + 24);
  EXPECT_NE(a, NewResponseId(Endpoint::kChatCompletions));
  EXPECT_TRUE(absl::StartsWith(NewResponseId(Endpoint::kCompletions), "cmpl-"));
}

}  // namespace
}  // namespace gka::router::openai
