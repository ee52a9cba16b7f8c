// Conversions to and from the wire, error payloads, and the retry rule.
#include "sdk/cpp/convert.h"

#include <grpcpp/client_context.h>
#include <gtest/gtest.h>

#include "gka/sdk/client.h"
#include "sdk/cpp/retry.h"

namespace gka::sdk {
namespace {

namespace pb = ::gka::serving::v1;

TEST(ConvertTest, UnsetSamplingFieldsStayAbsentOnTheWire) {
  pb::GenerateRequest wire = internal::ToProto(Request::Text("hi", {.max_tokens = 8}));
  EXPECT_EQ(wire.text(), "hi");
  EXPECT_TRUE(wire.sampling().has_max_tokens());
  EXPECT_EQ(wire.sampling().max_tokens(), 8);
  EXPECT_FALSE(wire.sampling().has_temperature());
  EXPECT_FALSE(wire.sampling().has_seed());
  EXPECT_FALSE(wire.has_prefill_num_iter());

  Request r = Request::Tokens({1, 2, 3});
  r.sampling.temperature = 0.0f;  // set to zero is not the same as unset
  r.sampling.stop = {"\n\n"};
  r.decode_num_iter = 5;
  r.tier = "batch";
  wire = internal::ToProto(r);
  EXPECT_EQ(wire.input_case(), pb::GenerateRequest::kTokenIds);
  EXPECT_EQ(wire.token_ids().ids_size(), 3);
  EXPECT_TRUE(wire.sampling().has_temperature());
  EXPECT_EQ(wire.sampling().stop(0), "\n\n");
  EXPECT_EQ(wire.decode_num_iter(), 5);
  EXPECT_EQ(wire.tier(), "batch");
}

TEST(ConvertTest, ChatWithToolCalls) {
  ChatMessage call = ChatMessage::Assistant("");
  call.tool_calls.push_back({.id = "c1", .name = "get_weather", .arguments_json = "{}"});
  ChatMessage tool{.role = "tool", .content = "sunny", .tool_call_id = "c1"};
  Request r =
      ChatRequest({ChatMessage::System("be brief"), ChatMessage::User("weather?"), call, tool});
  std::get<Chat>(r.input).enable_thinking = false;
  const pb::GenerateRequest wire = internal::ToProto(r);
  ASSERT_EQ(wire.chat().messages_size(), 4);
  EXPECT_EQ(wire.chat().messages(0).role(), "system");
  EXPECT_EQ(wire.chat().messages(2).tool_calls(0).function().name(), "get_weather");
  EXPECT_EQ(wire.chat().messages(2).tool_calls(0).type(), "function");
  EXPECT_EQ(wire.chat().messages(3).tool_call_id(), "c1");
  ASSERT_TRUE(wire.chat().has_enable_thinking());
  EXPECT_FALSE(wire.chat().enable_thinking());
}

TEST(ConvertTest, ChunksAccumulateAndFinalFillsTheResult) {
  Result result;
  pb::Chunk c;
  c.add_token_ids(7);
  c.set_text("a");
  c.mutable_usage()->set_completion_tokens(1);
  internal::AppendChunk(c, &result);
  c.set_token_ids(0, 8);
  c.set_text("b");
  c.mutable_usage()->set_completion_tokens(2);
  const Chunk second = internal::AppendChunk(c, &result);
  EXPECT_EQ(second.text, "b");
  EXPECT_EQ(result.token_ids, (TokenIds{7, 8}));
  EXPECT_EQ(result.text, "ab");
  EXPECT_EQ(result.usage.completion_tokens, 2u);

  pb::Final f;
  f.set_finish_reason(pb::FINISH_REASON_LENGTH);
  f.set_prefill_num_iter(30);
  f.set_decode_num_iter(10);
  f.mutable_served_by()->set_decode_worker_id("d0");
  f.mutable_timings()->set_ttft_ms(12.5);
  f.set_matched_stop_token_id(151645);
  internal::ApplyFinal(f, &result);
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(FinishReasonName(result.finish_reason), "length");
  EXPECT_EQ(result.num_iter.prefill, 30);
  EXPECT_EQ(result.num_iter.decode, 10);
  EXPECT_EQ(result.served_by.decode_worker_id, "d0");
  EXPECT_DOUBLE_EQ(result.timings.ttft_ms, 12.5);
  EXPECT_EQ(result.matched_stop_token_id, 151645);
}

TEST(ErrorDetailsTest, RoundTripThroughTheStatusPayload) {
  const absl::Status s = internal::MakeError({.code = absl::StatusCode::kResourceExhausted,
                                              .message = "busy",
                                              .from_server = true,
                                              .retryable = true,
                                              .retry_after = absl::Milliseconds(250),
                                              .attempts = 3});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "busy");
  std::optional<ErrorDetails> d = GetErrorDetails(s);
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->from_server);
  EXPECT_TRUE(d->retryable);
  EXPECT_EQ(d->retry_after, absl::Milliseconds(250));
  EXPECT_EQ(d->attempts, 3);
  EXPECT_FALSE(GetErrorDetails(absl::InternalError("not ours")).has_value());
  EXPECT_FALSE(GetErrorDetails(absl::OkStatus()).has_value());
}

