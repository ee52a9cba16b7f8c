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
  EXPECT_TRUE(registry_.RankDecode("r", {10, 1}, {}).empty());

  // It comes back.
  registry_.Heartbeat(Beat("d", 10, 1), kT0 + absl::Seconds(4));
  EXPECT_TRUE(registry_.IsHealthy("d"));
  EXPECT_THAT(Ids(registry_.RankDecode("r", {10, 1}, {})), ElementsAre("d"));

  // Silent past forget_after: gone, and told to register again.
  registry_.Sweep(kT0 + absl::Seconds(100));
  EXPECT_EQ(registry_.Counts().decode_unhealthy + registry_.Counts().decode_healthy, 0);
  EXPECT_TRUE(registry_.Heartbeat(Beat("d"), kT0 + absl::Seconds(101)).reregister());
}

TEST_F(WorkerRegistryTest, DeregisterDrains) {
  ASSERT_TRUE(registry_.Register(Decode("d", 1, 10, 1), kT0).ok());
  EXPECT_TRUE(registry_.Deregister("d").ok());
  EXPECT_TRUE(registry_.RankDecode("r", {1, 1}, {}).empty());
  // Heartbeats while draining are accepted and do not undo the drain.
  EXPECT_FALSE(registry_.Heartbeat(Beat("d", 10, 1), kT0).reregister());
  EXPECT_FALSE(registry_.IsHealthy("d"));
  EXPECT_EQ(registry_.Deregister("nobody").code(), absl::StatusCode::kNotFound);
  // A worker announcing its drain in a heartbeat is not placed either.
  ASSERT_TRUE(registry_.Register(Decode("e", 2, 10, 1), kT0).ok());
  w::HeartbeatRequest h = Beat("e", 10, 1);
  h.set_draining(true);
  registry_.Heartbeat(h, kT0);
  EXPECT_TRUE(registry_.RankDecode("r", {1, 1}, {}).empty());
}

TEST_F(WorkerRegistryTest, DecodeRankingPrefersRoom) {
  ASSERT_TRUE(registry_.Register(Decode("a", 1, 100, 4), kT0).ok());
  ASSERT_TRUE(registry_.Register(Decode("b", 2, 100, 4), kT0).ok());
  ASSERT_TRUE(registry_.Register(Decode("c", 3, 100, 4), kT0).ok());
  registry_.Heartbeat(Beat("a", 5, 4), kT0);   // few pages
  registry_.Heartbeat(Beat("b", 50, 4), kT0);  // most pages
  registry_.Heartbeat(Beat("c", 40, 0), kT0);  // no slot
  const DecodeDemand demand{.prompt_tokens = 100, .max_new_tokens = 1};
  // 100 tokens + 1 = 7 pages: a has no room, b does, c has no slot.
  EXPECT_THAT(Ids(registry_.RankDecode("r", demand, {})), ElementsAre("b", "c", "a"));
  EXPECT_THAT(Ids(registry_.RankDecode("r", demand, {"b"})), ElementsAre("c", "a"));
  // What the router placed since the report counts against the worker.
  for (int i = 0; i < 4; ++i) registry_.PlaceHold(absl::StrCat("q", i), "b", demand);
  EXPECT_EQ(registry_.RankDecode("r", demand, {})[0].id, "c");
  // A request ranks the worker it holds room on first.
  EXPECT_EQ(registry_.RankDecode("q0", demand, {})[0].id, "b");
  // A report taken after the worker accepted them counts them; the router stops counting.
  for (int i = 0; i < 4; ++i) registry_.ConfirmHold(absl::StrCat("q", i), kT0);
  w::HeartbeatRequest later = Beat("b", 50, 4);
  later.set_unix_ms(absl::ToUnixMillis(kT0 + absl::Seconds(1)));
  registry_.Heartbeat(later, kT0 + absl::Seconds(1));
  EXPECT_EQ(registry_.RankDecode("r", demand, {})[0].id, "b");
}

