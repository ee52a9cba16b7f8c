// Seeded random workloads against a small scripted memory, checking the scheduler's promises
// after every step: plans never overdraw memory, budgets and caps hold, the scheduler's page
// accounting matches the memory's, preemption respects rank, and everything finishes.
#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/scheduler/scheduler.h"
#include "common/scheduler/scheduler_test_util.h"
#include "gtest/gtest.h"

namespace gka::scheduler {
namespace {

using testing::ScriptedMemory;

constexpr int32_t kEos = 0;
constexpr int32_t kVocab = 40;

struct Config {
  std::string name;
  SchedulerOptions options;
  int32_t page_size;
  int32_t pages;
  int32_t slots;
  uint32_t seed;
};

class SchedulerPropertyTest : public ::testing::TestWithParam<Config> {};

// Rank as the scheduler defines it: higher priority, then earlier arrival, is better.
bool Outranks(const SequenceInfo& a, const SequenceInfo& b) {
  if (a.priority != b.priority) return a.priority > b.priority;
  return a.arrival < b.arrival;
}

TEST_P(SchedulerPropertyTest, InvariantsHoldOverRandomWorkloads) {
  const Config& c = GetParam();
  ScriptedMemory mem(c.page_size, c.pages, c.slots);
  SchedulerOptions options = c.options;
  options.eos_token_ids = {kEos};
  auto created = Scheduler::Create(options, &mem);
  ASSERT_TRUE(created.ok()) << created.status();
  Scheduler& sched = **created;
  std::mt19937 rng(c.seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };

  // What the test knows of each live sequence, to check num_iter and lengths independently.
  struct Expect {
    int32_t prefill_num_iter;
    int32_t decode_num_iter;
    int32_t prompt_len;
    int32_t max_new_tokens;
    std::vector<int32_t> stop_token_ids;
    bool ignore_eos;
  };
  // Whether `token` ends a sequence expecting `e`.
  auto stops = [](const Expect& e, int32_t token) {
    return (!e.ignore_eos && token == kEos) ||
           std::count(e.stop_token_ids.begin(), e.stop_token_ids.end(), token) > 0;
  };
  std::map<SequenceId, Expect> live;  // ordered: picks by index must not depend on hashing
  int64_t next_id = 0;
  int64_t finished = 0, preemptions = 0, resumes = 0, mixed_steps = 0, cancelled = 0;
  const int kArrivalSteps = 3000;
  const int kMaxSteps = 6000;
  int step = 0;
  for (; step < kMaxSteps; ++step) {
    SCOPED_TRACE(absl::StrCat(c.name, " step ", step));
    const bool arriving = step < kArrivalSteps;
    if (!arriving && sched.num_sequences() == 0) break;
    // Arrivals, in bursts.
    if (arriving && chance(0.35)) {
      for (int n = uniform(1, 3); n > 0; --n) {
        const int32_t prompt_len = uniform(1, 28);
        Request r{.id = SequenceId(next_id++),
                  .priority = uniform(0, 3),
                  .prompt = {},
                  .max_new_tokens = uniform(1, options.max_model_len - prompt_len),
                  .ignore_eos = chance(0.2),
                  .prefill_num_iter = uniform(-1, 30),
                  .decode_num_iter = uniform(-1, 30)};
        r.max_new_tokens = std::min(r.max_new_tokens, uniform(1, 24));
        for (int i = 0; i < prompt_len; ++i) r.prompt.push_back(uniform(1, kVocab - 1));
        if (chance(0.3)) r.stop_token_ids = {uniform(1, kVocab - 1)};
        ASSERT_TRUE(sched.Add(r).ok());
        live[r.id] = {r.prefill_num_iter, r.decode_num_iter, prompt_len,
                      r.max_new_tokens,   r.stop_token_ids,  r.ignore_eos};
      }
    }
    // Hand-offs landing in reserved memory (decode worker): only when memory allows.
    if (!options.prefill_only && arriving && chance(0.03) && mem.free_slots() > 0 &&
        sched.num_resident() < options.max_running_seqs) {
      const int32_t prompt_len = uniform(1, 12);
      if (PagesFor(prompt_len, c.page_size) <= mem.free_pages()) {
        Request r{.id = SequenceId(next_id++),
                  .priority = uniform(0, 3),
                  .prompt = {},
                  .max_new_tokens = uniform(1, 16),
                  .decode_num_iter = uniform(0, 30)};
        r.prompt.assign(prompt_len, 5);
        ASSERT_TRUE(mem.Import(r.id, prompt_len).ok());
        auto done = sched.AddPrefilled(r, uniform(0, kVocab - 1));
        ASSERT_TRUE(done.ok()) << done.status();
        if (done->has_value()) {
          ASSERT_TRUE(mem.Release({r.id, **done, Residence::kDevice, {}}).ok());
          ++finished;
        } else {
          live[r.id] = {-1, r.decode_num_iter, prompt_len, r.max_new_tokens, {}, false};
        }
      }
    }
    // Memory taken and given back by someone else (transfer reservations).
    if (arriving && chance(0.05)) {
      mem.set_external_pages(
          std::min(uniform(0, c.pages / 4), mem.external_pages() + mem.free_pages()));
    }
    if (!arriving) mem.set_external_pages(0);
    // Aborts in whatever state, and degrade-policy changes.
    if (!live.empty() && chance(0.04)) {
      auto it = std::next(live.begin(), uniform(0, static_cast<int>(live.size()) - 1));
      auto f = sched.Abort(it->first);
      ASSERT_TRUE(f.ok()) << f.status();
      ASSERT_TRUE(mem.Release(*f).ok());
      live.erase(it);
      ++finished;
    }
    if (!live.empty() && chance(0.1)) {
      auto it = std::next(live.begin(), uniform(0, static_cast<int>(live.size()) - 1));
      it->second.decode_num_iter = uniform(0, 30);
      ASSERT_TRUE(sched.SetDecodeNumIter(it->first, it->second.decode_num_iter).ok());
    }

    // Between steps the scheduler's page accounting is the memory's, sequence by sequence.
    for (const auto& [id, e] : live) {
      auto info = sched.Get(id);
      ASSERT_TRUE(info.ok()) << info.status();
      EXPECT_EQ(info->pages_held, mem.PagesOf(id));
      EXPECT_EQ(info->num_computed, mem.Length(id) < 0 ? 0 : mem.Length(id));
    }
    EXPECT_EQ(sched.pages_held(), mem.used_pages());

    StepPlan plan = sched.Schedule();
    // Now and then the Forward fails before changing anything: the memory moves of the plan
    // happened, its batch did not.
    const bool forward_fails = !plan.batch.empty() && chance(0.01);
    StepPlan executed_part = plan;
    if (forward_fails) executed_part.batch.clear();
    absl::Status executed = mem.Execute(executed_part);
    ASSERT_TRUE(executed.ok()) << executed;

    // Budget, caps and per-item contents.
    int64_t tokens = 0;
    bool has_prefill = false, has_decode = false;
    for (const BatchItem& item : plan.batch) {
      tokens += static_cast<int64_t>(item.tokens.size());
      const Expect& e = live.at(item.id);
      EXPECT_EQ(item.num_iter, item.prefill ? e.prefill_num_iter : e.decode_num_iter);
      EXPECT_EQ(item.prefill, item.position < e.prompt_len);
      if (item.prefill) {
        EXPECT_LE(static_cast<int32_t>(item.tokens.size()), options.prefill_chunk_size);
        EXPECT_EQ(item.needs_logits,
                  item.position + static_cast<int64_t>(item.tokens.size()) == e.prompt_len);
      } else {
        EXPECT_EQ(item.tokens.size(), 1u);
        EXPECT_TRUE(item.needs_logits);
      }
      (item.prefill ? has_prefill : has_decode) = true;
    }
    mixed_steps += has_prefill && has_decode;
    EXPECT_LE(tokens, options.max_batch_tokens);
    EXPECT_LE(static_cast<int32_t>(plan.batch.size()), options.max_running_seqs);
    for (SequenceId id : plan.preempt) {
      EXPECT_EQ(std::count(plan.resume.begin(), plan.resume.end(), id), 0);
      EXPECT_EQ(std::count(plan.admit.begin(), plan.admit.end(), id), 0);
    }
    preemptions += static_cast<int64_t>(plan.preempt.size());
    resumes += static_cast<int64_t>(plan.resume.size());

    // Rank: no sequence is swapped out while one it outranks keeps pages, so the best
    // sequence is never preempted while a lower one runs.
    std::vector<SequenceInfo> resident;
    for (const auto& [id, e] : live) {
      auto info = sched.Get(id);
      ASSERT_TRUE(info.ok()) << info.status();
      const bool on_device =
          info->state == SequenceState::kPrefilling || info->state == SequenceState::kDecoding;
      EXPECT_EQ(on_device, mem.OnDevice(id));
      EXPECT_EQ(info->state == SequenceState::kPreempted, mem.OnHost(id));
      if (on_device) resident.push_back(*info);
    }
    for (SequenceId id : plan.preempt) {
      auto victim = sched.Get(id);
      ASSERT_TRUE(victim.ok());
      for (const SequenceInfo& r : resident) {
        // A sequence admitted in a step whose Forward failed holds a slot but no page; it
        // cannot give a decode step the page it needs, so it may stay.
        if (r.pages_held == 0) continue;
        EXPECT_FALSE(Outranks(*victim, r))
            << "preempted " << id << " while lower-ranked " << r.id << " stays resident";
      }
    }
    EXPECT_EQ(sched.num_resident(), mem.num_on_device());
    EXPECT_LE(sched.num_resident(), options.max_running_seqs);

    // Sample: random tokens (EOS sometimes); now and then sampling fails for a sequence.
    if (plan.batch.empty()) {
      // No work while sequences are live is only allowed while memory is held elsewhere or
      // the step is spent swapping out.
      if (sched.num_sequences() > 0 && mem.external_pages() == 0 && plan.preempt.empty()) {
        ADD_FAILURE() << "idle step with " << sched.num_sequences() << " live sequences";
      }
      continue;
    }
    if (forward_fails) {
      sched.CancelStep();
      ++cancelled;
      continue;
    }
    std::vector<StepOutput> outputs;
    for (const BatchItem& item : plan.batch) {
      if (!item.needs_logits) continue;
      std::optional<int32_t> token = uniform(0, kVocab - 1);
      if (chance(0.002)) token.reset();
      outputs.push_back({item.id, token});
    }
    auto done = sched.OnStepComplete(outputs);
    ASSERT_TRUE(done.ok()) << done.status();
    for (const FinishedSequence& f : *done) {
      ASSERT_TRUE(mem.Release(f).ok());
      auto it = live.find(f.id);
      ASSERT_NE(it, live.end());
      const Expect& e = it->second;
      const int32_t n = static_cast<int32_t>(f.generated.size());
      if (f.reason != FinishReason::kError) {
        ASSERT_GE(n, 1);
      }
      EXPECT_LE(n, e.max_new_tokens);
      for (int32_t i = 0; i + 1 < n; ++i) EXPECT_FALSE(stops(e, f.generated[i])) << i;
      switch (f.reason) {
        case FinishReason::kStopToken:
          EXPECT_TRUE(stops(e, f.generated.back()));
          break;
        case FinishReason::kMaxTokens:
          EXPECT_EQ(n, e.max_new_tokens);
          EXPECT_FALSE(stops(e, f.generated.back()));
          break;
        case FinishReason::kPrefillDone:
          EXPECT_TRUE(options.prefill_only);
          EXPECT_EQ(n, 1);
          break;
        case FinishReason::kError:
          break;
        case FinishReason::kAborted:
          ADD_FAILURE() << "aborted without Abort";
      }
      EXPECT_FALSE(sched.Get(f.id).ok());
      live.erase(it);
      ++finished;
    }
  }
  EXPECT_EQ(sched.num_sequences(), 0) << "not everything finished by step " << step;
  EXPECT_EQ(mem.used_pages(), 0);
  EXPECT_EQ(mem.num_on_host(), 0);
  EXPECT_EQ(finished, next_id);
  // The workload must have exercised what it checks.
  EXPECT_GT(preemptions, 10) << c.name;
  EXPECT_GT(resumes, 10) << c.name;
  EXPECT_GT(cancelled, 5) << c.name;
  if (!options.prefill_only && options.decode_first) EXPECT_GT(mixed_steps, 100) << c.name;
  RecordProperty("preemptions", std::to_string(preemptions));
  RecordProperty("steps", std::to_string(step));
}

INSTANTIATE_TEST_SUITE_P(Workloads, SchedulerPropertyTest,
                         ::testing::Values(Config{"decode_first",
                                                  {.max_batch_tokens = 24,
                                                   .max_running_seqs = 6,
                                                   .prefill_chunk_size = 8,
                                                   .max_model_len = 48},
                                                  4,
                                                  24,
                                                  6,
                                                  1},
                                           Config{"rank_order",
                                                  {.max_batch_tokens = 16,
                                                   .max_running_seqs = 5,
                                                   .prefill_chunk_size = 12,
                                                   .max_model_len = 48,
                                                   .decode_first = false},
                                                  4,
                                                  20,
                                                  8,
                                                  2},
                                           Config{"tight_pages",
                                                  {.max_batch_tokens = 32,
                                                   .max_running_seqs = 8,
                                                   .prefill_chunk_size = 16,
                                                   .max_model_len = 48},
                                                  8,
                                                  10,
                                                  8,
                                                  3},
                                           Config{"prefill_only",
                                                  {.max_batch_tokens = 20,
                                                   .max_running_seqs = 4,
                                                   .prefill_chunk_size = 7,
                                                   .max_model_len = 48,
                                                   .prefill_only = true},
                                                  4,
                                                  12,
                                                  4,
                                                  4}),
                         [](const ::testing::TestParamInfo<Config>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace gka::scheduler