TEST(RetryRuleTest, OnlyUnavailableAndHintedResourceExhausted) {
  using internal::MayRetry;
  EXPECT_TRUE(MayRetry({.code = absl::StatusCode::kUnavailable}));
  EXPECT_TRUE(
      MayRetry({.code = absl::StatusCode::kUnavailable, .from_server = true, .retryable = true}));
  EXPECT_FALSE(
      MayRetry({.code = absl::StatusCode::kUnavailable, .from_server = true, .retryable = false}));
  EXPECT_FALSE(MayRetry({.code = absl::StatusCode::kResourceExhausted}));
  EXPECT_TRUE(
      MayRetry({.code = absl::StatusCode::kResourceExhausted, .retry_after = absl::Seconds(1)}));
  EXPECT_TRUE(MayRetry(
      {.code = absl::StatusCode::kResourceExhausted, .from_server = true, .retryable = true}));
  EXPECT_FALSE(MayRetry(
      {.code = absl::StatusCode::kInvalidArgument, .from_server = true, .retryable = true}));
  EXPECT_FALSE(MayRetry({.code = absl::StatusCode::kDeadlineExceeded}));
  EXPECT_FALSE(MayRetry({.code = absl::StatusCode::kUnauthenticated}));
}

TEST(RetryRuleTest, BackoffGrowsIsCappedAndRespectsDeadlineAndHint) {
  const absl::Time now = absl::Now();
  internal::Retrier r({.max_attempts = 5,
                       .initial_backoff = absl::Milliseconds(100),
                       .max_backoff = absl::Milliseconds(250),
                       .backoff_multiplier = 2.0,
                       .jitter = 0.0},
                      now + absl::Seconds(10));
  std::vector<absl::Duration> waits;
  for (int i = 0; i < 5; ++i) {
    r.BeginAttempt();
    ErrorDetails d{.code = absl::StatusCode::kUnavailable};
    std::optional<absl::Duration> w = r.NextWait(&d, false, now);
    if (!w) {
      EXPECT_EQ(d.attempts, 5);
      EXPECT_NE(d.message.find("gave up after 5 attempts"), std::string::npos) << d.message;
      break;
    }
    waits.push_back(*w);
  }
  EXPECT_EQ(waits, (std::vector<absl::Duration>{absl::Milliseconds(100), absl::Milliseconds(200),
                                                absl::Milliseconds(250), absl::Milliseconds(250)}));

  internal::Retrier hinted({.jitter = 0.0}, now + absl::Seconds(10));
  hinted.BeginAttempt();
  ErrorDetails d{.code = absl::StatusCode::kResourceExhausted,
                 .retry_after = absl::Milliseconds(700)};
  EXPECT_EQ(hinted.NextWait(&d, false, now), absl::Milliseconds(700));

  internal::Retrier late({.jitter = 0.0}, now + absl::Milliseconds(50));
  late.BeginAttempt();
  ErrorDetails d2{.code = absl::StatusCode::kUnavailable};
  EXPECT_FALSE(late.NextWait(&d2, false, now).has_value());
  EXPECT_NE(d2.message.find("deadline"), std::string::npos);

  internal::Retrier delivered({}, now + absl::Seconds(10));
  delivered.BeginAttempt();
  ErrorDetails d3{.code = absl::StatusCode::kUnavailable};
  EXPECT_FALSE(delivered.NextWait(&d3, true, now).has_value());
  EXPECT_NE(d3.message.find("already delivered"), std::string::npos);
}

TEST(RetryRuleTest, PoliciesAreValidated) {
  EXPECT_TRUE(internal::ValidateRetryPolicy({}).ok());
  EXPECT_EQ(internal::ValidateRetryPolicy({.max_attempts = 0}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(internal::ValidateRetryPolicy({.backoff_multiplier = 0.5}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(internal::ValidateRetryPolicy({.jitter = 2}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Client::Create({.address = ""}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Client::Create({.retry = {.max_attempts = 0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gka::sdk
