// The real router (its gRPC server, registry, placement, streaming) against fake workers that
// are real gRPC servers on 127.0.0.1:0 speaking gka.worker.v1 and playing scripted tokens:
// text in -> tokens -> text out, stop strings across token boundaries, retries on another
// prefill worker, a decode worker dying mid-stream, client cancellation and deadlines,
// public Abort, bad requests, health, metrics; and the gka-router binary's start-up line and
// SIGTERM drain.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"
#include "common/text/tokenizer.h"
#include "gka/serving/v1/serving.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/router.h"
#include "router/router_core.h"
#include "tests/integration/router/fake_workers.h"

extern char** environ;

namespace gka::router {
namespace {

namespace v1 = ::gka::serving::v1;
using testing::DecodeOptions;
using testing::FakeCluster;
using testing::FakeDecodeWorker;
using testing::FakePrefillWorker;
using ::testing::HasSubstr;
using testing::PrefillOptions;
using testing::Script;

constexpr const char* kTokenizerDir = GKA_QWEN3_TOKENIZER_DIR;

struct Result {
  std::vector<v1::GenerateResponse> responses;
  grpc::Status status;
  std::string text;
  std::vector<int32_t> tokens;
  std::optional<v1::Final> final;
  std::optional<v1::Error> error;
  absl::Duration elapsed;
};

// GET http://<address><path> over a plain socket; the body ("" on failure).
std::string HttpGet(const std::string& address, const std::string& path) {
  std::vector<std::string> parts = absl::StrSplit(address, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) return "";
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// The value of the series line starting with `series` ("name{labels}"), or -1.
double MetricValue(const std::string& scrape, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double v = -1;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
    }
  }
  return -1;
}

class RouterIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = text::Tokenizer::FromFile(kTokenizerDir);
    if (tok.ok()) tokenizer_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(tokenizer_, nullptr) << "no tokenizer in " << kTokenizerDir << " (run `make deps`)";
    StartRouter({});
  }

  void TearDown() override {
    prefills_.clear();
    decodes_.clear();
    router_.reset();
  }

  void StartRouter(RouterOptions options, bool with_tokenizer = true) {
    options.address = "127.0.0.1:0";
    // The exposer takes about 2 s to stop; only the tests that scrape pay for it.
    options.metrics_address = with_metrics_ ? "127.0.0.1:0" : "";
    if (with_tokenizer) options.tokenizer_dir = kTokenizerDir;
    options.heartbeat_timeout = absl::Milliseconds(300);
    options.router_id = "router-test";
    auto router = Router::Create(options);
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = std::move(*router);
    channel_ = rpc::CreateChannel(router_->address(), {});
    stub_ = v1::GenerateService::NewStub(channel_);
  }

  FakeDecodeWorker& AddDecode(DecodeOptions options) {
    decodes_.push_back(FakeDecodeWorker::Start(cluster_, options, router_->internal_address()));
    return *decodes_.back();
  }
  FakePrefillWorker& AddPrefill(PrefillOptions options) {
    prefills_.push_back(FakePrefillWorker::Start(cluster_, options, router_->internal_address()));
    return *prefills_.back();
  }

  // Waits for the cluster health (service gka.serving.v1.GenerateService) to be `serving`.
  bool WaitHealth(bool serving, absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      absl::StatusOr<bool> s =
          rpc::CheckHealth(*channel_, kGenerateServiceName, absl::Now() + absl::Seconds(1));
      if (s.ok() && *s == serving) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  std::vector<int32_t> Encode(const std::string& s) { return *tokenizer_->Encode(s); }

  void SetScript(const std::string& answer, absl::Duration interval = absl::Milliseconds(2)) {
    std::vector<int32_t> tokens = Encode(answer);
    const int32_t im_end = *tokenizer_->TokenToId("<|im_end|>");
    tokens.push_back(im_end);
    cluster_.SetScript({.tokens = tokens,
                        .finish = v1::FINISH_REASON_STOP,
                        .matched_stop_token_id = im_end,
                        .token_interval = interval});
  }

  static v1::GenerateRequest TextRequest(const std::string& text, int max_tokens = 64) {
    v1::GenerateRequest r;
    r.set_text(text);
    r.mutable_sampling()->set_max_tokens(max_tokens);
    r.mutable_sampling()->set_temperature(0);
    return r;
  }

  // Runs Generate to the end. `on_response` returning false cancels the call there.
  Result Generate(const v1::GenerateRequest& request, absl::Duration timeout = absl::Seconds(10),
                  const std::function<bool(const v1::GenerateResponse&)>& on_response = {}) {
    Result result;
    const absl::Time start = absl::Now();
    grpc::ClientContext ctx;
    rpc::SetTimeout(ctx, timeout);
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
        stub_->Generate(&ctx, request);
    v1::GenerateResponse response;
    bool cancelled = false;
    while (reader->Read(&response)) {
      result.responses.push_back(response);
      if (response.has_chunk()) {
        result.text += response.chunk().text();
        result.tokens.insert(result.tokens.end(), response.chunk().token_ids().begin(),
                             response.chunk().token_ids().end());
      } else if (response.has_final()) {
        result.final = response.final();
      } else if (response.has_error()) {
        result.error = response.error();
      }
      if (!cancelled && on_response && !on_response(response)) {
        ctx.TryCancel();
        cancelled = true;
      }
    }
    result.status = reader->Finish();
    result.elapsed = absl::Now() - start;
    return result;
  }

  std::string Scrape() { return HttpGet(router_->metrics_address(), "/metrics"); }

  static text::Tokenizer* tokenizer_;
  bool with_metrics_ = false;
  FakeCluster cluster_;
  std::unique_ptr<Router> router_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::GenerateService::Stub> stub_;
  std::vector<std::unique_ptr<FakePrefillWorker>> prefills_;
  std::vector<std::unique_ptr<FakeDecodeWorker>> decodes_;
};

