// The worker registry with a fake clock: ids, heartbeats, health by heartbeat age, drain,
// forgetting, and placement (decode with room, prefill with least queued tokens, compat).
#include "router/worker_registry.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::router {
namespace {

namespace w = ::gka::worker::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1000000);

w::RegisterRequest Decode(const std::string& id, int port, uint32_t pages, uint32_t slots) {
  w::RegisterRequest r;
  r.set_worker_id(id);
  r.set_role(w::WORKER_ROLE_DECODE);
  r.set_grpc_address(absl::StrCat("127.0.0.1:", port));
  r.mutable_capacity()->set_total_kv_pages(pages);
  r.mutable_capacity()->set_total_state_slots(slots);
  r.mutable_capacity()->set_page_size(16);
  r.mutable_capacity()->set_max_context_tokens(4096);
  return r;
}

w::RegisterRequest Prefill(const std::string& id, int port, uint64_t compat = 0) {
  w::RegisterRequest r;
  r.set_worker_id(id);
  r.set_role(w::WORKER_ROLE_PREFILL);
  r.set_grpc_address(absl::StrCat("127.0.0.1:", port));
  r.set_compat_hash(compat);
  r.mutable_capacity()->set_max_context_tokens(2048);
  return r;
}

w::HeartbeatRequest Beat(const std::string& id, uint32_t free_pages = 0, uint32_t free_slots = 0,
                         uint64_t queued = 0) {
  w::HeartbeatRequest h;
  h.set_worker_id(id);
  h.mutable_load()->set_free_kv_pages(free_pages);
  h.mutable_load()->set_total_kv_pages(100);
  h.mutable_load()->set_free_state_slots(free_slots);
  h.mutable_load()->set_total_state_slots(4);
  h.mutable_load()->set_queued_prompt_tokens(queued);
  return h;
}

std::vector<std::string> Ids(const std::vector<WorkerInfo>& workers) {
  std::vector<std::string> ids;
  for (const WorkerInfo& w : workers) ids.push_back(w.id);
  return ids;
}

class WorkerRegistryTest : public ::testing::Test {
 protected:
  WorkerRegistry registry_{{.heartbeat_interval = absl::Seconds(1),
                            .missed_heartbeats = 3,
                            .forget_after = absl::Seconds(60)}};
};

TEST_F(WorkerRegistryTest, AssignsIds) {
  auto a = registry_.Register(Decode("", 1, 10, 1), kT0);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->worker_id(), "decode-0");
  EXPECT_EQ(a->heartbeat_interval_ms(), 1000u);
  auto b = registry_.Register(Prefill("", 2), kT0);
  EXPECT_EQ(b->worker_id(), "prefill-0");
  // A suggested id that is free is kept.
  EXPECT_EQ(registry_.Register(Decode("d-special", 3, 10, 1), kT0)->worker_id(), "d-special");
  // Taken by another live worker: a fresh id instead.
  EXPECT_EQ(registry_.Register(Decode("d-special", 4, 10, 1), kT0)->worker_id(), "decode-1");
  // The same worker (same address) registering again keeps its id.
  EXPECT_EQ(registry_.Register(Decode("d-special", 3, 10, 1), kT0)->worker_id(), "d-special");
}

TEST_F(WorkerRegistryTest, RejectsBadRegistrations) {
  w::RegisterRequest r = Decode("", 1, 10, 1);
  r.set_role(w::WORKER_ROLE_UNSPECIFIED);
  auto s = registry_.Register(r, kT0);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("role"));
  r = Decode("", 1, 10, 1);
  r.set_grpc_address("localhost");
  s = registry_.Register(r, kT0);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("grpc_address"));
}

TEST_F(WorkerRegistryTest, HealthFollowsHeartbeats) {
  ASSERT_TRUE(registry_.Register(Decode("d", 1, 10, 1), kT0).ok());
  ASSERT_TRUE(registry_.Register(Prefill("p", 2), kT0).ok());
  WorkerCounts c = registry_.Counts();
  EXPECT_EQ(c.decode_healthy, 1);
  EXPECT_EQ(c.prefill_healthy, 1);

  // p keeps heartbeating; d goes silent.
  EXPECT_FALSE(registry_.Heartbeat(Beat("p"), kT0 + absl::Seconds(2)).reregister());
  EXPECT_TRUE(registry_.Sweep(kT0 + absl::Seconds(2)).empty());
  EXPECT_THAT(registry_.Sweep(kT0 + absl::Seconds(3.5)), ElementsAre("d"));
  EXPECT_TRUE(registry_.Sweep(kT0 + absl::Seconds(3.6)).empty());  // reported once
  c = registry_.Counts();
  EXPECT_EQ(c.decode_healthy, 0);
  EXPECT_EQ(c.decode_unhealthy, 1);
  EXPECT_EQ(c.prefill_healthy, 1);
  EXPECT_TRUE(registry_.RankDecode(10, {}).empty());

  // It comes back.
  registry_.Heartbeat(Beat("d", 10, 1), kT0 + absl::Seconds(4));
  EXPECT_TRUE(registry_.IsHealthy("d"));
  EXPECT_THAT(Ids(registry_.RankDecode(10, {})), ElementsAre("d"));

  // Silent past forget_after: gone, and told to register again.
  registry_.Sweep(kT0 + absl::Seconds(100));
  EXPECT_EQ(registry_.Counts().decode_unhealthy + registry_.Counts().decode_healthy, 0);
  EXPECT_TRUE(registry_.Heartbeat(Beat("d"), kT0 + absl::Seconds(101)).reregister());
}

