// Request admission: every rule of serving.proto, each bad field named; tokenizing text and
// chat; defaults, tier caps, num_iter clamping, EOS handling; context-length checks.
#include "router/request_validation.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/router_test_util.h"

namespace gka::router {
namespace {

namespace v1 = ::gka::serving::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class RequestValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const RouterTestText& text = RouterTestText::Get();
    ASSERT_NE(text.tokenizer, nullptr) << text.error;
    context_.tiers = &tiers_;
    context_.served_model = "qwen3-test";
    context_.tokenizer = text.tokenizer.get();
    context_.chat_template = &*text.chat_template;
    context_.vocab_size = 151936;
    context_.max_context_tokens = 100;
    context_.eos_token_ids = {151645, 151643};
    context_.default_max_tokens = 16;
  }

  static v1::GenerateRequest Text(const std::string& text) {
    v1::GenerateRequest r;
    r.set_text(text);
    return r;
  }

  absl::Status Error(const v1::GenerateRequest& r) { return ResolveRequest(r, context_).status(); }

  TierTable tiers_ = *TierTable::FromJson(R"({"default": "standard", "tiers": [
      {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5},
      {"name": "capped", "prefill_num_iter": 5, "decode_num_iter": 5, "max_tokens": 8,
       "num_iter_range": [2, 8]}]})");
  RequestContext context_;
};

TEST_F(RequestValidationTest, TextRequestResolvesWithDefaults) {
  absl::StatusOr<ResolvedRequest> plan = ResolveRequest(Text("Hello world"), context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->prompt.token_ids, ElementsAre(9707, 1879));
  EXPECT_EQ(plan->tier->name, "standard");
  EXPECT_EQ(plan->max_tokens, 16);
  EXPECT_EQ(plan->prefill_num_iter, 10);
  EXPECT_EQ(plan->decode_num_iter, 10);
  EXPECT_FLOAT_EQ(plan->sampling.temperature(), 1.0f);
  EXPECT_FLOAT_EQ(plan->sampling.top_p(), 1.0f);
  EXPECT_THAT(plan->sampling.stop_token_ids(), ElementsAre(151645, 151643));
  EXPECT_FALSE(plan->sampling.logprobs());
}

TEST_F(RequestValidationTest, SamplingTierAndOverrides) {
  v1::GenerateRequest r = Text("Hello");
  r.set_tier("capped");
  r.set_prefill_num_iter(100);
  r.set_decode_num_iter(0);
  v1::SamplingParams* s = r.mutable_sampling();
  s->set_temperature(0);
  s->set_top_k(5);
  s->set_max_tokens(50);
  s->add_stop_token_ids(7);
  s->add_stop_token_ids(151645);
  s->add_stop("\n\n");
  s->set_top_logprobs(3);
  s->set_seed(42);
  absl::StatusOr<ResolvedRequest> plan = ResolveRequest(r, context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->tier->name, "capped");
  EXPECT_EQ(plan->max_tokens, 8);  // the tier's cap
  EXPECT_EQ(plan->prefill_num_iter, 8);
  EXPECT_EQ(plan->decode_num_iter, 2);
  EXPECT_FLOAT_EQ(plan->sampling.temperature(), 0.0f);
  EXPECT_EQ(plan->sampling.top_k(), 5);
  EXPECT_EQ(plan->sampling.seed(), 42u);
  EXPECT_TRUE(plan->sampling.logprobs());  // implied by top_logprobs
  EXPECT_THAT(plan->sampling.stop_token_ids(), ElementsAre(7, 151645, 151643));
  EXPECT_THAT(plan->stop_strings, ElementsAre("\n\n"));

  s->set_ignore_eos(true);
  plan = ResolveRequest(r, context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->sampling.stop_token_ids(), ElementsAre(7, 151645));
}