text::Tokenizer* RouterIntegrationTest::tokenizer_ = nullptr;

// The same, with /metrics served.
class RouterMetricsTest : public RouterIntegrationTest {
 protected:
  RouterMetricsTest() { with_metrics_ = true; }
};

TEST_F(RouterIntegrationTest, HealthNeedsAPrefillAndADecodeWorker) {
  EXPECT_TRUE(WaitHealth(false));
  // The process itself serves from the start.
  EXPECT_TRUE(rpc::CheckHealth(*channel_, "", absl::Now() + absl::Seconds(2)).value_or(false));
  FakeDecodeWorker& decode = AddDecode({});
  EXPECT_TRUE(WaitHealth(false));
  AddPrefill({});
  EXPECT_TRUE(WaitHealth(true));
  // A decode worker that goes silent makes the cluster unhealthy; it recovers when the
  // worker is replaced.
  decode.StopHeartbeats();
  EXPECT_TRUE(WaitHealth(false));
  AddDecode({.id = "decode-b"});
  EXPECT_TRUE(WaitHealth(true));
}

TEST_F(RouterIntegrationTest, HappyPathTextToTokensToText) {
  FakeDecodeWorker& decode = AddDecode({});
  FakePrefillWorker& prefill = AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  const std::string answer = "Linear attention keeps a fixed-size state. 线性注意力 🦙!";
  SetScript(answer);

  v1::GenerateRequest request = TextRequest("What is linear attention?");
  request.set_request_id("happy-1");
  Result r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.final.has_value());
  EXPECT_EQ(r.text, answer);
  const std::vector<int32_t> script = cluster_.script().tokens;
  EXPECT_EQ(r.tokens, script);
  EXPECT_EQ(r.final->finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(r.final->matched_stop_token_id(), script.back());
  const std::vector<int32_t> prompt = Encode("What is linear attention?");
  EXPECT_EQ(r.final->usage().prompt_tokens(), prompt.size());
  EXPECT_EQ(r.final->usage().completion_tokens(), script.size());
  EXPECT_EQ(r.final->served_by().router_id(), "router-test");
  EXPECT_EQ(r.final->served_by().prefill_worker_id(), "prefill-a");
  EXPECT_EQ(r.final->served_by().decode_worker_id(), "decode-a");
  EXPECT_EQ(r.final->tier(), "standard");
  EXPECT_EQ(r.final->prefill_num_iter(), 10);
  EXPECT_EQ(r.final->decode_num_iter(), 10);
  EXPECT_GT(r.final->timings().total_ms(), 0);
  EXPECT_GT(r.final->timings().ttft_ms(), 0);
  EXPECT_DOUBLE_EQ(r.final->timings().prefill_ms(), 2.0);
  EXPECT_DOUBLE_EQ(r.final->timings().decode_ms(), 3.0);
  // Every response carries the id; usage is cumulative.
  uint32_t last_usage = 0;
  for (const v1::GenerateResponse& resp : r.responses) {
    EXPECT_EQ(resp.request_id(), "happy-1");
    if (resp.has_chunk()) {
      EXPECT_GE(resp.chunk().usage().completion_tokens(), last_usage);
      last_usage = resp.chunk().usage().completion_tokens();
      EXPECT_EQ(resp.chunk().usage().prompt_tokens(), prompt.size());
    }
  }
  EXPECT_TRUE(r.responses.back().has_final());

  // What the workers saw: token ids only, the resolved parameters.
  ASSERT_EQ(prefill.prefills().size(), 1u);
  const worker::v1::PrefillRequest p = prefill.prefills()[0];
  EXPECT_EQ(std::vector<int32_t>(p.token_ids().begin(), p.token_ids().end()), prompt);
  EXPECT_EQ(p.prefill_num_iter(), 10);
  EXPECT_EQ(p.tier(), "standard");
  EXPECT_EQ(p.priority(), 5);
  EXPECT_EQ(p.ticket().decode_worker_id(), "decode-a");
  ASSERT_EQ(decode.reserves().size(), 1u);
  EXPECT_EQ(decode.reserves()[0].prompt_tokens(), prompt.size());
  EXPECT_EQ(decode.reserves()[0].max_new_tokens(), 64u);
  ASSERT_EQ(decode.decodes().size(), 1u);
  const worker::v1::StartDecodeRequest d = decode.decodes()[0];
  EXPECT_EQ(d.transfer_id(), p.ticket().transfer_id());
  EXPECT_EQ(d.decode_num_iter(), 10);
  EXPECT_FLOAT_EQ(d.sampling().temperature(), 0.0f);
  // EOS (from the tokenizer, no model dir here) is among the stop ids.
  EXPECT_THAT(std::vector<int32_t>(d.sampling().stop_token_ids().begin(),
                                   d.sampling().stop_token_ids().end()),
              ::testing::Contains(script.back()));
  EXPECT_TRUE(decode.aborts().empty());
  EXPECT_TRUE(decode.releases().empty());

  // Chat input and a tier with other num_iter, with a per-request override clamped.
  v1::GenerateRequest chat;
  v1::ChatMessage* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("Hi!");
  chat.mutable_chat()->set_enable_thinking(false);
  chat.set_tier("interactive");
  chat.set_decode_num_iter(99);
  r = Generate(chat);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, answer);
  EXPECT_EQ(r.final->tier(), "interactive");
  EXPECT_EQ(r.final->prefill_num_iter(), 30);
  EXPECT_EQ(r.final->decode_num_iter(), 30);
  const worker::v1::PrefillRequest p2 = prefill.prefills().back();
  EXPECT_EQ(
      std::vector<int32_t>(p2.token_ids().begin(), p2.token_ids().end()),
      Encode("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  EXPECT_EQ(p2.priority(), 10);
  EXPECT_EQ(decode.decodes().back().decode_num_iter(), 30);
}

TEST_F(RouterIntegrationTest, MaxTokensEndsWithLength) {
  AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("one two three four five six seven eight nine ten");
  Result r = Generate(TextRequest("Count", 4));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.final->finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.tokens.size(), 4u);
  EXPECT_EQ(r.text, "one two three four");
}

