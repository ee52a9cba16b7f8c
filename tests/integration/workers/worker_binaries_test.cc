// gka-prefill-worker and gka-decode-worker as real processes on 127.0.0.1 (UCX transports
// chosen with UCX's own UCX_TLS), registered with a router stand-in in this process: the
// ready line, registration, hand-offs equal to the offline engine, /metrics over HTTP
// (promtool), graceful SIGTERM.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/workers/worker_process.h"
#include "tests/integration/workers/worker_test_util.h"

namespace gka::workers_test {
namespace {

constexpr int32_t kVocab = 1024;
constexpr absl::Duration kStartTimeout = absl::Seconds(60);

// GET http://host:port/path; the body, or "" on failure.
std::string HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return "";
  const std::string host = address.substr(0, colon);
  const int port = std::stoi(address.substr(colon + 1));
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\nConnection: close\r\n\r\n");
  [[maybe_unused]] ssize_t sent = send(fd, request.data(), request.size(), 0);
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// promtool's complaints about `text`, one per line ("" when it is clean or absent).
std::string PromtoolProblems(const std::string& text) {
  static int file = 0;  // tests of other processes share TempDir(): name files apart
  const std::string in =
      absl::StrCat(::testing::TempDir(), "/scrape-", getpid(), "-", file++, ".txt");
  std::ofstream(in) << text;
  FILE* p = popen(absl::StrCat("promtool check metrics < ", in, " 2>&1").c_str(), "r");
  if (p == nullptr) return "";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

class WorkerBinariesTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto server = rpc::GrpcServer::Create({.address = "127.0.0.1:0"}, {&registry_});
    ASSERT_TRUE(server.ok()) << server.status();
    registry_server_ = *std::move(server);
    tier_file_ = absl::StrCat(::testing::TempDir(), "/tiers-", getpid(), ".json");
    std::ofstream(tier_file_) << R"({"default": "standard", "tiers": [
        {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10},
        {"name": "batch", "prefill_num_iter": 5, "decode_num_iter": 5}]})";
  }
  void TearDown() override { registry_server_->Shutdown(absl::ZeroDuration()); }

  std::unique_ptr<WorkerProcess> Start(const std::string& binary, const std::string& id,
                                       std::vector<std::string> extra) {
    std::vector<std::string> argv = {binary,
                                     "--model",
                                     kModelDir,
                                     "--router",
                                     registry_server_->address(),
                                     "--port",
                                     "0",
                                     "--metrics-port",
                                     "0",
                                     "--worker-id",
                                     id,
                                     "--max-seq-len",
                                     "256",
                                     "--heartbeat-ms",
                                     "100",
                                     "--tiers",
                                     tier_file_,
                                     // The stand-in registry and this test's channels are
                                     // plaintext (tls_default_test.sh covers mutual TLS).
                                     "--insecure"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p =
        WorkerProcess::Spawn(argv, {absl::StrCat("UCX_TLS=", GetParam())},
                             absl::StrCat(::testing::TempDir(), "/", id, "-", getpid(), ".log"));
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *std::move(p) : nullptr;
  }

  RegistryStandIn registry_;
  std::unique_ptr<rpc::GrpcServer> registry_server_;
  std::string tier_file_;
};