// The ledger behind admission by KV pages and state slots: a burst between two heartbeats
// cannot over-commit a worker, reservations stop counting against a report once a report
// taken after them arrives, a release is credited back until a report shows it freed, and
// the whole-life footprint (prompt + max_new_tokens) bounds what one router places.
TEST_F(WorkerRegistryTest, HoldsRoomByPagesAndSlots) {
  auto beat = [](uint32_t free_pages, uint32_t free_slots, absl::Time taken) {
    w::HeartbeatRequest h = Beat("d", free_pages, free_slots);
    h.mutable_load()->set_total_kv_pages(20);
    h.mutable_load()->set_total_state_slots(8);
    h.set_unix_ms(absl::ToUnixMillis(taken));
    return h;
  };
  // 20 pages of 16 tokens and 8 slots; someone else's sequences use 10 pages.
  ASSERT_TRUE(registry_.Register(Decode("d", 1, 20, 8), kT0).ok());
  registry_.Heartbeat(beat(10, 8, kT0), kT0);
  const DecodeDemand small{.prompt_tokens = 40, .max_new_tokens = 8};  // 3 pages now and for life
  // A burst before the next heartbeat: three fit the 10 free pages, the fourth does not.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(registry_.Hold(absl::StrCat("s", i), small)) << i;
  EXPECT_FALSE(registry_.Hold("s3", small));
  EXPECT_TRUE(registry_.Hold("s0", small));  // already held: kept
  EXPECT_EQ(registry_.Held().requests, 3);
  EXPECT_EQ(registry_.Held().kv_pages, 9);

  // The worker accepted them at T0 + 100 ms. A report taken before that (+ grace) does not
  // show them: they still count against it.
  for (int i = 0; i < 3; ++i) {
    registry_.ConfirmHold(absl::StrCat("s", i), kT0 + absl::Milliseconds(100));
  }
  const absl::Time t1 = kT0 + absl::Milliseconds(120);
  registry_.Heartbeat(beat(10, 8, t1), t1);
  EXPECT_FALSE(registry_.Hold("s3", small));
  // A report taken later shows them (and 3 more pages freed by others): 4 free.
  const absl::Time t2 = kT0 + absl::Seconds(1);
  registry_.Heartbeat(beat(4, 5, t2), t2);
  EXPECT_TRUE(registry_.Hold("s3", small));  // 4 - 3 = 1 left
  EXPECT_FALSE(registry_.Hold("s4", small));

  // s0 ends: the pages its reservation took are credited back before a report shows them.
  const absl::Time t3 = kT0 + absl::Milliseconds(1100);
  registry_.ReleaseHold("s0", t3);
  EXPECT_TRUE(registry_.Hold("s4", small));
  EXPECT_FALSE(registry_.Hold("s5", small));
  // s4 ends before the worker ever reserved it: no credit, only its hold goes.
  registry_.ReleaseHold("s4", t3);
  EXPECT_TRUE(registry_.Hold("s5", small));
  EXPECT_FALSE(registry_.Hold("s6", small));
  registry_.ReleaseHold("unknown", t3);  // ignored

  // Whole-life footprint: a worker reporting everything free still bounds what this router
  // places by prompt + max_new_tokens (the sequences can all grow without a swap).
  ASSERT_TRUE(registry_.Register(Decode("e", 2, 20, 8), kT0).ok());
  const DecodeDemand grows{.prompt_tokens = 15, .max_new_tokens = 145};  // 1 page now, 10 for life
  EXPECT_TRUE(registry_.Hold("g0", grows));
  EXPECT_TRUE(registry_.Hold("g1", grows));
  EXPECT_FALSE(registry_.Hold("g2", grows));  // e: 0 spare; d: 20 - 12 held = 8 spare

  // Slots: one slot, plenty of pages.
  ASSERT_TRUE(registry_.Register(Decode("f", 3, 100, 1), kT0).ok());
  EXPECT_TRUE(registry_.Hold("one", small));
  EXPECT_FALSE(registry_.Hold("two", small));

  // A draining worker holds nothing new.
  ASSERT_TRUE(registry_.Deregister("e").ok());
  registry_.ReleaseHold("g0", t3);
  EXPECT_FALSE(registry_.Hold("g2", grows));
}