TEST_F(RouterIntegrationTest, LogprobsTravelWithTokens) {
  AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("a b c");
  v1::GenerateRequest request = TextRequest("x");
  request.mutable_sampling()->set_logprobs(true);
  Result r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::vector<float> logprobs;
  for (const v1::GenerateResponse& resp : r.responses) {
    if (!resp.has_chunk()) continue;
    ASSERT_EQ(resp.chunk().logprobs_size(), resp.chunk().token_ids_size());
    for (const v1::TokenLogprob& lp : resp.chunk().logprobs()) logprobs.push_back(lp.logprob());
  }
  ASSERT_EQ(logprobs.size(), r.tokens.size());
  EXPECT_FLOAT_EQ(logprobs[0], -0.25f);  // the prefill's first token
  EXPECT_FLOAT_EQ(logprobs[1], -0.5f);
}

TEST_F(RouterIntegrationTest, StopStringAcrossTokensAbortsTheDecode) {
  FakeDecodeWorker& decode = AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  const std::string answer = "The result is: END OF ANSWER and then a lot more text follows";
  SetScript(answer, absl::Milliseconds(5));
  // "END OF" spans several tokens; nothing of it, or after it, reaches the client.
  const std::vector<int32_t> stop_tokens = Encode(" END OF");
  ASSERT_GT(stop_tokens.size(), 1u);
  v1::GenerateRequest request = TextRequest("Go");
  request.set_request_id("stop-1");
  request.mutable_sampling()->add_stop("never matches");
  request.mutable_sampling()->add_stop("END OF");
  Result r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.final.has_value());
  EXPECT_EQ(r.text, "The result is: ");
  EXPECT_EQ(r.final->finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(r.final->matched_stop(), "END OF");
  EXPECT_LT(r.tokens.size(), cluster_.script().tokens.size());
  EXPECT_EQ(r.final->usage().completion_tokens(), r.tokens.size());
  // The decode worker was told to stop.
  EXPECT_TRUE(decode.WaitAbort("stop-1", absl::Now() + absl::Seconds(5)));
}

