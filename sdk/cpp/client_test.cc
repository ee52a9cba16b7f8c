// The C++ SDK against the fake router (a real gRPC server on 127.0.0.1): results, both
// stream styles, retries only before the first token, deadlines, cancellation, Abort, auth,
// TLS and the unary calls.
#include "gka/sdk/client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/synchronization/notification.h"
#include "sdk/cpp/testing/fake_router.h"

namespace gka::sdk {
namespace {

using testing::FakeRouter;
using testing::FakeScript;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Quick retries so the tests stay fast; jitter off where a test measures time.
RetryPolicy FastRetry(int max_attempts = 4) {
  return {.max_attempts = max_attempts,
          .initial_backoff = absl::Milliseconds(10),
          .max_backoff = absl::Milliseconds(50),
          .jitter = 0.0};
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fake = FakeRouter::Start({});
    ASSERT_TRUE(fake.ok()) << fake.status();
    fake_ = *std::move(fake);
    client_ = MakeClient({});
  }

  std::unique_ptr<Client> MakeClient(ClientOptions options) {
    if (options.address == ClientOptions().address) options.address = fake_->address();
    options.retry = FastRetry();
    options.default_timeout = absl::Seconds(20);
    auto client = Client::Create(options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  testing::FakeGenerateService& fake() { return fake_->service(); }

  std::unique_ptr<FakeRouter> fake_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, GenerateReturnsTheWholeResult) {
  absl::StatusOr<Result> r = client_->Generate(Request::Text("hello there"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "echo: hello there");
  EXPECT_EQ(r->token_ids, (TokenIds{1000, 1001, 1002}));
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
  EXPECT_EQ(r->usage.prompt_tokens, 2u);
  EXPECT_EQ(r->usage.completion_tokens, 3u);
  EXPECT_EQ(r->served_by.decode_worker_id, "fake-decode-0");
  EXPECT_EQ(r->tier, "standard");
  EXPECT_EQ(r->num_iter.prefill, 10);
  EXPECT_DOUBLE_EQ(r->timings.ttft_ms, 1.5);
  EXPECT_EQ(r->attempts, 1);
  // The client assigned the id, and the server saw it.
  EXPECT_EQ(r->request_id.rfind("sdk-", 0), 0u) << r->request_id;
  ASSERT_EQ(fake().requests().size(), 1u);
  EXPECT_EQ(fake().requests()[0].request_id(), r->request_id);
}

TEST_F(ClientTest, RequestFieldsReachTheServer) {
  Request request = Request::Tokens({5, 6, 7}, {.max_tokens = 2, .temperature = 0.0f, .seed = 42});
  request.request_id = "mine-1";
  request.tier = "interactive";
  request.decode_num_iter = 30;
  absl::StatusOr<Result> r = client_->Generate(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request_id, "mine-1");
  EXPECT_EQ(r->text, "tokens: 3");  // "tokens:" " 3" = the 2 tokens allowed, all there is
  EXPECT_EQ(r->num_iter.decode, 30);
  EXPECT_EQ(r->tier, "interactive");
  const auto wire = fake().requests().at(0);
  EXPECT_EQ(wire.sampling().seed(), 42u);
  EXPECT_TRUE(wire.sampling().has_temperature());
  EXPECT_FALSE(wire.sampling().has_top_p());
  EXPECT_FALSE(wire.has_prefill_num_iter());

  absl::StatusOr<Result> capped = client_->Generate(Request::Text("a b c d e", {.max_tokens = 2}));
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->finish_reason, FinishReason::kLength);
  EXPECT_EQ(capped->token_ids.size(), 2u);
}

TEST_F(ClientTest, ChatHelperSendsMessages) {
  absl::StatusOr<Result> r = client_->Chat(
      {ChatMessage::System("be brief"), ChatMessage::User("What is GKA?")}, {.max_tokens = 16});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "you said: What is GKA?");
  const auto wire = fake().requests().at(0);
  ASSERT_EQ(wire.chat().messages_size(), 2);
  EXPECT_EQ(wire.chat().messages(0).role(), "system");
  EXPECT_EQ(wire.chat().messages(1).content(), "What is GKA?");
}

TEST_F(ClientTest, PullStreamYieldsChunksInOrder) {
  auto stream = client_->GenerateStream(Request::Text("one two three four"));
  std::vector<std::string> texts;
  Chunk chunk;
  while (stream->Next(&chunk)) {
    texts.push_back(chunk.text);
    EXPECT_EQ(chunk.usage.completion_tokens, texts.size());
  }
  EXPECT_EQ(texts, (std::vector<std::string>{"echo:", " one", " two", " three", " four"}));
  absl::StatusOr<Result> r = stream->Finish();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "echo: one two three four");
  EXPECT_EQ(stream->Finish().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ClientTest, FinishWithoutNextStillReturnsEverything) {
  auto stream = client_->GenerateStream(Request::Text("x y"));
  absl::StatusOr<Result> r = stream->Finish();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "echo: x y");
}

TEST_F(ClientTest, CallbackStreamDeliversChunksThenDone) {
  std::vector<std::string> texts;  // written on the gRPC thread, read after Wait
  std::optional<absl::StatusOr<Result>> done;
  auto call =
      client_->GenerateStream(Request::Text("a b", {.logprobs = true}),
                              {.on_chunk =
                                   [&](const Chunk& c) {
                                     texts.push_back(c.text);
                                     EXPECT_EQ(c.logprobs.size(), 1u);
                                   },
                               .on_done = [&](absl::StatusOr<Result> r) { done = std::move(r); }});
  call->Wait();
  ASSERT_TRUE(done.has_value());
  ASSERT_TRUE(done->ok()) << done->status();
  EXPECT_EQ(texts, (std::vector<std::string>{"echo:", " a", " b"}));
  EXPECT_EQ((*done)->logprobs.size(), 3u);
}

TEST_F(ClientTest, TopLogprobsCarryTheAlternatives) {
  absl::StatusOr<Result> r = client_->Generate(Request::Text("a", {.top_logprobs = 2}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(fake().requests().back().sampling().top_logprobs(), 2);
  ASSERT_EQ(r->logprobs.size(), r->token_ids.size());
  const TokenLogprob& first = r->logprobs[0];
  EXPECT_EQ(first.token_id, r->token_ids[0]);
  ASSERT_EQ(first.top.size(), 2u);
  EXPECT_EQ(first.top[0].token_id, r->token_ids[0]);
  EXPECT_FLOAT_EQ(first.top[0].logprob, -0.5f);
  EXPECT_EQ(first.top[0].text, "alt0");
  EXPECT_EQ(first.top[1].token_id, r->token_ids[0] + 1);
  EXPECT_FLOAT_EQ(first.top[1].logprob, -1.0f);
}

TEST_F(ClientTest, RetriesUnavailableBeforeTheFirstToken) {
  fake().Push({.end = FakeScript::kStatus, .code = absl::StatusCode::kUnavailable});
  fake().Push({.end = FakeScript::kError,
               .code = absl::StatusCode::kUnavailable,
               .message = "prefill worker died",
               .retryable = true});
  absl::StatusOr<Result> r = client_->Generate(Request::Text("again"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "echo: again");
  EXPECT_EQ(r->attempts, 3);
  EXPECT_EQ(fake().generate_calls(), 3);
  // Every attempt carried the same request id.
  for (const auto& wire : fake().requests()) EXPECT_EQ(wire.request_id(), r->request_id);
}

TEST_F(ClientTest, GivesUpAfterMaxAttempts) {
  for (int i = 0; i < 6; ++i) fake().Push({.end = FakeScript::kStatus});
  absl::StatusOr<Result> r = client_->Generate(Request::Text("x"));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  std::optional<ErrorDetails> d = GetErrorDetails(r.status());
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->attempts, 4);
  EXPECT_TRUE(d->retryable);
  EXPECT_FALSE(d->from_server);
  EXPECT_EQ(fake().generate_calls(), 4);
}

TEST_F(ClientTest, NeverRetriesAfterTheFirstToken) {
  fake().Push({.tokens = {"a", " b"},
               .end = FakeScript::kError,
               .code = absl::StatusCode::kUnavailable,
               .message = "decode worker died",
               .retryable = true});
  std::vector<std::string> seen;
  auto stream = client_->GenerateStream(Request::Text("x"));
  Chunk chunk;
  while (stream->Next(&chunk)) seen.push_back(chunk.text);
  absl::StatusOr<Result> r = stream->Finish();
  EXPECT_EQ(seen.size(), 2u);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("decode worker died"), absl::string_view::npos);
  std::optional<ErrorDetails> d = GetErrorDetails(r.status());
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->from_server);
  EXPECT_TRUE(d->retryable);  // the server's verdict, for the caller to act on
  EXPECT_EQ(d->attempts, 1);
  EXPECT_EQ(fake().generate_calls(), 1);
}

TEST_F(ClientTest, ServerSaysNotRetryable) {
  fake().Push({.end = FakeScript::kError,
               .code = absl::StatusCode::kUnavailable,
               .message = "draining for good",
               .retryable = false});
  absl::StatusOr<Result> r = client_->Generate(Request::Text("x"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(fake().generate_calls(), 1);
}

TEST_F(ClientTest, InvalidArgumentIsNotRetriedAndKeepsTheServersMessage) {
  absl::StatusOr<Result> r = client_->Generate([] {
    Request req = Request::Text("x");
    req.tier = "gold";
    return req;
  }());
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "tier: unknown tier 'gold'");
  std::optional<ErrorDetails> d = GetErrorDetails(r.status());
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->from_server);
  EXPECT_FALSE(d->retryable);
  EXPECT_EQ(fake().generate_calls(), 1);
}

TEST_F(ClientTest, ResourceExhaustedWaitsForTheRetryAfterHint) {
  fake().Push({.end = FakeScript::kStatus,
               .code = absl::StatusCode::kResourceExhausted,
               .trailing_metadata = {{"retry-after-ms", "300"}}});
  const absl::Time start = absl::Now();
  absl::StatusOr<Result> r = client_->Generate(Request::Text("x"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_EQ(r->attempts, 2);
}

TEST_F(ClientTest, ResourceExhaustedWithoutHintFailsAtOnce) {
  fake().Push({.end = FakeScript::kStatus, .code = absl::StatusCode::kResourceExhausted});
  absl::StatusOr<Result> r = client_->Generate(Request::Text("x"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(fake().generate_calls(), 1);
}

TEST_F(ClientTest, DeadlineBoundsTheBackoff) {
  fake().Push({.end = FakeScript::kStatus,
               .code = absl::StatusCode::kResourceExhausted,
               .trailing_metadata = {{"retry-after", "10"}}});
  const absl::Time start = absl::Now();
  absl::StatusOr<Result> r =
      client_->Generate(Request::Text("x"), {.timeout = absl::Milliseconds(500)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("deadline"), absl::string_view::npos) << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  std::optional<ErrorDetails> d = GetErrorDetails(r.status());
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->retry_after, absl::Seconds(10));
}

TEST_F(ClientTest, DeadlineEndsAHangingCallAndTheServerSeesIt) {
  Request request = Request::Text("x");
  request.request_id = "slow-1";
  fake().Push({.end = FakeScript::kHang});
  const absl::Time start = absl::Now();
  absl::StatusOr<Result> r = client_->Generate(request, {.timeout = absl::Milliseconds(300)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_TRUE(fake().WaitForCancelled("slow-1", absl::Seconds(5)));
  EXPECT_EQ(fake().generate_calls(), 1);  // DEADLINE_EXCEEDED is never retried
}

TEST_F(ClientTest, CancelAPullStreamMidway) {
  Request request = Request::Text("x");
  request.request_id = "cancel-me";
  fake().Push(
      {.tokens = std::vector<std::string>(200, " t"), .token_interval = absl::Milliseconds(20)});
  auto stream = client_->GenerateStream(request);
  Chunk chunk;
  ASSERT_TRUE(stream->Next(&chunk));
  ASSERT_TRUE(stream->Next(&chunk));
  stream->Cancel();
  while (stream->Next(&chunk)) {
  }
  absl::StatusOr<Result> r = stream->Finish();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(fake().WaitForCancelled("cancel-me", absl::Seconds(5)));
}

TEST_F(ClientTest, DestroyingACallbackHandleCancelsAndWaitsForOnDone) {
  Request request = Request::Text("x");
  request.request_id = "dropped";
  fake().Push(
      {.tokens = std::vector<std::string>(200, " t"), .token_interval = absl::Milliseconds(20)});
  absl::Notification first;
  std::atomic<bool> done_ran{false};
  absl::StatusCode done_code = absl::StatusCode::kOk;
  {
    auto call = client_->GenerateStream(request, {.on_chunk =
                                                      [&](const Chunk&) {
                                                        if (!first.HasBeenNotified())
                                                          first.Notify();
                                                      },
                                                  .on_done =
                                                      [&](absl::StatusOr<Result> r) {
                                                        done_code = r.status().code();
                                                        done_ran = true;
                                                      }});
    ASSERT_TRUE(first.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }
  EXPECT_TRUE(done_ran);
  EXPECT_EQ(done_code, absl::StatusCode::kCancelled);
  EXPECT_TRUE(fake().WaitForCancelled("dropped", absl::Seconds(5)));
}

TEST_F(ClientTest, CancelDuringBackoffEndsPromptly) {
  fake().Push({.end = FakeScript::kStatus,
               .code = absl::StatusCode::kUnavailable,
               .trailing_metadata = {{"retry-after-ms", "5000"}}});
  absl::Notification done;
  absl::StatusCode code = absl::StatusCode::kOk;
  auto call =
      client_->GenerateStream(Request::Text("x"), {.on_done = [&](absl::StatusOr<Result> r) {
                                code = r.status().code();
                                done.Notify();
                              }});
  absl::SleepFor(absl::Milliseconds(200));  // the first attempt failed; now in backoff
  const absl::Time start = absl::Now();
  call->Cancel();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(2)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(code, absl::StatusCode::kCancelled);
  EXPECT_EQ(fake().generate_calls(), 1);
}

TEST_F(ClientTest, AbortByRequestIdEndsTheStreamWithAbort) {
  fake().Push(
      {.tokens = std::vector<std::string>(200, " t"), .token_interval = absl::Milliseconds(20)});
  auto stream = client_->GenerateStream(Request::Text("x"));
  Chunk chunk;
  ASSERT_TRUE(stream->Next(&chunk));
  const std::string id = stream->request_id();
  ASSERT_FALSE(id.empty());
  absl::StatusOr<bool> found = client_->Abort(id);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_TRUE(*found);
  absl::StatusOr<Result> r = stream->Finish();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finish_reason, FinishReason::kAbort);
  EXPECT_LT(r->token_ids.size(), 200u);

  absl::StatusOr<bool> unknown = client_->Abort("no-such-request");
  ASSERT_TRUE(unknown.ok());
  EXPECT_FALSE(*unknown);
}

TEST_F(ClientTest, UnaryCallsConvertAndRetry) {
  fake().FailUnary(2, absl::StatusCode::kUnavailable);
  absl::StatusOr<ModelInfo> info = client_->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model, "fake-model");
  EXPECT_EQ(info->default_tier, "standard");
  ASSERT_EQ(info->tiers.size(), 1u);
  EXPECT_EQ(info->tiers[0].num_iter_max, 30);
  EXPECT_EQ(fake().unary_calls(), 3);

  absl::StatusOr<TokenizeResult> t = client_->Tokenize("AB");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token_ids, (TokenIds{65, 66}));
  absl::StatusOr<TokenizeResult> chat =
      client_->Tokenize(Chat{.messages = {ChatMessage::User("hi")}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->prompt_text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");

  fake().FailUnary(1, absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Tokenize("x").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, ServerDownIsUnavailableAfterTheRetries) {
  const std::string address = fake_->address();
  fake_->Shutdown();
  fake_.reset();
  auto client = Client::Create(
      {.address = address, .default_timeout = absl::Seconds(10), .retry = FastRetry(3)});
  ASSERT_TRUE(client.ok());
  absl::StatusOr<Result> r = (*client)->Generate(Request::Text("x"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  std::optional<ErrorDetails> d = GetErrorDetails(r.status());
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->attempts, 3);
  EXPECT_EQ((*client)->WaitForReady(absl::Milliseconds(100)).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ClientTest, StreamsOutliveTheirClient) {
  fake().Push({.tokens = {"a", " b", " c"}, .token_interval = absl::Milliseconds(20)});
  auto stream = client_->GenerateStream(Request::Text("x"));
  client_.reset();
  absl::StatusOr<Result> r = stream->Finish();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "a b c");
}

TEST_F(ClientTest, ManyConcurrentCallsOnOneClient) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<Result> r = client_->Generate(Request::Text(absl::StrCat("n", i)));
      if (r.ok() && r->text == absl::StrCat("echo: n", i)) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 16);
}

TEST(ClientAuthTest, ApiKeyIsSentAndAMissingOneIsNotRetried) {
  auto fake = FakeRouter::Start({.api_key = "s3cret"});
  ASSERT_TRUE(fake.ok()) << fake.status();
  auto anonymous = Client::Create({.address = (*fake)->address(), .retry = FastRetry()});
  ASSERT_TRUE(anonymous.ok());
  absl::StatusOr<Result> denied = (*anonymous)->Generate(Request::Text("x"));
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(GetErrorDetails(denied.status())->attempts, 1);

  auto keyed =
      Client::Create({.address = (*fake)->address(), .api_key = "s3cret", .retry = FastRetry()});
  ASSERT_TRUE(keyed.ok());
  absl::StatusOr<Result> r = (*keyed)->Generate(Request::Text("x"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*keyed)->GetModelInfo().ok());

  // Unset api_key takes $GKA_API_KEY; an empty one sends none even then.
  setenv("GKA_API_KEY", "s3cret", 1);
  auto from_env = Client::Create({.address = (*fake)->address(), .retry = FastRetry()});
  auto explicit_none =
      Client::Create({.address = (*fake)->address(), .api_key = "", .retry = FastRetry()});
  unsetenv("GKA_API_KEY");
  ASSERT_TRUE(from_env.ok() && explicit_none.ok());
  EXPECT_TRUE((*from_env)->Generate(Request::Text("x")).ok());
  EXPECT_EQ((*explicit_none)->Generate(Request::Text("x")).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(ClientTlsTest, VerifiesTheServerWithTheGivenRoots) {
  const std::string cert = ReadFile("sdk/testdata/server.crt");
  const std::string key = ReadFile("sdk/testdata/server.key");
  ASSERT_FALSE(cert.empty()) << "run from the repository root";
  auto fake = FakeRouter::Start({.tls_cert_pem = cert, .tls_key_pem = key});
  ASSERT_TRUE(fake.ok()) << fake.status();

  auto tls = Client::Create({.address = (*fake)->address(),
                             .tls = true,
                             .tls_root_certs_pem = cert,
                             .retry = FastRetry()});
  ASSERT_TRUE(tls.ok());
  absl::StatusOr<Result> r = (*tls)->Generate(Request::Text("secure"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "echo: secure");

  // Plaintext to a TLS port fails (and is retried as UNAVAILABLE, then given up).
  auto plain = Client::Create(
      {.address = (*fake)->address(), .default_timeout = absl::Seconds(5), .retry = FastRetry(2)});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->Generate(Request::Text("x")).status().code(), absl::StatusCode::kUnavailable);

  // tls unset with $GKA_TLS_CA: TLS with that file's roots (what `gka local` prints).
  setenv("GKA_TLS_CA", "sdk/testdata/server.crt", 1);
  auto from_env = Client::Create({.address = (*fake)->address(), .retry = FastRetry()});
  unsetenv("GKA_TLS_CA");
  ASSERT_TRUE(from_env.ok()) << from_env.status();
  EXPECT_TRUE((*from_env)->Generate(Request::Text("env")).ok());
}

TEST(ClientTlsTest, BadTlsSettingsAreClearErrors) {
  setenv("GKA_TLS_CA", "/nonexistent/ca.pem", 1);
  absl::Status missing = Client::Create({}).status();
  unsetenv("GKA_TLS_CA");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("GKA_TLS_CA"), absl::string_view::npos) << missing;
  // A client certificate without its key (or the other way round).
  const std::string cert = ReadFile("sdk/testdata/server.crt");
  EXPECT_EQ(Client::Create({.tls = true, .tls_cert_chain_pem = cert}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gka::sdk
