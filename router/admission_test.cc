// Admission control and the degrade ladder on a driven clock (options.tick = 0, Tick(now)
// called by the test): placement up to capacity, bounded per-tier queues drained in priority
// order, refusals with a retry-after hint from the measured drain rate, shedding past
// max_queue_ms, and the ladder stepping down under pressure and back up when it is gone.
// The live-cluster behaviour is tests/integration/router/admission_cluster_test.sh.
#include "router/admission.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::router {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::string_view kTiers = R"({
  "default": "standard",
  "tiers": [
    {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5,
     "queue_limit": 2},
    {"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30, "priority": 10,
     "queue_limit": 3, "max_queue_ms": 1000,
     "degrade_ladder": [{"decode_num_iter": 10}, {"decode_num_iter": 1, "max_tokens": 16}],
     "degrade_queue_ms": 200},
    {"name": "itl", "prefill_num_iter": 10, "decode_num_iter": 10,
     "degrade_ladder": [{"decode_num_iter": 1}], "degrade_itl_ms": 50}
  ]})";

struct Log {
  std::vector<std::string> started;
  std::vector<int> rungs;
  std::vector<std::string> shed;
};

class AdmissionTest : public ::testing::Test {
 protected:
  AdmissionTest() : tiers_(*TierTable::FromJson(kTiers)) {}

  std::unique_ptr<Admission> Make(AdmissionOptions options = {}) {
    options.tick = absl::ZeroDuration();  // the test drives Tick
    auto a = std::make_unique<Admission>(options, tiers_);
    EXPECT_TRUE(a->Init(registry_).ok());
    return a;
  }
  const Tier& T(absl::string_view name) { return **tiers_.Find(name); }
  absl::Status Admit(Admission& a, absl::string_view tier, const std::string& id,
                     DecodeDemand demand = {.prompt_tokens = 1, .max_new_tokens = 1}) {
    return a.Admit(T(tier),
                   {.id = id,
                    .demand = demand,
                    .start =
                        [this, id](int rung) {
                          log_.started.push_back(id);
                          log_.rungs.push_back(rung);
                        },
                    .shed = [this, id](const absl::Status&) { log_.shed.push_back(id); }},
                   now_);
  }

  TierTable tiers_;
  metrics::Registry registry_;
  Log log_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

TEST_F(AdmissionTest, PlacesUpToCapacityQueuesThenRefusesWithAHint) {
  auto a = Make();
  a->SetCapacity(2);
  ASSERT_TRUE(Admit(*a, "standard", "s1").ok());
  ASSERT_TRUE(Admit(*a, "standard", "s2").ok());
  EXPECT_THAT(log_.started, ElementsAre("s1", "s2"));
  // Full: the next two wait (queue_limit 2), the third is refused at once.
  ASSERT_TRUE(Admit(*a, "standard", "s3").ok());
  ASSERT_TRUE(Admit(*a, "standard", "s4").ok());
  EXPECT_EQ(a->queued(), 2);
  const absl::Status refused = Admit(*a, "standard", "s5");
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("queue_limit 2"));
  ASSERT_TRUE(RetryAfterOf(refused).has_value());
  // No completion measured yet: the hint is one drain window.
  EXPECT_EQ(*RetryAfterOf(refused), absl::Seconds(10));
  EXPECT_EQ(log_.started.size(), 2u);
  EXPECT_EQ(a->running(), 2);
}

TEST_F(AdmissionTest, DrainsHigherPriorityFirstThenFifo) {
  auto a = Make();
  a->SetCapacity(1);
  ASSERT_TRUE(Admit(*a, "standard", "s1").ok());
  ASSERT_TRUE(Admit(*a, "standard", "s2").ok());
  ASSERT_TRUE(Admit(*a, "interactive", "i1").ok());
  ASSERT_TRUE(Admit(*a, "interactive", "i2").ok());
  a->Finished("s1", now_);
  a->Finished("i1", now_);
  a->Finished("i2", now_);
  EXPECT_THAT(log_.started, ElementsAre("s1", "i1", "i2", "s2"));
  // Unknown and repeated ids are ignored.
  a->Finished("s1", now_);
  a->Finished("nope", now_);
  EXPECT_EQ(a->running(), 1);
}