TEST_F(WorkerRegistryTest, CanEverHoldNamesTheLimit) {
  // No decode worker reports: placement is the judge.
  EXPECT_TRUE(registry_.CanEverHold({.prompt_tokens = 1000000, .max_new_tokens = 1}).ok());
  ASSERT_TRUE(registry_.Register(Decode("d", 1, 20, 8), kT0).ok());  // 320 tokens of pages
  EXPECT_TRUE(registry_.CanEverHold({.prompt_tokens = 300, .max_new_tokens = 20}).ok());
  const absl::Status pages = registry_.CanEverHold({.prompt_tokens = 300, .max_new_tokens = 21});
  EXPECT_EQ(pages.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pages.message(),
              HasSubstr("need 21 KV pages; the largest healthy decode worker has 20"));
  const absl::Status context = registry_.CanEverHold({.prompt_tokens = 4000, .max_new_tokens = 97});
  EXPECT_EQ(context.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(context.message(), HasSubstr("context (at most 4096 tokens)"));
  // Room in use does not matter, only the totals.
  EXPECT_TRUE(registry_.Hold("a", {.prompt_tokens = 300, .max_new_tokens = 20}));
  EXPECT_TRUE(registry_.CanEverHold({.prompt_tokens = 300, .max_new_tokens = 20}).ok());
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

// A colocated worker serves alone: ranked with the decode workers (it decodes), counted
// apart, never a prefill worker's hand-off target, enough for the cluster to serve.
TEST_F(WorkerRegistryTest, ColocatedWorkersServeAloneAndTakeNoHandOffs) {
  w::RegisterRequest c = Decode("", 1, 100, 4);
  c.set_role(w::WORKER_ROLE_COLOCATED);
  c.set_compat_hash(7);
  auto a = registry_.Register(c, kT0);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->worker_id(), "colocated-0");
  WorkerCounts counts = registry_.Counts();
  EXPECT_EQ(counts.colocated_healthy, 1);
  EXPECT_EQ(counts.decode_healthy, 0);
  EXPECT_EQ(counts.prefill_healthy, 0);
  EXPECT_TRUE(counts.CanServe());
  EXPECT_EQ(registry_.HealthyDecodeSlots(), 4);
  // Admission holds room on it like on a decode worker.
  EXPECT_TRUE(registry_.CanEverHold({16, 8}).ok());
  EXPECT_TRUE(registry_.Hold("held", {16, 8}));
  EXPECT_EQ(registry_.Held().requests, 1);
  registry_.ReleaseHold("held", kT0);
  // Prefill placement never picks it, whatever the hash.
  EXPECT_EQ(registry_.PickPrefill(7, {}).status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(registry_.Register(Decode("d", 2, 100, 4), kT0).ok());
  registry_.Heartbeat(Beat("d", 80, 4), kT0);
  registry_.Heartbeat(Beat("colocated-0", 50, 4), kT0);
  const std::vector<WorkerInfo> ranked = registry_.RankDecode("r", {16, 1}, {});
  EXPECT_THAT(Ids(ranked), ElementsAre("d", "colocated-0"));
  EXPECT_EQ(ranked[1].role, w::WORKER_ROLE_COLOCATED);
  // A decode worker without any prefill worker cannot serve; with a colocated one it can.
  counts = registry_.Counts();
  EXPECT_EQ(counts.decode_healthy, 1);
  EXPECT_TRUE(counts.CanServe());
  EXPECT_FALSE((WorkerCounts{.decode_healthy = 1}).CanServe());
  EXPECT_TRUE((WorkerCounts{.prefill_healthy = 1, .decode_healthy = 1}).CanServe());
  // Silent: unhealthy like any worker.
  registry_.Sweep(kT0 + absl::Seconds(10));
  EXPECT_EQ(registry_.Counts().colocated_unhealthy, 1);
  EXPECT_FALSE(registry_.Counts().CanServe());
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