TEST_F(RouterMetricsTest, FailedPrefillWorkerIsRetriedOnAnother) {
  FakeDecodeWorker& decode = AddDecode({});
  FakePrefillWorker& bad = AddPrefill({.id = "prefill-a", .error = grpc::StatusCode::UNAVAILABLE});
  FakePrefillWorker& good = AddPrefill({.id = "prefill-b"});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("fine");
  v1::GenerateRequest request = TextRequest("Hello");
  request.set_request_id("retry-1");
  Result r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, "fine");
  EXPECT_EQ(bad.prefills().size(), 1u);
  EXPECT_EQ(good.prefills().size(), 1u);
  EXPECT_EQ(r.final->served_by().prefill_worker_id(), "prefill-b");
  // The first reservation was given back; the second attempt has an id of its own.
  ASSERT_EQ(decode.reserves().size(), 2u);
  EXPECT_EQ(decode.reserves()[0].request_id(), "retry-1");
  EXPECT_EQ(decode.reserves()[1].request_id(), "retry-1#2");
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (decode.releases().empty() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_FALSE(decode.releases().empty());
  EXPECT_EQ(decode.releases()[0].request_id(), "retry-1");
  EXPECT_EQ(decode.releases()[0].transfer_id(), bad.prefills()[0].ticket().transfer_id());
  EXPECT_GE(
      MetricValue(Scrape(), "gka_retries_total{reason=\"prefill_unavailable\",tier=\"standard\"}"),
      1);
}