TEST_P(WorkerBinariesTest, ServeHandOffsExportMetricsAndShutDownCleanly) {
  auto decode = Start(GKA_DECODE_WORKER_PATH, "decode-bin", {"--num-slots", "4"});
  auto prefill = Start(GKA_PREFILL_WORKER_PATH, "prefill-bin", {"--max-batch-tokens", "64"});
  ASSERT_TRUE(decode && prefill);
  auto decode_ready = decode->ReadyLine(kStartTimeout);
  auto prefill_ready = prefill->ReadyLine(kStartTimeout);
  ASSERT_TRUE(decode_ready.ok()) << decode_ready.status();
  ASSERT_TRUE(prefill_ready.ok()) << prefill_ready.status();
  // {"role":"decode","grpc":...,"metrics":...,"pid":...}: keys in this order.
  EXPECT_EQ(decode->raw_ready_line().rfind(R"({"role":"decode","grpc":")", 0), 0u)
      << decode->raw_ready_line();
  EXPECT_EQ((*prefill_ready)["role"], "prefill");
  EXPECT_EQ((*decode_ready)["pid"], decode->pid());
  EXPECT_EQ((*prefill_ready)["pid"], prefill->pid());
  const std::string decode_grpc = (*decode_ready)["grpc"];
  const std::string prefill_grpc = (*prefill_ready)["grpc"];
  ASSERT_TRUE(registry_.WaitFor("decode-bin", 1, absl::Seconds(20)));
  ASSERT_TRUE(registry_.WaitFor("prefill-bin", 1, absl::Seconds(20)));
  EXPECT_EQ(registry_.Get("decode-bin")->registration.grpc_address(), decode_grpc);
  EXPECT_EQ(registry_.Get("prefill-bin")->registration.metrics_address(),
            (*prefill_ready)["metrics"]);

  auto reference = OfflineReference::Load(kModelDir);
  ASSERT_TRUE(reference.ok()) << reference.status();
  auto decode_stub = wpb::DecodeService::NewStub(rpc::CreateChannel(decode_grpc, {}));
  auto prefill_stub = wpb::PrefillService::NewStub(rpc::CreateChannel(prefill_grpc, {}));
  std::vector<RequestSpec> specs;
  for (int i = 0; i < 3; ++i) {
    RequestSpec s;
    s.id = absl::StrCat("bin-", i);
    s.prompt = Prompt(500 + i, 10 + 9 * i, kVocab);
    s.max_tokens = 10;
    s.tier = i == 2 ? "batch" : "standard";
    s.prefill_num_iter = i == 2 ? 5 : 10;
    s.decode_num_iter = i == 2 ? 5 : 10;
    specs.push_back(s);
  }
  std::vector<RequestOutcome> outcomes(specs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < specs.size(); ++i) {
    threads.emplace_back(
        [&, i] { outcomes[i] = RunRequest(*decode_stub, *prefill_stub, specs[i]); });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].id);
    EXPECT_TRUE(outcomes[i].prefill.ok()) << outcomes[i].prefill;
    EXPECT_TRUE(outcomes[i].decode.ok()) << outcomes[i].decode;
    EXPECT_EQ(outcomes[i].tokens, *(*reference)->Generate(specs[i]));
  }

  const std::string dm = HttpGet((*decode_ready)["metrics"], "/metrics");
  const std::string pm = HttpGet((*prefill_ready)["metrics"], "/metrics");
  EXPECT_EQ(MetricValue(dm, "gka_decode_num_iter_count",
                        {{"worker", "decode-bin"}, {"tier", "standard"}}),
            2 * 9);  // 9 decoded tokens after the first, two requests
  EXPECT_EQ(MetricValue(dm, "gka_kv_pages_used", {{"worker", "decode-bin"}}), 0);
  EXPECT_EQ(
      MetricValue(pm, "gka_prefill_seconds_count", {{"worker", "prefill-bin"}, {"tier", "batch"}}),
      1);
  EXPECT_GT(
      MetricValue(pm, "gka_transfer_bytes_total", {{"worker", "prefill-bin"}, {"kind", "kv"}}), 0);
  if (std::system("command -v promtool >/dev/null 2>&1") == 0) {
    EXPECT_EQ(PromtoolProblems(pm), "") << pm;
    EXPECT_EQ(PromtoolProblems(dm), "") << dm;
  }

  EXPECT_EQ(prefill->Terminate(absl::Seconds(20)), 0) << prefill->log_path();
  EXPECT_EQ(decode->Terminate(absl::Seconds(20)), 0) << decode->log_path();
  // They deregistered on the way out.
  EXPECT_FALSE(registry_.Get("decode-bin").has_value());
  EXPECT_FALSE(registry_.Get("prefill-bin").has_value());
}

INSTANTIATE_TEST_SUITE_P(Transports, WorkerBinariesTest, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace gka::workers_test