TEST_F(AdmissionTest, AQueuedRequestThatEndsLeavesItsQueue) {
  auto a = Make();
  a->SetCapacity(1);
  ASSERT_TRUE(Admit(*a, "standard", "s1").ok());
  ASSERT_TRUE(Admit(*a, "standard", "s2").ok());
  a->Finished("s2", now_);  // cancelled while queued
  EXPECT_EQ(a->queued(), 0);
  a->Finished("s1", now_);
  EXPECT_THAT(log_.started, ElementsAre("s1"));
  EXPECT_EQ(a->running(), 0);
}

TEST_F(AdmissionTest, RetryAfterFollowsTheMeasuredDrainRate) {
  auto a = Make();
  a->SetCapacity(1);
  // 10 completions over one second: 10 per second.
  for (int i = 0; i < 11; ++i) {
    ASSERT_TRUE(Admit(*a, "standard", absl::StrCat("r", i)).ok());
    if (i > 0) now_ += absl::Milliseconds(100);
    a->Finished(absl::StrCat("r", i), now_);
  }
  // Fill: one placed, two queued; the next is refused with (2 queued + itself) / 10 per s.
  ASSERT_TRUE(Admit(*a, "standard", "x").ok());
  ASSERT_TRUE(Admit(*a, "standard", "q1").ok());
  ASSERT_TRUE(Admit(*a, "standard", "q2").ok());
  const absl::Status refused = Admit(*a, "standard", "q3");
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  // 11 completions in the last 1 s (the first at now - 1 s).
  EXPECT_NEAR(absl::ToDoubleMilliseconds(*RetryAfterOf(refused)), 3.0 / 11.0 * 1000.0, 1.0);
  // Interactive outranks the queued standard requests: only itself is ahead.
  EXPECT_NEAR(absl::ToDoubleMilliseconds(a->RetryAfter(T("interactive"), now_)), 1.0 / 11.0 * 1000,
              1.0);
  // The hint is clamped to at least min_retry_after.
  EXPECT_GE(a->RetryAfter(T("interactive"), now_), absl::Milliseconds(50));
}

TEST_F(AdmissionTest, ShedsWhatWaitedPastMaxQueueMs) {
  auto a = Make();
  a->SetCapacity(1);
  ASSERT_TRUE(Admit(*a, "standard", "s1").ok());
  ASSERT_TRUE(Admit(*a, "interactive", "i1").ok());
  ASSERT_TRUE(Admit(*a, "standard", "s2").ok());
  now_ += absl::Milliseconds(999);
  a->Tick(now_);
  EXPECT_TRUE(log_.shed.empty());
  now_ += absl::Milliseconds(1);
  a->Tick(now_);
  // interactive has max_queue_ms 1000; standard waits for its deadline only.
  EXPECT_THAT(log_.shed, ElementsAre("i1"));
  EXPECT_EQ(a->queued(), 1);
}

TEST_F(AdmissionTest, LadderStepsDownUnderQueuePressureAndBackUp) {
  auto a = Make({.degrade_after = absl::Milliseconds(500), .recover_after = absl::Seconds(2)});
  a->SetCapacity(1);
  ASSERT_TRUE(Admit(*a, "standard", "s1").ok());
  ASSERT_TRUE(Admit(*a, "standard", "s2").ok());  // waits: queue delay grows
  auto tick = [&](absl::Duration d) {
    now_ += d;
    a->Tick(now_);
  };
  tick(absl::Milliseconds(100));
  EXPECT_EQ(a->Rung("interactive"), 0);
  tick(absl::Milliseconds(150));  // 250 ms > 200 ms: pressure starts
  EXPECT_EQ(a->Rung("interactive"), 0);
  tick(absl::Milliseconds(499));
  EXPECT_EQ(a->Rung("interactive"), 0);
  tick(absl::Milliseconds(1));  // pressure for 500 ms
  EXPECT_EQ(a->Rung("interactive"), 1);
  EXPECT_EQ(a->DecodeCaps(), (std::map<std::string, int32_t>{{"interactive", 10}}));
  tick(absl::Milliseconds(499));  // one rung per period
  EXPECT_EQ(a->Rung("interactive"), 1);
  tick(absl::Milliseconds(1));
  EXPECT_EQ(a->Rung("interactive"), 2);
  tick(absl::Seconds(5));  // bottom of the ladder
  EXPECT_EQ(a->Rung("interactive"), 2);
  // Tiers without a ladder stay put.
  EXPECT_EQ(a->Rung("standard"), 0);
  // A request placed now gets the rung.
  a->Finished("s1", now_);  // s2 starts
  a->Finished("s2", now_);
  ASSERT_TRUE(Admit(*a, "interactive", "i1").ok());
  EXPECT_EQ(log_.rungs.back(), 2);
  // Calm: one rung up per recover_after.
  tick(absl::Milliseconds(100));
  EXPECT_EQ(a->Rung("interactive"), 2);
  tick(absl::Seconds(2));
  EXPECT_EQ(a->Rung("interactive"), 1);
  tick(absl::Seconds(1));
  EXPECT_EQ(a->Rung("interactive"), 1);
  tick(absl::Seconds(1));
  EXPECT_EQ(a->Rung("interactive"), 0);
  EXPECT_TRUE(a->DecodeCaps().empty());
}