TEST_F(RouterIntegrationTest, PrefillWorkerThatDiesIsRetriedOnAnother) {
  AddDecode({});
  FakePrefillWorker& dying = AddPrefill({.id = "prefill-a", .die_on_prefill = true});
  AddPrefill({.id = "prefill-b"});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("survived");
  Result r = Generate(TextRequest("Hello"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, "survived");
  EXPECT_TRUE(dying.dead());
  EXPECT_EQ(r.final->served_by().prefill_worker_id(), "prefill-b");
}

TEST_F(RouterIntegrationTest, AllPrefillWorkersFailingIsRetryableUnavailable) {
  AddDecode({});
  AddPrefill({.id = "prefill-a", .error = grpc::StatusCode::UNAVAILABLE});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("x");
  Result r = Generate(TextRequest("Hello"));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
  ASSERT_TRUE(r.error.has_value());
  EXPECT_TRUE(r.error->retryable());
  EXPECT_EQ(r.error->code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
}

TEST_F(RouterIntegrationTest, FullDecodeWorkerSendsTheRequestToAnother) {
  // The full one has more reported room, so it is asked first.
  FakeDecodeWorker& full = AddDecode({.id = "decode-a",
                                      .total_kv_pages = 5000,
                                      .reserve_error = grpc::StatusCode::RESOURCE_EXHAUSTED});
  AddDecode({.id = "decode-b", .total_kv_pages = 100});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("placed");
  Result r = Generate(TextRequest("Hello"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.final->served_by().decode_worker_id(), "decode-b");
  EXPECT_EQ(full.reserves().size(), 1u);
}

// A colocated worker serves alone: the cluster is healthy without a prefill worker, and a
// request is one StartDecode carrying the prompt (no Reserve, no Prefill); its DecodeStarted
// is the first token, with the prefill's num_iter and timings.
TEST_F(RouterIntegrationTest, ColocatedWorkerServesWithoutReserveOrPrefill) {
  EXPECT_TRUE(WaitHealth(false));
  FakeDecodeWorker& colocated = AddDecode({.id = "colocated-a", .colocated = true});
  ASSERT_TRUE(WaitHealth(true));
  const std::string answer = "prefilled here";
  SetScript(answer);
  v1::GenerateRequest request = TextRequest("What is linear attention?");
  request.set_request_id("colocated-1");
  request.mutable_sampling()->set_logprobs(true);
  Result r = Generate(request);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.final.has_value());
  EXPECT_EQ(r.text, answer);
  EXPECT_EQ(r.tokens, cluster_.script().tokens);
  EXPECT_EQ(r.final->served_by().decode_worker_id(), "colocated-a");
  EXPECT_EQ(r.final->served_by().prefill_worker_id(), "colocated-a");
  EXPECT_GT(r.final->timings().ttft_ms(), 0);
  EXPECT_DOUBLE_EQ(r.final->timings().prefill_ms(), 2.5);
  EXPECT_EQ(colocated.reserves().size(), 0u);
  ASSERT_EQ(colocated.decodes().size(), 1u);
  const worker::v1::StartDecodeRequest sd = colocated.decodes()[0];
  EXPECT_EQ(std::vector<int32_t>(sd.prompt_token_ids().begin(), sd.prompt_token_ids().end()),
            Encode("What is linear attention?"));
  EXPECT_EQ(sd.transfer_id(), 0u);
  EXPECT_EQ(r.final->prefill_num_iter(), sd.prefill_num_iter());
  // The first token's logprob came with DecodeStarted.
  ASSERT_TRUE(r.responses.front().has_chunk());
  ASSERT_GE(r.responses.front().chunk().logprobs_size(), 1);
  EXPECT_FLOAT_EQ(r.responses.front().chunk().logprobs(0).logprob(), -0.25f);
}

// A full colocated worker (RESOURCE_EXHAUSTED from its StartDecode) sends the request to
// another; one that dies before the first token is retried elsewhere too.
TEST_F(RouterIntegrationTest, FullOrDeadColocatedWorkerSendsTheRequestToAnother) {
  FakeDecodeWorker& full = AddDecode({.id = "colocated-a",
                                      .total_kv_pages = 5000,
                                      .reserve_error = grpc::StatusCode::RESOURCE_EXHAUSTED,
                                      .colocated = true});
  AddDecode({.id = "colocated-b", .total_kv_pages = 100, .colocated = true});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("placed");
  Result r = Generate(TextRequest("Hello"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.final->served_by().decode_worker_id(), "colocated-b");
  EXPECT_EQ(full.decodes().size(), 1u);
  full.Die();
  SetScript("still placed");
  r = Generate(TextRequest("Again"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.final->served_by().decode_worker_id(), "colocated-b");
}

// Cancelling the client's call aborts the colocated sequence on its worker.
TEST_F(RouterIntegrationTest, ClientCancelReachesTheColocatedWorker) {
  FakeDecodeWorker& colocated = AddDecode({.id = "colocated-a", .colocated = true});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("a b c d e f g h i j k l m n o p q r s t u v w x y z", absl::Milliseconds(50));
  v1::GenerateRequest request = TextRequest("Go", 200);
  request.set_request_id("cancel-colocated");
  int chunks = 0;
  Result r = Generate(request, absl::Seconds(10),
                      [&](const v1::GenerateResponse&) { return ++chunks < 2; });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(colocated.WaitAbort("cancel-colocated", absl::Now() + absl::Seconds(5)));
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while ((router_->core().RunningRequests() > 0 || colocated.open_streams() > 0) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(router_->core().RunningRequests(), 0u);
  EXPECT_EQ(colocated.open_streams(), 0);
}

TEST_F(RouterIntegrationTest, DecodeWorkerDeathMidStreamIsRetryableUnavailable) {
  FakeDecodeWorker& dying =
      AddDecode({.id = "decode-a", .total_kv_pages = 5000, .die_after_tokens = 3});
  AddDecode({.id = "decode-b", .total_kv_pages = 100});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("one two three four five six seven eight nine ten eleven twelve",
            absl::Milliseconds(20));
  Result r = Generate(TextRequest("Count"), absl::Seconds(20));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
  ASSERT_TRUE(r.error.has_value());
  EXPECT_TRUE(r.error->retryable());
  EXPECT_THAT(r.error->message(), HasSubstr("decode-a"));
  EXPECT_FALSE(r.tokens.empty());          // tokens were streamed before the death
  EXPECT_LT(r.elapsed, absl::Seconds(5));  // well within the deadline: no hang
  EXPECT_TRUE(dying.dead());
  // The router keeps serving on the surviving worker.
  SetScript("still here");
  r = Generate(TextRequest("Again"));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.text, "still here");
  EXPECT_EQ(r.final->served_by().decode_worker_id(), "decode-b");
}

TEST_F(RouterIntegrationTest, FrozenDecodeWorkerFailsItsRequestsByHeartbeat) {
  // The stream stays open (a frozen process keeps its sockets), but heartbeats stop: the
  // router gives up on the worker after the heartbeat timeout instead of hanging.
  FakeDecodeWorker& frozen = AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("a b c d e f g h i j k l m n o p q r s t u v w x y z", absl::Milliseconds(200));
  v1::GenerateRequest request = TextRequest("Go", 200);
  request.set_request_id("frozen-1");
  bool stopped = false;
  Result r = Generate(request, absl::Seconds(20), [&](const v1::GenerateResponse& resp) {
    if (!stopped && resp.has_chunk()) {
      stopped = true;
      frozen.StopHeartbeats();
    }
    return true;
  });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
  ASSERT_TRUE(r.error.has_value());
  EXPECT_TRUE(r.error->retryable());
  EXPECT_THAT(r.error->message(), HasSubstr("heartbeats"));
  EXPECT_LT(r.elapsed, absl::Seconds(4));
  EXPECT_TRUE(frozen.WaitAbort("frozen-1", absl::Now() + absl::Seconds(5)));
}

TEST_F(RouterIntegrationTest, ApiKeyGuardsThePublicApiButNotRegistration) {
  router_.reset();
  StartRouter({.api_key = "s3cret"});
  AddDecode({});  // registers without a key
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));  // health is exempt too
  SetScript("authorized");
  Result denied = Generate(TextRequest("Hi"));
  EXPECT_EQ(denied.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);

  grpc::ClientContext ctx;
  rpc::SetTimeout(ctx, absl::Seconds(10));
  ctx.AddMetadata("authorization", "Bearer s3cret");
  auto reader = stub_->Generate(&ctx, TextRequest("Hi"));
  v1::GenerateResponse response;
  std::string text;
  while (reader->Read(&response)) text += response.chunk().text();
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(text, "authorized");
}

TEST_F(RouterMetricsTest, ClientCancelReachesTheDecodeWorker) {
  FakeDecodeWorker& decode = AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("a b c d e f g h i j k l m n o p q r s t u v w x y z", absl::Milliseconds(50));
  v1::GenerateRequest request = TextRequest("Go", 200);
  request.set_request_id("cancel-1");
  int chunks = 0;
  Result r = Generate(request, absl::Seconds(10),
                      [&](const v1::GenerateResponse& resp) { return ++chunks < 2; });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(decode.WaitAbort("cancel-1", absl::Now() + absl::Seconds(5)));
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while ((router_->core().RunningRequests() > 0 || decode.open_streams() > 0) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(router_->core().RunningRequests(), 0u);
  EXPECT_EQ(decode.open_streams(), 0);
  EXPECT_GE(MetricValue(Scrape(), "gka_requests_total{code=\"CANCELLED\",tier=\"standard\"}"), 1);
}

TEST_F(RouterIntegrationTest, DeadlineReachesBothWorkers) {
  FakeDecodeWorker& decode = AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("a b c d e f g h i j k l m n o p", absl::Milliseconds(100));
  v1::GenerateRequest request = TextRequest("Go", 200);
  request.set_request_id("deadline-1");
  Result r = Generate(request, absl::Milliseconds(400));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(decode.WaitAbort("deadline-1", absl::Now() + absl::Seconds(5)));
  // The decode call carried the client's deadline.
  ASSERT_EQ(decode.decodes().size(), 1u);
}

TEST_F(RouterIntegrationTest, PublicAbortEndsTheStream) {
  FakeDecodeWorker& decode = AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("a b c d e f g h i j k l m n o p", absl::Milliseconds(50));
  v1::GenerateRequest request = TextRequest("Go", 200);
  request.set_request_id("abort-1");
  bool aborted = false;
  Result r = Generate(request, absl::Seconds(10), [&](const v1::GenerateResponse& resp) {
    if (!aborted && resp.has_chunk()) {
      aborted = true;
      grpc::ClientContext ctx;
      v1::AbortRequest a;
      a.set_request_id("abort-1");
      v1::AbortResponse out;
      EXPECT_TRUE(stub_->Abort(&ctx, a, &out).ok());
      EXPECT_TRUE(out.found());
    }
    return true;
  });
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_TRUE(r.final.has_value());
  EXPECT_EQ(r.final->finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_TRUE(decode.WaitAbort("abort-1", absl::Now() + absl::Seconds(5)));
  // Unknown ids are reported as such.
  grpc::ClientContext ctx;
  v1::AbortRequest a;
  a.set_request_id("no-such-request");
  v1::AbortResponse out;
  ASSERT_TRUE(stub_->Abort(&ctx, a, &out).ok());
  EXPECT_FALSE(out.found());
}

TEST_F(RouterMetricsTest, BadRequestsNameTheFieldAndTheServerKeepsServing) {
  AddDecode({.max_context_tokens = 64});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("ok");
  struct Case {
    std::function<void(v1::GenerateRequest&)> mutate;
    const char* field;
  };
  const std::vector<Case> cases = {
      {[](v1::GenerateRequest& r) { r.set_text(""); }, "text: the prompt is empty"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_max_tokens(0); },
       "sampling.max_tokens: 0 must be >= 1"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_max_tokens(100); },
       "exceeds the model context of 64"},
      {[](v1::GenerateRequest& r) { r.set_text(std::string(80, '7')); },
       "leaves no room in the model context of 64"},
      {[](v1::GenerateRequest& r) { r.set_tier("platinum"); }, "tier: unknown tier 'platinum'"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-1); },
       "sampling.temperature"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(1.5f); },
       "sampling.top_p: 1.5 is outside (0, 1]"},
      {[](v1::GenerateRequest& r) { r.set_text(std::string("caf\xC3", 4)); },
       "text: invalid UTF-8 at byte 3"},
      {[](v1::GenerateRequest& r) { r.set_model("not-this-one"); }, "model: unknown model"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = TextRequest("Hello", 8);
    c.mutate(request);
    Result r = Generate(request);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.field << ": " << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), HasSubstr(c.field));
    ASSERT_TRUE(r.error.has_value()) << c.field;
    EXPECT_FALSE(r.error->retryable());
    EXPECT_EQ(r.error->code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  }
  // Still serving.
  Result ok = Generate(TextRequest("Hello", 8));
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_EQ(ok.text, "ok");
  EXPECT_GE(
      MetricValue(Scrape(), "gka_requests_total{code=\"INVALID_ARGUMENT\",tier=\"standard\"}"), 8);
}