TEST_F(RequestValidationTest, GenerationConfigDefaults) {
  context_.sampling_defaults = {.temperature = 0.7f, .top_k = 20, .top_p = 0.8f};
  absl::StatusOr<ResolvedRequest> plan = ResolveRequest(Text("Hi"), context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FLOAT_EQ(plan->sampling.temperature(), 0.7f);
  EXPECT_EQ(plan->sampling.top_k(), 20);
  EXPECT_FLOAT_EQ(plan->sampling.top_p(), 0.8f);
}

TEST_F(RequestValidationTest, TokenIdsAndChat) {
  v1::GenerateRequest ids;
  ids.mutable_token_ids()->add_ids(1);
  ids.mutable_token_ids()->add_ids(2);
  absl::StatusOr<ResolvedRequest> plan = ResolveRequest(ids, context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->prompt.token_ids, ElementsAre(1, 2));

  v1::GenerateRequest chat;
  v1::ChatMessage* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hello!");
  chat.mutable_chat()->set_enable_thinking(false);
  plan = ResolveRequest(chat, context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->prompt.text,
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(plan->prompt.token_ids, *RouterTestText::Get().tokenizer->Encode(plan->prompt.text));
  // Absent enable_thinking: the template's default (thinking on, no empty think block).
  chat.mutable_chat()->clear_enable_thinking();
  plan = ResolveRequest(chat, context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->prompt.text, "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(RequestValidationTest, EveryBadFieldIsNamed) {
  struct Case {
    std::function<void(v1::GenerateRequest&)> mutate;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {[](v1::GenerateRequest& r) { r.set_text(""); }, "text: the prompt is empty"},
      {[](v1::GenerateRequest& r) { r.clear_input(); }, "input: the request has no prompt"},
      {[](v1::GenerateRequest& r) { r.mutable_token_ids(); }, "token_ids.ids: the prompt is empty"},
      {[](v1::GenerateRequest& r) { r.mutable_token_ids()->add_ids(-3); },
       "token_ids.ids[0]: -3 is outside the vocabulary"},
      {[](v1::GenerateRequest& r) { r.mutable_token_ids()->add_ids(200000); },
       "token_ids.ids[0]: 200000 is outside the vocabulary [0, 151936)"},
      {[](v1::GenerateRequest& r) { r.mutable_chat(); }, "chat.messages: no messages"},
      {[](v1::GenerateRequest& r) { r.set_text(std::string("ab\xff", 3)); },
       "text: invalid UTF-8 at byte 2"},
      {[](v1::GenerateRequest& r) { r.set_tier("gold"); },
       "tier: unknown tier 'gold'; this router serves: standard, capped"},
      {[](v1::GenerateRequest& r) { r.set_model("gpt-4"); },
       "model: unknown model 'gpt-4'; this router serves 'qwen3-test'"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-0.5f); },
       "sampling.temperature: -0.5 must be >= 0"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(NAN); },
       "sampling.temperature"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(1.5f); },
       "sampling.top_p: 1.5 is outside (0, 1]"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(0); },
       "sampling.top_p: 0 is outside (0, 1]"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_k(-1); },
       "sampling.top_k: -1 must be >= 0"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_min_p(2); },
       "sampling.min_p: 2 is outside [0, 1]"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_repetition_penalty(0); },
       "sampling.repetition_penalty: 0 must be > 0"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_presence_penalty(3); },
       "sampling.presence_penalty: 3 is outside [-2, 2]"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_frequency_penalty(-3); },
       "sampling.frequency_penalty: -3 is outside [-2, 2]"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_max_tokens(0); },
       "sampling.max_tokens: 0 must be >= 1"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_logprobs(21); },
       "sampling.top_logprobs: 21 is outside [0, 20]"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->add_stop(""); },
       "sampling.stop[0]: empty stop string"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->add_stop_token_ids(-1); },
       "sampling.stop_token_ids[0]"},
      {[](v1::GenerateRequest& r) { r.set_prefill_num_iter(-1); },
       "prefill_num_iter: -1 must be >= 0"},
      {[](v1::GenerateRequest& r) { r.set_request_id(std::string(300, 'x')); },
       "request_id: 300 bytes"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_max_tokens(95); },
       "sampling.max_tokens: the prompt (2 tokens) + max_tokens (95) = 97"},
      {[](v1::GenerateRequest& r) { r.set_text(std::string(300, '7')); },  // a token a digit
       "leaves no room in the model context of 100"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = Text("Hello world");
    c.mutate(r);
    if (std::string(c.expected).find("max_tokens (95)") != std::string::npos) {
      context_.max_context_tokens = 96;
    } else {
      context_.max_context_tokens = 100;
    }
    const absl::Status status = Error(r);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.expected << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr(c.expected)) << status;
  }
}