TEST_F(AdmissionTest, LadderFollowsTheItlSignal) {
  auto a = Make({.degrade_after = absl::Milliseconds(500),
                 .recover_after = absl::Seconds(2),
                 .signal_window = absl::Seconds(1)});
  a->Tick(now_);  // opens the first window
  for (int i = 0; i < 10; ++i) a->ObserveItl("itl", absl::Milliseconds(80));
  now_ += absl::Seconds(1);
  a->Tick(now_);  // window mean 80 ms > 50 ms: pressure from now
  now_ += absl::Milliseconds(500);
  a->Tick(now_);
  EXPECT_EQ(a->Rung("itl"), 1);
  // Fast tokens in the next window lift the pressure; the rung comes back after 2 s of calm.
  for (int i = 0; i < 10; ++i) a->ObserveItl("itl", absl::Milliseconds(10));
  now_ += absl::Milliseconds(500);
  a->Tick(now_);
  EXPECT_EQ(a->Rung("itl"), 1);
  now_ += absl::Seconds(2);
  a->Tick(now_);
  EXPECT_EQ(a->Rung("itl"), 0);
}

// Admission by KV pages and state slots with the real worker registry: requests start while a
// decode worker has room for them, wait in priority order when none has (slots to spare or
// not), start as room frees, and one that could never fit is refused at once without a hint.
TEST_F(AdmissionTest, AdmitsByDecodeRoomNotOnlySlots) {
  WorkerRegistry workers({.heartbeat_interval = absl::Seconds(1)});
  worker::v1::RegisterRequest d;
  d.set_worker_id("d");
  d.set_role(worker::v1::WORKER_ROLE_DECODE);
  d.set_grpc_address("127.0.0.1:1");
  d.mutable_capacity()->set_total_kv_pages(10);  // 160 tokens
  d.mutable_capacity()->set_total_state_slots(8);
  d.mutable_capacity()->set_page_size(16);
  d.mutable_capacity()->set_max_context_tokens(1024);
  ASSERT_TRUE(workers.Register(d, now_).ok());
  AdmissionOptions options;
  options.tick = absl::ZeroDuration();
  Admission a(options, tiers_, &workers);
  ASSERT_TRUE(a.Init(registry_).ok());
  a.SetCapacity(workers.HealthyDecodeSlots());
  EXPECT_EQ(a.capacity(), 8);

  // 4 pages each (prompt 50 + 14 new = 64 tokens): two fit in 10 pages although 8 slots do.
  const DecodeDemand four{.prompt_tokens = 50, .max_new_tokens = 14};
  ASSERT_TRUE(Admit(a, "standard", "s1", four).ok());
  ASSERT_TRUE(Admit(a, "standard", "s2", four).ok());
  ASSERT_TRUE(Admit(a, "standard", "s3", four).ok());
  ASSERT_TRUE(Admit(a, "interactive", "i1", four).ok());
  EXPECT_THAT(log_.started, ElementsAre("s1", "s2"));
  EXPECT_EQ(a.queued(), 2);
  EXPECT_EQ(workers.Held().kv_pages, 8);
  // A small request does not jump the queue (the head of the highest tier waits first).
  ASSERT_TRUE(Admit(a, "standard", "tiny", {.prompt_tokens = 1, .max_new_tokens = 1}).ok());
  EXPECT_EQ(log_.started.size(), 2u);
  // The standard queue (limit 2) is full: refused with a hint naming the held pages.
  const absl::Status full = Admit(a, "standard", "s4", four);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), HasSubstr("8 KV pages held"));
  EXPECT_TRUE(RetryAfterOf(full).has_value());

  // Never fits: 11 pages of a 10-page worker, or past its context. Refused at once, no hint.
  const absl::Status never =
      Admit(a, "interactive", "big", {.prompt_tokens = 150, .max_new_tokens = 20});
  EXPECT_EQ(never.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(never.message(), HasSubstr("can never be placed"));
  EXPECT_FALSE(RetryAfterOf(never).has_value());
  const absl::Status context =
      Admit(a, "interactive", "long", {.prompt_tokens = 1020, .max_new_tokens = 10});
  EXPECT_EQ(context.code(), absl::StatusCode::kInvalidArgument);

  // s1 ends: its room goes to the interactive request first, then FIFO.
  a.Finished("s1", now_);
  EXPECT_THAT(log_.started, ElementsAre("s1", "s2", "i1"));
  a.Finished("s2", now_);
  EXPECT_THAT(log_.started, ElementsAre("s1", "s2", "i1", "s3", "tiny"));
  EXPECT_EQ(a.queued(), 0);
  EXPECT_EQ(workers.Held().requests, 3);
  const std::string text = registry_.Serialize();
  EXPECT_THAT(text, HasSubstr("gka_admission_held_kv_pages 9"));
  EXPECT_THAT(
      text, HasSubstr(R"(gka_admission_refused_total{reason="never_fits",tier="interactive"} 2)"));
}