TEST_F(RouterIntegrationTest, TokenizeAndModelInfo) {
  AddDecode({.max_context_tokens = 512});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  grpc::ClientContext ctx;
  v1::TokenizeRequest t;
  t.set_text("Hello world");
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(stub_->Tokenize(&ctx, t, &tokens).ok());
  EXPECT_THAT(std::vector<int32_t>(tokens.token_ids().begin(), tokens.token_ids().end()),
              ::testing::ElementsAre(9707, 1879));
  grpc::ClientContext bad_ctx;
  t.set_text(std::string("\xFF", 1));
  const grpc::Status bad = stub_->Tokenize(&bad_ctx, t, &tokens);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("text: invalid UTF-8"));

  grpc::ClientContext info_ctx;
  v1::GetModelInfoResponse info;
  ASSERT_TRUE(stub_->GetModelInfo(&info_ctx, {}, &info).ok());
  EXPECT_EQ(info.model(), "qwen3-fake");  // from the workers: the router has no --model
  EXPECT_EQ(info.max_context_tokens(), 512);
  EXPECT_EQ(info.vocab_size(), 151936);
  EXPECT_TRUE(info.has_tokenizer());
  EXPECT_EQ(info.default_tier(), "standard");
  EXPECT_EQ(info.tiers_size(), 3);
}

