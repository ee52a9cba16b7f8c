// The C++ SDK against a live local cluster (`gka local`: router + prefill + decode worker as
// real processes on 127.0.0.1, the tiny model, an API key): generate, stream, chat, cancel,
// deadline, abort, auth failure, retry after a killed prefill worker, and the examples.
// Python runs the same behaviours in test_cluster.py.
//
// The binaries (gka, gka-router, the workers, the examples) come from the build that made
// this test ($GKA_SDK_BIN_DIR and $GKA_SDK_EXAMPLES_DIR override). Each test program starts its
// own cluster (ctest runs every case alone).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gka/sdk/client.h"

namespace gka::sdk {
namespace {

constexpr char kApiKey[] = "sdk-cluster-test-key";

// Starts `argv` in its own process group; stdout and stderr go to `log` ("" keeps ours), or
// stdout to a pipe whose read end is returned in *stdout_pipe. posix_spawn, not fork: a
// forked child of a process with gRPC threads may trip gRPC's fork handlers. With
// `die_with_us` (only before any gRPC call: it forks) the process gets SIGTERM when we die.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log, int* stdout_pipe,
            bool die_with_us = false) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  if (die_with_us) {
    const pid_t pid = fork();
    if (pid != 0) return pid;
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execv(args[0], args.data());
    _exit(127);
  }
  int fds[2] = {-1, -1};
  if (stdout_pipe != nullptr && pipe(fds) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!log.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  if (stdout_pipe != nullptr) {
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  if (posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (stdout_pipe != nullptr) {
    close(fds[1]);
    *stdout_pipe = fds[0];
  }
  return pid;
}

std::string Env(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : fallback;
}

// The exit code of `pid`; -1 when it did not start or died of a signal.
int Wait(pid_t pid) {
  if (pid <= 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// GET http://<address>/metrics, summed over the samples of `metric`; -1 when unreachable.
double ScrapeSum(const std::string& address, const std::string& metric) {
  std::pair<std::string, std::string> hp = absl::StrSplit(address, absl::MaxSplits(':', 1));
  int port = 0;
  if (!absl::SimpleAtoi(hp.second, &port)) return -1;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, hp.first.c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string body;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) body.append(buf, n);
  close(fd);
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (!absl::StartsWith(line, metric + "{") && !absl::StartsWith(line, metric + " ")) continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) sum += v;
  }
  return sum;
}

// A `gka local` cluster on the tiny model for this test program.
class Cluster {
 public:
  bool Start(const std::string& bin) {
    bin_ = bin;
    char tmpl[] = "/tmp/gka-sdk-cluster-XXXXXX";
    dir_ = mkdtemp(tmpl);
    model_ = dir_ + "/model";
    if (Wait(Spawn({bin + "/gka", "make-tiny-model", "--out", model_}, dir_ + "/make.log", nullptr,
                   /*die_with_us=*/true)) != 0) {
      return Fail("make-tiny-model failed");
    }
    setenv("GKA_API_KEY", kApiKey, 1);  // the router's key, and every client's default
    local_ = Spawn({bin + "/gka", "local", "--model", model_, "--port", "0", "--metrics-port", "0",
                    "--prefill-workers", "1", "--decode-workers", "1", "--state-file",
                    dir_ + "/state", "--log-dir", dir_},
                   dir_ + "/local.log", nullptr, /*die_with_us=*/true);
    for (int i = 0; i < 1200 && lines_.size() < 3; ++i) {
      if (waitpid(local_, nullptr, WNOHANG) == local_) return Fail("gka local exited");
      usleep(100'000);
      lines_.clear();
      for (absl::string_view l :
           absl::StrSplit(ReadAll(dir_ + "/state"), '\n', absl::SkipEmpty())) {
        lines_.push_back(nlohmann::json::parse(l, nullptr, false));
      }
    }
    if (lines_.size() < 3) return Fail("cluster not up within 120 s");
    auto client = Client::Create({.address = address()});
    return client.ok() && (*client)->WaitForReady(absl::Seconds(30)).ok();
  }

  ~Cluster() {
    for (pid_t p : extra_) {
      kill(-p, SIGKILL);  // its process group: timeout(1) and the worker
      waitpid(p, nullptr, 0);
    }
    for (int fd : extra_stdout_) close(fd);
    if (local_ > 0) {
      kill(Pid("prefill"), SIGCONT);
      kill(local_, SIGTERM);
      Wait(local_);
    }
    if (!dir_.empty() && !::testing::Test::HasFailure()) {
      (void)!system(("rm -rf " + dir_).c_str());
    }
  }

  std::string address() const { return Field("router", "grpc"); }
  std::string decode_metrics() const { return Field("decode", "metrics"); }
  pid_t Pid(const std::string& role) const {
    for (const auto& j : lines_) {
      if (j.value("role", "") == role) return j.value("pid", -1);
    }
    return -1;
  }
  const std::string& bin() const { return bin_; }
  const std::string& dir() const { return dir_; }

  // A prefill worker outside `gka local` (which stops the whole cluster when a child dies);
  // returns once it has registered. It registers on the router's internal port with the
  // certificate gka local made for processes beside the cluster (mutual TLS).
  pid_t StartExtraPrefill(const std::string& id) {
    int out = -1;
    const std::string tls = Field("router", "tls_dir");
    // timeout(1) bounds its life should this test die without killing it.
    const pid_t pid = Spawn(
        {"/usr/bin/timeout", "300", bin_ + "/gka-prefill-worker", "--model", model_, "--router",
         Field("router", "internal"), "--port", "0", "--metrics-port", "0", "--worker-id", id,
         "--tls-ca", tls + "/ca.pem", "--tls-cert", tls + "/client.pem", "--tls-key",
         tls + "/client.key"},
        dir_ + "/" + id + ".log", &out);
    extra_.push_back(pid);
    extra_stdout_.push_back(out);  // kept open: the worker may print more
    char c;
    while (read(out, &c, 1) == 1 && c != '\n') {  // its ready line
    }
    return pid;
  }

 private:
  bool Fail(const std::string& why) {
    std::cerr << why << "; logs in " << dir_ << "\n" << ReadAll(dir_ + "/local.log");
    return false;
  }
  std::string Field(const std::string& role, const std::string& key) const {
    for (const auto& j : lines_) {
      if (j.value("role", "") == role) return j.value(key, "");
    }
    return "";
  }

  std::string bin_, dir_, model_;
  pid_t local_ = -1;
  std::vector<nlohmann::json> lines_;
  std::vector<pid_t> extra_;
  std::vector<int> extra_stdout_;
};

class SdkClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster();
    if (!cluster_->Start(Env("GKA_SDK_BIN_DIR", GKA_SDK_BIN_DIR_DEFAULT))) {
      delete cluster_;
      cluster_ = nullptr;
      started_ = false;
    }
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(started_ && cluster_ != nullptr) << "the cluster did not start";
    auto client = Client::Create({.address = cluster_->address()});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  // Long enough to be cancelled midway: max_tokens well past what a few hundred ms produce.
  static Request LongRequest() {
    return Request::Text("Tell me a long story.",
                         {.max_tokens = 3000, .temperature = 0.0f, .ignore_eos = true});
  }

  // Waits until the decode worker holds no state slot (what every way out must restore).
  static bool SlotsFreed() {
    for (int i = 0; i < 100; ++i) {
      if (ScrapeSum(cluster_->decode_metrics(), "gka_state_slots_used") == 0) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  static Cluster* cluster_;
  static bool started_;
  std::unique_ptr<Client> client_;
};

Cluster* SdkClusterTest::cluster_ = nullptr;
bool SdkClusterTest::started_ = true;

TEST_F(SdkClusterTest, GenerateIsGreedyDeterministicAndReportsTheFinal) {
  const Request request = Request::Text("The capital of France is",
                                        {.max_tokens = 8, .temperature = 0.0f, .ignore_eos = true});
  absl::StatusOr<Result> a = client_->Generate(request);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->token_ids.size(), 8u);
  EXPECT_EQ(a->finish_reason, FinishReason::kLength);
  EXPECT_EQ(a->usage.completion_tokens, 8u);
  EXPECT_GT(a->usage.prompt_tokens, 0u);
  EXPECT_EQ(a->served_by.prefill_worker_id, "prefill-0");
  EXPECT_EQ(a->served_by.decode_worker_id, "decode-0");
  EXPECT_FALSE(a->served_by.router_id.empty());
  EXPECT_GT(a->timings.total_ms, 0);
  EXPECT_EQ(a->attempts, 1);
  absl::StatusOr<Result> b = client_->Generate(request);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->token_ids, b->token_ids);

  // The tier decides num_iter; a per-request override is reported back.
  absl::StatusOr<ModelInfo> info = client_->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  for (const TierInfo& tier : info->tiers) {
    Request r = request;
    r.tier = tier.name;
    absl::StatusOr<Result> t = client_->Generate(r);
    ASSERT_TRUE(t.ok()) << tier.name << ": " << t.status();
    EXPECT_EQ(t->tier, tier.name);
    EXPECT_EQ(t->num_iter.prefill, tier.num_iter.prefill) << tier.name;
    EXPECT_EQ(t->num_iter.decode, tier.num_iter.decode) << tier.name;
  }
}

TEST_F(SdkClusterTest, TopLogprobsListTheMostLikelyTokensFirst) {
  absl::StatusOr<Result> r = client_->Generate(Request::Text(
      "The capital of France is",
      {.max_tokens = 4, .temperature = 0.0f, .ignore_eos = true, .top_logprobs = 4}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->logprobs.size(), r->token_ids.size());
  for (size_t i = 0; i < r->logprobs.size(); ++i) {
    const TokenLogprob& lp = r->logprobs[i];
    EXPECT_EQ(lp.token_id, r->token_ids[i]);
    ASSERT_EQ(lp.top.size(), 4u) << i;
    // Greedy: the sampled token is the first alternative, with the same logprob.
    EXPECT_EQ(lp.top[0].token_id, lp.token_id) << i;
    EXPECT_EQ(lp.top[0].logprob, lp.logprob) << i;
    for (size_t k = 1; k < lp.top.size(); ++k) {
      EXPECT_LE(lp.top[k].logprob, lp.top[k - 1].logprob) << i;
      EXPECT_NE(lp.top[k].token_id, lp.top[0].token_id) << i;
    }
    EXPECT_FALSE(lp.top[0].text.empty()) << i;  // the router spells each alternative
  }
}

TEST_F(SdkClusterTest, StreamChunksAddUpToTheResult) {
  auto stream = client_->GenerateStream(Request::Text(
      "Once upon a time", {.max_tokens = 12, .temperature = 0.0f, .ignore_eos = true}));
  std::string text;
  TokenIds ids;
  Chunk chunk;
  uint32_t last_usage = 0;
  while (stream->Next(&chunk)) {
    text += chunk.text;
    ids.insert(ids.end(), chunk.token_ids.begin(), chunk.token_ids.end());
    EXPECT_GT(chunk.usage.completion_tokens, last_usage);
    last_usage = chunk.usage.completion_tokens;
  }
  absl::StatusOr<Result> r = stream->Finish();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, text);
  EXPECT_EQ(r->token_ids, ids);
  EXPECT_EQ(ids.size(), 12u);
}

TEST_F(SdkClusterTest, ChatTokenizeAndModelInfo) {
  absl::StatusOr<Result> r = client_->Chat(
      {ChatMessage::System("You are terse."), ChatMessage::User("What is linear attention?")},
      {.max_tokens = 16});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->usage.completion_tokens, 1u);
  EXPECT_TRUE(r->finish_reason == FinishReason::kStop || r->finish_reason == FinishReason::kLength);

  absl::StatusOr<TokenizeResult> t = client_->Tokenize("Hello, world!");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token_ids, (TokenIds{9707, 11, 1879, 0}));  // the real Qwen3 tokenizer
  absl::StatusOr<TokenizeResult> chat =
      client_->Tokenize(Chat{.messages = {ChatMessage::User("Hi")}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_NE(chat->prompt_text.find("<|im_start|>user\nHi<|im_end|>"), std::string::npos);

  absl::StatusOr<ModelInfo> info = client_->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->has_tokenizer);
  EXPECT_GT(info->vocab_size, 0);
  EXPECT_FALSE(info->tiers.empty());
}

TEST_F(SdkClusterTest, CancelAbortsTheRequestOnTheWorkers) {
  auto stream = client_->GenerateStream(LongRequest());
  Chunk chunk;
  ASSERT_TRUE(stream->Next(&chunk)) << stream->Finish().status();
  stream->Cancel();
  absl::StatusOr<Result> r = stream->Finish();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(SlotsFreed());
  absl::StatusOr<bool> running = client_->Abort(stream->request_id());
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_FALSE(*running) << "the router still runs the cancelled request";
}

TEST_F(SdkClusterTest, DeadlineEndsTheRequestEverywhere) {
  absl::StatusOr<Result> r = client_->Generate(LongRequest(), {.timeout = absl::Milliseconds(500)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(SlotsFreed());
}

TEST_F(SdkClusterTest, AbortByIdEndsTheStreamWithAbort) {
  auto stream = client_->GenerateStream(LongRequest());
  Chunk chunk;
  ASSERT_TRUE(stream->Next(&chunk)) << stream->Finish().status();
  absl::StatusOr<bool> found = client_->Abort(stream->request_id());
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_TRUE(*found);
  absl::StatusOr<Result> r = stream->Finish();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finish_reason, FinishReason::kAbort);
  EXPECT_LT(r->token_ids.size(), 3000u);
  EXPECT_TRUE(SlotsFreed());
}

TEST_F(SdkClusterTest, WrongOrMissingApiKeyIsUnauthenticated) {
  for (const std::string key : {"", "not-the-key"}) {
    auto client = Client::Create({.address = cluster_->address(), .api_key = key});
    ASSERT_TRUE(client.ok());
    absl::StatusOr<Result> r = (*client)->Generate(Request::Text("Hi", {.max_tokens = 2}));
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated) << r.status();
    EXPECT_EQ(GetErrorDetails(r.status())->attempts, 1);  // never retried
  }
}

TEST_F(SdkClusterTest, RetriesAfterAKilledPrefillWorker) {
  // No prefill worker left: gka local's is frozen (and declared lost by the router after its
  // heartbeat timeout), an extra one is killed. The SDK's retries carry the request over to
  // a prefill worker that starts a moment later.
  const pid_t extra = cluster_->StartExtraPrefill("prefill-extra-1");
  ASSERT_EQ(kill(cluster_->Pid("prefill"), SIGSTOP), 0);
  absl::SleepFor(absl::Milliseconds(4500));  // the router's heartbeat timeout is 3 s
  ASSERT_EQ(kill(-extra, SIGKILL), 0);
  std::thread replacement([] {
    absl::SleepFor(absl::Milliseconds(1500));
    cluster_->StartExtraPrefill("prefill-extra-2");
  });
  absl::StatusOr<Result> r = client_->Generate(
      Request::Text("Hello", {.max_tokens = 4, .temperature = 0.0f, .ignore_eos = true}),
      {.timeout = absl::Seconds(60),
       .retry = RetryPolicy{.max_attempts = 100,
                            .initial_backoff = absl::Milliseconds(200),
                            .max_backoff = absl::Milliseconds(500)}});
  replacement.join();
  kill(cluster_->Pid("prefill"), SIGCONT);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(r->attempts, 2);
  EXPECT_EQ(r->served_by.prefill_worker_id, "prefill-extra-2");
  EXPECT_EQ(r->token_ids.size(), 4u);
}

TEST_F(SdkClusterTest, ExamplesRun) {
  const std::string examples = Env("GKA_SDK_EXAMPLES_DIR", GKA_SDK_EXAMPLES_DIR_DEFAULT);
  for (const std::string example : {"hello", "stream"}) {
    const std::string out = cluster_->dir() + "/" + example + ".out";
    const pid_t pid = Spawn({examples + "/" + example, cluster_->address()}, out, nullptr);
    ASSERT_GT(pid, 0) << "cannot start " << examples << "/" << example;
    ASSERT_EQ(Wait(pid), 0) << example << ":\n" << ReadAll(out);
    const std::string printed = ReadAll(out);
    EXPECT_FALSE(printed.empty()) << example;
    if (example == "stream") {
      EXPECT_NE(printed.find(" tokens, decode num_iter 10, served by decode-0]"), std::string::npos)
          << printed;
      EXPECT_NE(printed.find("error: INVALID_ARGUMENT retryable=0"), std::string::npos) << printed;
    }
  }
}

}  // namespace
}  // namespace gka::sdk