TEST_F(WorkerRegistryTest, DeregisterDrains) {
  ASSERT_TRUE(registry_.Register(Decode("d", 1, 10, 1), kT0).ok());
  EXPECT_TRUE(registry_.Deregister("d").ok());
  EXPECT_TRUE(registry_.RankDecode(1, {}).empty());
  // Heartbeats while draining are accepted and do not undo the drain.
  EXPECT_FALSE(registry_.Heartbeat(Beat("d", 10, 1), kT0).reregister());
  EXPECT_FALSE(registry_.IsHealthy("d"));
  EXPECT_EQ(registry_.Deregister("nobody").code(), absl::StatusCode::kNotFound);
  // A worker announcing its drain in a heartbeat is not placed either.
  ASSERT_TRUE(registry_.Register(Decode("e", 2, 10, 1), kT0).ok());
  w::HeartbeatRequest h = Beat("e", 10, 1);
  h.set_draining(true);
  registry_.Heartbeat(h, kT0);
  EXPECT_TRUE(registry_.RankDecode(1, {}).empty());
}

TEST_F(WorkerRegistryTest, DecodeRankingPrefersRoom) {
  ASSERT_TRUE(registry_.Register(Decode("a", 1, 100, 4), kT0).ok());
  ASSERT_TRUE(registry_.Register(Decode("b", 2, 100, 4), kT0).ok());
  ASSERT_TRUE(registry_.Register(Decode("c", 3, 100, 4), kT0).ok());
  registry_.Heartbeat(Beat("a", 5, 4), kT0);   // few pages
  registry_.Heartbeat(Beat("b", 50, 4), kT0);  // most pages
  registry_.Heartbeat(Beat("c", 40, 0), kT0);  // no slot
  // 100 tokens + 1 = 7 pages: a has no room, b does, c has no slot.
  EXPECT_THAT(Ids(registry_.RankDecode(100, {})), ElementsAre("b", "c", "a"));
  EXPECT_THAT(Ids(registry_.RankDecode(100, {"b"})), ElementsAre("c", "a"));
  // What the router placed since the report counts against the worker.
  for (int i = 0; i < 4; ++i) registry_.NoteReserved("b", 100);
  EXPECT_EQ(registry_.RankDecode(100, {})[0].id, "c");
  // The next report resets that accounting.
  registry_.Heartbeat(Beat("b", 50, 4), kT0);
  EXPECT_EQ(registry_.RankDecode(100, {})[0].id, "b");
}

TEST_F(WorkerRegistryTest, PrefillLeastQueuedAndCompatible) {
  ASSERT_TRUE(registry_.Register(Prefill("p0", 1, 7), kT0).ok());
  ASSERT_TRUE(registry_.Register(Prefill("p1", 2, 7), kT0).ok());
  ASSERT_TRUE(registry_.Register(Prefill("p2", 3, 9), kT0).ok());
  registry_.Heartbeat(Beat("p0", 0, 0, 500), kT0);
  registry_.Heartbeat(Beat("p1", 0, 0, 100), kT0);
  registry_.Heartbeat(Beat("p2", 0, 0, 0), kT0);
  EXPECT_EQ(registry_.PickPrefill(7, {})->id, "p1");
  EXPECT_EQ(registry_.PickPrefill(9, {})->id, "p2");
  EXPECT_EQ(registry_.PickPrefill(0, {})->id, "p2");
  EXPECT_EQ(registry_.PickPrefill(7, {"p1"})->id, "p0");
  // Requests in flight from this router count when larger than the report.
  registry_.NotePrefillStarted("p1", 1000);
  EXPECT_EQ(registry_.PickPrefill(7, {})->id, "p0");
  registry_.NotePrefillFinished("p1", 1000);
  EXPECT_EQ(registry_.PickPrefill(7, {})->id, "p1");
  auto none = registry_.PickPrefill(7, {"p0", "p1"});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(none.status().message(), HasSubstr("compatibility hash 7"));
}

TEST_F(WorkerRegistryTest, ModelFacts) {
  EXPECT_EQ(registry_.MaxContextTokens(), 0);
  w::RegisterRequest d = Decode("d", 1, 10, 1);
  d.set_vocab_size(1024);
  d.add_eos_token_ids(3);
  d.set_model("/models/tiny");
  ASSERT_TRUE(registry_.Register(d, kT0).ok());
  ASSERT_TRUE(registry_.Register(Prefill("p", 2), kT0).ok());
  EXPECT_EQ(registry_.MaxContextTokens(), 2048);  // the smaller of the two
  EXPECT_EQ(registry_.VocabSize(), 1024u);
  EXPECT_THAT(registry_.EosTokenIds(), ElementsAre(3));
  EXPECT_EQ(registry_.ModelName(), "/models/tiny");
}

}  // namespace
}  // namespace gka::router