TEST_F(RouterMetricsTest, MetricsExposeTheRouterSeries) {
  AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("metrics please");
  ASSERT_TRUE(Generate(TextRequest("Hi")).status.ok());
  const std::string scrape = Scrape();
  ASSERT_FALSE(scrape.empty());
  EXPECT_EQ(MetricValue(scrape, "gka_requests_total{code=\"OK\",tier=\"standard\"}"), 1);
  // Pre-created at zero: every tier x code.
  EXPECT_EQ(MetricValue(scrape, "gka_requests_total{code=\"UNAVAILABLE\",tier=\"batch\"}"), 0);
  EXPECT_EQ(MetricValue(scrape, "gka_request_errors_total{code=\"INTERNAL\",tier=\"interactive\"}"),
            0);
  EXPECT_EQ(MetricValue(scrape, "gka_workers{role=\"decode\",state=\"healthy\"}"), 1);
  EXPECT_EQ(MetricValue(scrape, "gka_workers{role=\"prefill\",state=\"healthy\"}"), 1);
  EXPECT_EQ(MetricValue(scrape, "gka_ttft_seconds_count{tier=\"standard\"}"), 1);
  EXPECT_EQ(MetricValue(scrape, "gka_e2e_latency_seconds_count{tier=\"standard\"}"), 1);
  EXPECT_EQ(MetricValue(scrape, "gka_queue_seconds_count{tier=\"standard\"}"), 1);
  EXPECT_EQ(MetricValue(scrape, "gka_generated_tokens_total{tier=\"standard\"}"),
            cluster_.script().tokens.size());
  EXPECT_EQ(MetricValue(scrape, "gka_prompt_tokens_total{tier=\"standard\"}"), Encode("Hi").size());
  EXPECT_EQ(MetricValue(scrape, "gka_requests_running{tier=\"standard\"}"), 0);
  EXPECT_EQ(MetricValue(scrape, "gka_num_iter_count{phase=\"decode\",tier=\"standard\"}"), 1);
  EXPECT_GE(MetricValue(scrape, "gka_itl_seconds_count{tier=\"standard\"}"), 1);
  EXPECT_EQ(MetricValue(scrape, "gka_retries_total{reason=\"decode_full\",tier=\"batch\"}"), 0);
  // What Prometheus accepts, lint included.
  if (std::system("command -v promtool >/dev/null 2>&1") == 0) {
    FILE* promtool = popen("promtool check metrics", "w");
    ASSERT_NE(promtool, nullptr);
    fwrite(scrape.data(), 1, scrape.size(), promtool);
    EXPECT_EQ(pclose(promtool), 0);
  }
}

TEST_F(RouterIntegrationTest, ConcurrentRequestsOfMixedTiers) {
  AddDecode({.id = "decode-a"});
  AddDecode({.id = "decode-b"});
  AddPrefill({.id = "prefill-a"});
  AddPrefill({.id = "prefill-b"});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("the same answer for everyone", absl::Milliseconds(3));
  const char* tiers[] = {"interactive", "standard", "batch"};
  std::vector<std::thread> threads;
  std::vector<Result> results(16);
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest request = TextRequest(absl::StrCat("prompt ", i));
      request.set_tier(tiers[i % 3]);
      results[i] = Generate(request);
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<std::string> decode_used;
  for (int i = 0; i < 16; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    EXPECT_EQ(results[i].text, "the same answer for everyone");
    EXPECT_EQ(results[i].final->tier(), tiers[i % 3]);
    decode_used.insert(results[i].final->served_by().decode_worker_id());
  }
  EXPECT_EQ(decode_used.size(), 2u);  // placement spreads a burst
  EXPECT_EQ(router_->core().RunningRequests(), 0u);
}