TEST_F(AdmissionTest, DisabledOrNoCapacityPlacesEverything) {
  auto off = Make({.enabled = false});
  off->SetCapacity(1);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Admit(*off, "standard", absl::StrCat("a", i)).ok());
  EXPECT_EQ(log_.started.size(), 10u);

  metrics::Registry other;
  Admission none({.tick = absl::ZeroDuration()}, tiers_);
  ASSERT_TRUE(none.Init(other).ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(none.Admit(T("standard"),
                           {.id = absl::StrCat("b", i),
                            .start = [](int) {},
                            .shed = [](const absl::Status&) {}},
                           now_)
                    .ok());
  }
  EXPECT_EQ(none.running(), 5);
  // Capacity that arrives later does not evict, it only bounds what comes next.
  none.SetCapacity(2);
  EXPECT_TRUE(none.Admit(T("standard"),
                         {.id = "c", .start = [](int) {}, .shed = [](const absl::Status&) {}}, now_)
                  .ok());
  EXPECT_EQ(none.queued(), 1);
}

TEST_F(AdmissionTest, TierFileRejectsBadLadders) {
  auto bad = [](absl::string_view tier_body) {
    return TierTable::FromJson(
        absl::StrCat(R"({"tiers": [{"name": "t", "prefill_num_iter": 30, "decode_num_iter": 30, )",
                     tier_body, "}]}"));
  };
  EXPECT_THAT(bad(R"("degrade_ladder": [{"decode_num_iter": 10}])").status().message(),
              HasSubstr("needs a load signal"));
  EXPECT_THAT(
      bad(R"("degrade_ladder": [{"decode_num_iter": 10}, {"decode_num_iter": 20}], "degrade_queue_ms": 1)")
          .status()
          .message(),
      HasSubstr("cheaper than the one above"));
  EXPECT_THAT(
      bad(R"("degrade_ladder": [{"num_iter": 10}], "degrade_queue_ms": 1)").status().message(),
      HasSubstr("unknown field 'num_iter'"));
  EXPECT_THAT(bad(R"("queue_limit": -1)").status().message(), HasSubstr("queue_limit"));
  EXPECT_TRUE(
      bad(R"("degrade_ladder": [{"decode_num_iter": 30, "max_tokens": 64}, {"decode_num_iter": 1}], "degrade_itl_ms": 50, "queue_limit": 0, "max_queue_ms": 250)")
          .ok());
}

}  // namespace
}  // namespace gka::router