TEST_F(RequestValidationTest, AllBadFieldsAtOnce) {
  v1::GenerateRequest r = Text("");
  r.set_tier("nope");
  r.mutable_sampling()->set_temperature(-1);
  const absl::Status status = Error(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("text:"));
  EXPECT_THAT(status.message(), HasSubstr("tier:"));
  EXPECT_THAT(status.message(), HasSubstr("sampling.temperature:"));
}

TEST_F(RequestValidationTest, DefaultMaxTokensShrinksToTheContext) {
  context_.max_context_tokens = 10;
  context_.default_max_tokens = 256;
  absl::StatusOr<ResolvedRequest> plan = ResolveRequest(Text("Hello world"), context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->max_tokens, 8);
  // Unknown context (no worker reported one): no check.
  context_.max_context_tokens = 0;
  plan = ResolveRequest(Text("Hello world"), context_);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->max_tokens, 256);
}

TEST_F(RequestValidationTest, NoTokenizerIsAFailedPrecondition) {
  context_.tokenizer = nullptr;
  context_.chat_template = nullptr;
  absl::Status status = Error(Text("Hello"));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("text: text input needs a tokenizer"));

  v1::GenerateRequest ids;
  ids.mutable_token_ids()->add_ids(5);
  ids.mutable_sampling()->add_stop("###");
  status = Error(ids);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("sampling.stop"));

  v1::GenerateRequest chat;
  chat.mutable_chat()->add_messages()->set_content("hi");
  chat.mutable_chat()->mutable_messages(0)->set_role("user");
  EXPECT_EQ(Error(chat).code(), absl::StatusCode::kFailedPrecondition);

  ids.mutable_sampling()->clear_stop();
  EXPECT_TRUE(ResolveRequest(ids, context_).ok());
}

TEST_F(RequestValidationTest, ChatErrorsNameTheMessage) {
  v1::GenerateRequest r;
  r.mutable_chat()->add_messages()->set_role("user");
  r.mutable_chat()->add_messages()->set_role("wizard");
  absl::Status status = Error(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("chat.messages[1].role"));

  r.mutable_chat()->mutable_messages(1)->set_role("assistant");
  r.mutable_chat()->set_tools_json("{not json");
  status = Error(r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("chat.tools_json"));
}

TEST_F(RequestValidationTest, PromptIdsPastASmallModelVocabulary) {
  context_.vocab_size = 1024;
  const absl::Status status = Error(Text("Hello world"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("outside the model's vocabulary of 1024"));
}

TEST_F(RequestValidationTest, Tokenize) {
  v1::TokenizeRequest r;
  r.set_text("Hello world");
  absl::StatusOr<Prompt> prompt = TokenizeRequest(r, context_);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_THAT(prompt->token_ids, ElementsAre(9707, 1879));
  r.set_model("other");
  EXPECT_EQ(TokenizeRequest(r, context_).status().code(), absl::StatusCode::kInvalidArgument);
  r.clear_model();
  r.clear_input();
  EXPECT_EQ(TokenizeRequest(r, context_).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gka::router
