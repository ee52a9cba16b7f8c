// A worker's RegistryClient in front of several real routers (gka::router::Router, in
// process, real gRPC on 127.0.0.1:0): it registers and heartbeats with each, keeps the
// survivor when one router goes, finds routers through a name that resolves to them, and
// deregisters from all on the way out. Plus the address helpers' edge cases.
#include "decode_worker/common/registry_client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "router/router.h"
#include "router/router_core.h"

namespace gka::worker_common {
namespace {

using ::gka::router::Router;

TEST(AddressListTest, SplitsAndTrims) {
  EXPECT_EQ(SplitAddressList(""), std::vector<std::string>{});
  EXPECT_EQ(SplitAddressList("a:1"), std::vector<std::string>{"a:1"});
  EXPECT_EQ(SplitAddressList(" a:1 ,, b:2,"), (std::vector<std::string>{"a:1", "b:2"}));
}

TEST(ResolveAllAddressesTest, LiteralsNamesAndErrors) {
  EXPECT_EQ(*ResolveAllAddresses("127.0.0.1:50051"), std::vector<std::string>{"127.0.0.1:50051"});
  EXPECT_EQ(*ResolveAllAddresses("[::1]:80"), std::vector<std::string>{"[::1]:80"});
  // A name: every address it resolves to, one family (localhost: 127.0.0.1, not also ::1).
  const absl::StatusOr<std::vector<std::string>> local = ResolveAllAddresses("localhost:9");
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(*local, std::vector<std::string>{"127.0.0.1:9"});
  for (const char* bad : {"no-port", "host:", "host:0", "host:70000", ":80", "[::1]80", "a:b:c"}) {
    EXPECT_EQ(ResolveAllAddresses(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ResolveAllAddresses("no-such-router.invalid:50051").status().code(),
            absl::StatusCode::kUnavailable);
}

class RegistryClientTest : public ::testing::Test {
 protected:
  std::unique_ptr<Router> StartRouter() {
    router::RouterOptions options;
    options.metrics_address = "";
    options.heartbeat_timeout = absl::Milliseconds(300);  // heartbeats every 100 ms
    auto router = Router::Create(options);
    EXPECT_TRUE(router.ok()) << router.status();
    return router.ok() ? std::move(*router) : nullptr;
  }

  static RegistryClientOptions Options() {
    RegistryClientOptions o;
    o.registration.set_worker_id("decode-x");
    o.registration.set_role(worker::v1::WORKER_ROLE_DECODE);
    o.registration.set_grpc_address("127.0.0.1:1");
    o.registration.mutable_capacity()->set_total_kv_pages(8);
    o.registration.mutable_capacity()->set_total_state_slots(2);
    o.rpc_timeout = absl::Milliseconds(500);
    return o;
  }

  static RegistryClient::LoadFn Load() {
    return [] {
      worker::v1::LoadReport r;
      r.set_free_kv_pages(8);
      r.set_free_state_slots(2);
      return r;
    };
  }

  // Whether `router` has the worker registered and healthy, polled until `timeout`.
  static bool Healthy(Router& router, absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time end = absl::Now() + timeout;
    do {
      if (router.core().registry().IsHealthy("decode-x")) return true;
      absl::SleepFor(absl::Milliseconds(20));
    } while (absl::Now() < end);
    return false;
  }

  // Deregistered: the router keeps the record but marks it draining and places nothing there.
  static bool Deregistered(Router& router) {
    for (const auto& w : router.core().registry().Snapshot()) {
      if (w.id == "decode-x") return w.draining && !w.healthy;
    }
    return false;
  }
};

TEST_F(RegistryClientTest, EveryRouterGetsTheWorkerAndTheSurvivorKeepsIt) {
  std::unique_ptr<Router> a = StartRouter(), b = StartRouter();
  ASSERT_TRUE(a && b);
  RegistryClientOptions o = Options();
  o.router_addresses = {a->internal_address(), b->internal_address()};
  auto client = RegistryClient::Start(o, Load());
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(Healthy(*a));
  EXPECT_TRUE(Healthy(*b));
  EXPECT_EQ((*client)->routers().size(), 2u);

  a.reset();                         // one router goes; the other must not see the worker go silent
  absl::SleepFor(absl::Seconds(1));  // > 3 heartbeat timeouts of b
  EXPECT_TRUE(b->core().registry().IsHealthy("decode-x"));
  const int64_t heartbeats = (*client)->heartbeats();
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_GT((*client)->heartbeats(), heartbeats);

  EXPECT_FALSE(Deregistered(*b));
  client->reset();  // deregisters from the routers that are left
  EXPECT_TRUE(Deregistered(*b));
}

TEST_F(RegistryClientTest, RoutersFromANameThatResolvesToThem) {
  std::unique_ptr<Router> a = StartRouter();
  ASSERT_TRUE(a);
  const std::string port = a->internal_address().substr(a->internal_address().rfind(':') + 1);
  RegistryClientOptions o = Options();
  o.router_services = {absl::StrCat("localhost:", port)};
  o.resolve_interval = absl::Milliseconds(100);
  auto client = RegistryClient::Start(o, Load());
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(Healthy(*a));
  const std::vector<std::string> routers = (*client)->routers();
  EXPECT_EQ(routers, std::vector<std::string>{absl::StrCat("127.0.0.1:", port)});
  absl::SleepFor(absl::Milliseconds(300));  // re-resolved a few times: the same routers
  EXPECT_EQ((*client)->routers(), routers);
  EXPECT_EQ((*client)->registrations(), 1);
}

TEST_F(RegistryClientTest, RefusesNoRouterAndMalformedServices) {
  EXPECT_EQ(RegistryClient::Start(Options(), Load()).status().code(),
            absl::StatusCode::kInvalidArgument);
  RegistryClientOptions o = Options();
  o.router_services = {"no-port"};
  EXPECT_EQ(RegistryClient::Start(o, Load()).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gka::worker_common
