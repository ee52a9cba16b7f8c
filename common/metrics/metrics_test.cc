// Registry semantics and a real HTTP scrape of /metrics over a plain socket.
#include "common/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

// big_tls_testlib.cc: 256 KiB of static TLS in every thread, more than civetweb's stack.
extern "C" size_t GkaTestBigTlsBytes();

namespace gka::metrics {
namespace {

// GET http://127.0.0.1:port/path (Connection: close, so the body ends at EOF).
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  // Reads until the body announced by Content-Length is complete (civetweb lingers before
  // closing, so EOF alone would cost seconds).
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    response.append(buf, n);
    const size_t header_end = response.find("\r\n\r\n");
    if (header_end == std::string::npos) continue;
    const size_t cl = response.find("Content-Length: ");
    if (cl == std::string::npos || cl > header_end) continue;
    const size_t length = std::stoul(response.substr(cl + 16));
    if (response.size() >= header_end + 4 + length) break;
  }
  close(fd);
  return response;
}

TEST(MetricsTest, ScrapeShowsCounterGaugeAndHistogram) {
  auto registry = std::make_shared<Registry>();
  auto requests = registry->AddCounter("gka_test_requests_total", "Requests.", {"tier", "code"});
  ASSERT_TRUE(requests.ok()) << requests.status();
  Counter ok = (*requests)->Labels({{"tier", "standard"}, {"code", "OK"}});
  (*requests)->Labels({{"tier", "batch"}, {"code", "OK"}});  // exists at 0 from the start
  ok.Increment();
  ok.Increment(2);
  ok.Increment(-5);  // ignored: counters only go up
  EXPECT_EQ(ok.Value(), 3);

  auto pages = registry->AddGauge("gka_test_kv_pages_used", "Pages.");
  ASSERT_TRUE(pages.ok());
  Gauge used = (*pages)->Labels({});
  used.Set(10);
  used.Decrement(3);
  auto ttft = registry->AddHistogram("gka_test_ttft_seconds", "TTFT.", {"tier"}, LatencyBuckets());
  ASSERT_TRUE(ttft.ok());
  (*ttft)->Labels({{"tier", "standard"}}).Observe(0.003);

  auto exposer = MetricsExposer::Create({.address = "127.0.0.1:0"}, registry);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  ASSERT_GT((*exposer)->port(), 0);
  EXPECT_EQ((*exposer)->address(), absl::StrCat("127.0.0.1:", (*exposer)->port()));

  const std::string body = HttpGet((*exposer)->port(), "/metrics");
  EXPECT_TRUE(absl::StartsWith(body, "HTTP/1.1 200") || absl::StartsWith(body, "HTTP/1.0 200"))
      << body.substr(0, 200);
  EXPECT_TRUE(absl::StrContains(body, "# TYPE gka_test_requests_total counter")) << body;
  EXPECT_TRUE(absl::StrContains(body, "gka_test_requests_total{code=\"OK\",tier=\"standard\"} 3"))
      << body;
  EXPECT_TRUE(absl::StrContains(body, "gka_test_requests_total{code=\"OK\",tier=\"batch\"} 0"))
      << body;
  EXPECT_TRUE(absl::StrContains(body, "gka_test_kv_pages_used 7")) << body;
  EXPECT_TRUE(absl::StrContains(body, "gka_test_ttft_seconds_count{tier=\"standard\"} 1")) << body;
  EXPECT_TRUE(
      absl::StrContains(body, "gka_test_ttft_seconds_bucket{tier=\"standard\",le=\"0.004\"} 1"))
      << body;

  // Same thing in-process, and updates show on the next scrape.
  ok.Increment();
  EXPECT_TRUE(absl::StrContains(registry->Serialize(),
                                "gka_test_requests_total{code=\"OK\",tier=\"standard\"} 4"));
  EXPECT_TRUE(absl::StrContains(HttpGet((*exposer)->port(), "/metrics"),
                                "gka_test_requests_total{code=\"OK\",tier=\"standard\"} 4"));
}

// The exposition our facade produces is what Prometheus accepts (promtool's lint included:
// counters end in _total, units in names).
TEST(MetricsTest, SerializedTextPassesPromtool) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) GTEST_SKIP() << "no promtool";
  Registry registry;
  (*registry.AddCounter("gka_requests_total", "Requests.", {"tier"}))
      ->Labels({{"tier", "standard"}})
      .Increment();
  (*registry.AddGauge("gka_kv_pages_used", "Pages in use."))->Labels({}).Set(3);
  (*registry.AddHistogram("gka_ttft_seconds", "Time to first token.", {"tier"}, LatencyBuckets()))
      ->Labels({{"tier", "standard"}})
      .Observe(0.2);
  FILE* promtool = popen("promtool check metrics", "w");
  ASSERT_NE(promtool, nullptr);
  const std::string text = registry.Serialize();
  fwrite(text.data(), 1, text.size(), promtool);
  const int rc = pclose(promtool);
  EXPECT_EQ(rc, 0) << text;
}

TEST(MetricsTest, RegistrationErrorsAreStatuses) {
  Registry registry;
  EXPECT_EQ(registry.AddCounter("bad name", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddCounter("gka_x_total", "x", {"__reserved"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = registry.AddCounter("gka_x_total", "x", {"tier"});
  ASSERT_TRUE(first.ok());
  auto again = registry.AddCounter("gka_x_total", "x", {"tier"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*first, *again);
  EXPECT_EQ(registry.AddGauge("gka_x_total", "x", {"tier"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddCounter("gka_x_total", "x", {"code"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("gka_h", "h", {}, {1, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A CUDA build links libcublasLt (~94 KiB of static TLS); glibc takes static TLS out of each
// thread's stack, and civetweb's fixed ~100 KiB stacks then cannot start. This binary links a
// library with more static TLS than that, so every exposer here needs metrics.cc's
// pthread_attr_setstacksize.
TEST(MetricsTest, ExposerServesBesideLargeStaticTls) {
  ASSERT_GE(GkaTestBigTlsBytes(), size_t{200} << 10);
  auto registry = std::make_shared<Registry>();
  (*registry->AddGauge("gka_test_up", "Up."))->Labels({}).Set(1);
  auto exposer = MetricsExposer::Create({.address = "127.0.0.1:0"}, registry);
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  EXPECT_TRUE(absl::StrContains(HttpGet((*exposer)->port(), "/metrics"), "gka_test_up 1"));
}

TEST(MetricsTest, ExposerBindConflictIsUnavailable) {
  auto registry = std::make_shared<Registry>();
  auto first = MetricsExposer::Create({}, registry);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = MetricsExposer::Create({.address = (*first)->address()}, registry);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST(MetricsDeathTest, WrongLabelNamesAbort) {
  Registry registry;
  auto family = registry.AddCounter("gka_y_total", "y", {"tier"});
  ASSERT_TRUE(family.ok());
  EXPECT_DEATH((*family)->Labels({{"tiers", "x"}}), "declared label names");
}

}  // namespace
}  // namespace gka::metrics