TEST_F(RouterIntegrationTest, DrainRefusesNewRequestsAndFinishesRunningOnes) {
  AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("a b c d e f g h", absl::Milliseconds(30));
  Result running;
  std::thread client([&] { running = Generate(TextRequest("long one")); });
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (router_->core().RunningRequests() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  std::thread drain([&] { router_->Drain(absl::Seconds(10)); });
  // While draining, the cluster is NOT_SERVING and new calls are refused (retryable).
  EXPECT_TRUE(WaitHealth(false));
  client.join();
  drain.join();
  ASSERT_TRUE(running.status.ok()) << running.status.error_message();
  EXPECT_EQ(running.text, "a b c d e f g h");
}

TEST_F(RouterIntegrationTest, WithoutATokenizerTokenIdsStillWork) {
  router_.reset();
  StartRouter({}, /*with_tokenizer=*/false);
  AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  cluster_.SetScript({.tokens = {11, 12, 13}, .finish = v1::FINISH_REASON_LENGTH});
  Result text = Generate(TextRequest("Hello"));
  EXPECT_EQ(text.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(text.status.error_message(), HasSubstr("needs a tokenizer"));

  v1::GenerateRequest ids;
  ids.mutable_token_ids()->add_ids(1);
  ids.mutable_token_ids()->add_ids(2);
  ids.mutable_sampling()->add_stop("x");
  Result stop = Generate(ids);
  EXPECT_EQ(stop.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(stop.status.error_message(), HasSubstr("sampling.stop"));

  ids.mutable_sampling()->clear_stop();
  Result ok = Generate(ids);
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  EXPECT_THAT(ok.tokens, ::testing::ElementsAre(11, 12, 13));
  EXPECT_EQ(ok.text, "");
}

TEST_F(RouterIntegrationTest, DuplicateRunningRequestIdIsRefused) {
  AddDecode({});
  AddPrefill({});
  ASSERT_TRUE(WaitHealth(true));
  SetScript("a b c d e f g h", absl::Milliseconds(30));
  v1::GenerateRequest request = TextRequest("first");
  request.set_request_id("dup");
  Result first;
  std::thread client([&] { first = Generate(request); });
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (router_->core().RunningRequests() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  Result second = Generate(request);
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(second.status.error_message(), HasSubstr("request_id"));
  client.join();
  EXPECT_TRUE(first.status.ok()) << first.status.error_message();
}

// The binary: flags, the start-up JSON line, SIGTERM drain and exit 0.
TEST(GkaRouterBinaryTest, PrintsItsAddressesAndDrainsOnSigterm) {
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  const std::string binary = GKA_ROUTER_BINARY;
  std::vector<std::string> args = {
      binary, "--port",           "0",           "--metrics-port",
      "0",    "--tokenizer",      kTokenizerDir, "--heartbeat-timeout-ms",
      "600",  "--drain-grace-ms", "2000", "--insecure"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  FILE* stream = fdopen(out[0], "r");
  char line[512] = {0};
  ASSERT_NE(fgets(line, sizeof(line), stream), nullptr);
  const std::string json = line;
  EXPECT_THAT(json, HasSubstr("\"role\":\"router\""));
  EXPECT_THAT(json, HasSubstr(absl::StrCat("\"pid\":", pid)));
  EXPECT_THAT(json, HasSubstr("\"internal\":\"127.0.0.1:"));  // where workers register
  const size_t at = json.find("\"grpc\":\"") + 8;
  const std::string grpc_address = json.substr(at, json.find('"', at) - at);
  const size_t m = json.find("\"metrics\":\"") + 11;
  const std::string metrics_address = json.substr(m, json.find('"', m) - m);
  auto channel = rpc::CreateChannel(grpc_address, {});
  EXPECT_TRUE(rpc::CheckHealth(*channel, "", absl::Now() + absl::Seconds(5)).value_or(false));
  // No workers: the cluster is not ready.
  EXPECT_FALSE(
      rpc::CheckHealth(*channel, std::string(kGenerateServiceName), absl::Now() + absl::Seconds(5))
          .value_or(true));
  EXPECT_THAT(HttpGet(metrics_address, "/metrics"), HasSubstr("gka_workers"));

  const absl::Time start = absl::Now();
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  fclose(stream);
}

}  // namespace
}  // namespace gka::router
