#include "common/scheduler/scheduler.h"

#include <algorithm>
#include <functional>
#include <numeric>

#include "common/scheduler/scheduler_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using testing::ScriptedMemory;

constexpr int32_t kEos = 2;

std::vector<int32_t> Iota(int32_t n, int32_t start = 100) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

Request Req(int64_t id, int32_t prompt_len, int32_t max_new = 16, int32_t priority = 0) {
  return Request{.id = SequenceId(id),
                 .priority = priority,
                 .prompt = Iota(prompt_len, 100 + 1000 * static_cast<int32_t>(id)),
                 .max_new_tokens = max_new};
}

std::vector<int64_t> Ids(const std::vector<SequenceId>& ids) {
  std::vector<int64_t> out;
  for (SequenceId id : ids) out.push_back(id.value());
  return out;
}

// A scheduler over a scripted memory, with a helper that runs one whole step the way a worker
// would and fails the test if the plan overdraws memory.
class SchedulerTest : public ::testing::Test {
 protected:
  void Init(SchedulerOptions options, int32_t page_size, int32_t pages, int32_t slots) {
    mem_ = std::make_unique<ScriptedMemory>(page_size, pages, slots);
    options.eos_token_ids = {kEos};
    auto s = Scheduler::Create(options, mem_.get());
    ASSERT_TRUE(s.ok()) << s.status();
    sched_ = *std::move(s);
  }

  struct Step {
    StepPlan plan;
    std::vector<FinishedSequence> finished;
    // The plan's token spans are valid only until OnStepComplete (scheduler.h); the tests read
    // them afterwards, so they point here.
    std::vector<std::vector<int32_t>> tokens;
  };
  // `token_for` picks the sampled token of each item that needs logits (default 7).
  Step RunStep(std::function<int32_t(SequenceId)> token_for = nullptr) {
    Step step;
    step.plan = sched_->Schedule();
    absl::Status executed = mem_->Execute(step.plan);
    EXPECT_TRUE(executed.ok()) << executed;
    if (step.plan.batch.empty()) return step;
    for (BatchItem& item : step.plan.batch) {
      step.tokens.emplace_back(item.tokens.begin(), item.tokens.end());
      item.tokens = step.tokens.back();
    }
    std::vector<StepOutput> outputs;
    for (const BatchItem& item : step.plan.batch) {
      if (item.needs_logits) outputs.push_back({item.id, token_for ? token_for(item.id) : 7});
    }
    auto finished = sched_->OnStepComplete(outputs);
    EXPECT_TRUE(finished.ok()) << finished.status();
    if (!finished.ok()) return step;
    step.finished = *std::move(finished);
    for (const FinishedSequence& f : step.finished) {
      absl::Status released = mem_->Release(f);
      EXPECT_TRUE(released.ok()) << released;
    }
    return step;
  }

  SequenceState StateOf(int64_t id) {
    auto info = sched_->Get(SequenceId(id));
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->state : SequenceState::kFinished;
  }

  static const BatchItem* Find(const StepPlan& plan, int64_t id) {
    for (const BatchItem& item : plan.batch) {
      if (item.id == SequenceId(id)) return &item;
    }
    return nullptr;
  }

  std::unique_ptr<ScriptedMemory> mem_;
  std::unique_ptr<Scheduler> sched_;
};

TEST_F(SchedulerTest, CreateRejectsBadOptionsNamingThem) {
  ScriptedMemory mem(16, 8, 2);
  auto expect_bad = [&](SchedulerOptions o, absl::string_view field) {
    auto s = Scheduler::Create(o, &mem);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(std::string(field)));
  };
  expect_bad({.max_batch_tokens = 0}, "max_batch_tokens");
  expect_bad({.max_running_seqs = 0}, "max_running_seqs");
  expect_bad({.prefill_chunk_size = 0}, "prefill_chunk_size");
  expect_bad({.max_model_len = 1}, "max_model_len");
  expect_bad({.max_batch_tokens = 4, .max_running_seqs = 8}, "max_running_seqs");
  expect_bad({.eos_token_ids = {-1}}, "eos_token_ids");
  ScriptedMemory no_pages(0, 8, 2);
  EXPECT_THAT(std::string(Scheduler::Create({}, &no_pages).status().message()),
              HasSubstr("page_size"));
  EXPECT_EQ(Scheduler::Create({}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, InvalidRequestsNameTheField) {
  Init({.max_model_len = 32}, 4, 64, 4);
  auto expect_bad = [&](Request r, absl::string_view field) {
    absl::Status s = sched_->Add(r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field << ": " << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(field)));
  };
  expect_bad(Req(-1, 4), "id");
  expect_bad(Req(1, 0), "prompt");
  Request neg = Req(1, 4);
  neg.prompt[2] = -5;
  expect_bad(neg, "prompt[2]");
  expect_bad(Req(1, 4, /*max_new=*/0), "max_new_tokens");
  expect_bad(Req(1, 32, 1), "prompt");           // prompt alone fills the context
  expect_bad(Req(1, 20, 13), "max_new_tokens");  // 20 + 13 > 32
  Request iters = Req(1, 4);
  iters.prefill_num_iter = -2;
  expect_bad(iters, "prefill_num_iter");
  iters = Req(1, 4);
  iters.decode_num_iter = -3;
  expect_bad(iters, "decode_num_iter");
  Request stops = Req(1, 4);
  stops.stop_token_ids = {-1};
  expect_bad(stops, "stop_token_ids");
  EXPECT_EQ(sched_->num_sequences(), 0);

  ASSERT_TRUE(sched_->Add(Req(1, 20, 12)).ok());  // exactly max_model_len
  EXPECT_EQ(sched_->Add(Req(1, 4)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(sched_->AddPrefilled(Req(2, 4), -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, ContinuousBatchingMixesDecodeAndPrefillChunksWithinBudget) {
  Init({.max_batch_tokens = 8, .max_running_seqs = 4, .prefill_chunk_size = 8}, 4, 64, 4);
  ASSERT_TRUE(sched_->Add(Req(1, 3)).ok());
  Step s1 = RunStep();
  ASSERT_EQ(s1.plan.batch.size(), 1u);
  EXPECT_THAT(Ids(s1.plan.admit), ElementsAre(1));
  EXPECT_TRUE(s1.plan.batch[0].prefill);
  EXPECT_TRUE(s1.plan.batch[0].needs_logits);
  EXPECT_EQ(StateOf(1), SequenceState::kDecoding);

  const Request b = Req(2, 20);
  ASSERT_TRUE(sched_->Add(b).ok());
  int64_t fed = 0;
  for (int step = 0; step < 3; ++step) {
    Step s = RunStep();
    // Decode goes first and takes one token; the prompt chunk fills the rest of the budget.
    ASSERT_EQ(s.plan.batch.size(), 2u) << step;
    EXPECT_EQ(s.plan.batch[0].id, SequenceId(1));
    EXPECT_FALSE(s.plan.batch[0].prefill);
    EXPECT_TRUE(s.plan.batch[0].needs_logits);
    const BatchItem& chunk = s.plan.batch[1];
    EXPECT_EQ(chunk.id, SequenceId(2));
    EXPECT_TRUE(chunk.prefill);
    EXPECT_EQ(chunk.position, fed);
    const int64_t want = std::min<int64_t>(7, 20 - fed);
    EXPECT_THAT(chunk.tokens, ElementsAreArray(b.prompt.data() + fed, want));
    EXPECT_EQ(chunk.needs_logits, fed + want == 20);
    int64_t total = 0;
    for (const BatchItem& item : s.plan.batch) total += item.tokens.size();
    EXPECT_LE(total, 8);
    fed += want;
  }
  EXPECT_EQ(fed, 20);
  EXPECT_EQ(StateOf(2), SequenceState::kDecoding);
  Step both = RunStep();
  ASSERT_EQ(both.plan.batch.size(), 2u);
  EXPECT_FALSE(both.plan.batch[1].prefill);
}

TEST_F(SchedulerTest, ChunkedPrefillOfLongPromptSpansSteps) {
  Init({.max_batch_tokens = 100, .max_running_seqs = 4, .prefill_chunk_size = 16}, 4, 64, 4);
  Request r = Req(5, 37);
  r.prefill_num_iter = 30;
  r.decode_num_iter = 10;
  ASSERT_TRUE(sched_->Add(r).ok());
  EXPECT_EQ(sched_->queued_prompt_tokens(), 37);
  const int64_t starts[] = {0, 16, 32};
  const int64_t lens[] = {16, 16, 5};
  for (int i = 0; i < 3; ++i) {
    Step s = RunStep();
    ASSERT_EQ(s.plan.batch.size(), 1u);
    const BatchItem& item = s.plan.batch[0];
    EXPECT_EQ(item.position, starts[i]);
    EXPECT_THAT(item.tokens, ElementsAreArray(r.prompt.data() + starts[i], lens[i]));
    EXPECT_TRUE(item.prefill);
    EXPECT_EQ(item.num_iter, 30);
    EXPECT_EQ(item.needs_logits, i == 2);
    EXPECT_EQ(StateOf(5), i == 2 ? SequenceState::kDecoding : SequenceState::kPrefilling);
    EXPECT_EQ(sched_->queued_prompt_tokens(), 37 - starts[i] - lens[i]);
  }
  EXPECT_EQ(mem_->Length(SequenceId(5)), 37);
  EXPECT_EQ(sched_->Get(SequenceId(5))->pages_held, 10);  // ceil(37 / 4)
  Step d = RunStep([](SequenceId) { return 9; });
  ASSERT_EQ(d.plan.batch.size(), 1u);
  EXPECT_THAT(d.plan.batch[0].tokens, ElementsAre(7));  // the token sampled after the prompt
  EXPECT_EQ(d.plan.batch[0].num_iter, 10);
  EXPECT_EQ(d.plan.batch[0].position, 37);
  EXPECT_THAT(sched_->Get(SequenceId(5))->generated, ElementsAre(7, 9));
}

TEST_F(SchedulerTest, NumIterCarriedPerSequenceAndChangeableForDecode) {
  Init({.max_batch_tokens = 64, .max_running_seqs = 4}, 4, 64, 4);
  Request a = Req(1, 4), b = Req(2, 4);
  a.prefill_num_iter = 30, a.decode_num_iter = 30;
  b.prefill_num_iter = 5, b.decode_num_iter = 1;
  ASSERT_TRUE(sched_->Add(a).ok());
  ASSERT_TRUE(sched_->Add(b).ok());
  Step p = RunStep();
  EXPECT_EQ(Find(p.plan, 1)->num_iter, 30);
  EXPECT_EQ(Find(p.plan, 2)->num_iter, 5);
  Step d = RunStep();
  EXPECT_EQ(Find(d.plan, 1)->num_iter, 30);
  EXPECT_EQ(Find(d.plan, 2)->num_iter, 1);
  ASSERT_TRUE(sched_->SetDecodeNumIter(SequenceId(1), 10).ok());
  EXPECT_EQ(sched_->SetDecodeNumIter(SequenceId(1), -2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sched_->SetDecodeNumIter(SequenceId(9), 5).code(), absl::StatusCode::kNotFound);
  Step d2 = RunStep();
  EXPECT_EQ(Find(d2.plan, 1)->num_iter, 10);
  EXPECT_EQ(Find(d2.plan, 2)->num_iter, 1);
}

TEST_F(SchedulerTest, DecodePreemptsLowestPriorityThenMostRecentAndResumesLater) {
  // 4-token pages, 6 pages: three 4-token prompts hold one page each; decoding needs more.
  Init({.max_batch_tokens = 16, .max_running_seqs = 4}, 4, 6, 4);
  ASSERT_TRUE(sched_->Add(Req(1, 4, 30, /*priority=*/5)).ok());
  ASSERT_TRUE(sched_->Add(Req(2, 4, 30, /*priority=*/1)).ok());
  ASSERT_TRUE(sched_->Add(Req(3, 4, 30, /*priority=*/1)).ok());  // same as 2, arrived later
  Step s = RunStep();
  EXPECT_THAT(Ids(s.plan.admit), ElementsAre(1, 2, 3));
  EXPECT_EQ(mem_->free_pages(), 3);
  // Each decoder's first token needs a second page: 3 free, so all fit.
  s = RunStep();
  EXPECT_TRUE(s.plan.preempt.empty());
  EXPECT_EQ(mem_->free_pages(), 0);
  // Three more tokens fill those pages; the next token needs a third page each, none free.
  // Seq 1 (priority 5) preempts the lowest ranked: 3 (priority 1, arrived after 2). That frees
  // two pages, so 2 gets the other one and nobody else is swapped out.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(RunStep().plan.preempt.empty());
  s = RunStep();
  EXPECT_THAT(Ids(s.plan.preempt), ElementsAre(3));
  EXPECT_NE(Find(s.plan, 1), nullptr);
  EXPECT_NE(Find(s.plan, 2), nullptr);
  EXPECT_EQ(Find(s.plan, 3), nullptr);
  EXPECT_EQ(StateOf(3), SequenceState::kPreempted);
  EXPECT_TRUE(mem_->OnHost(SequenceId(3)));
  EXPECT_EQ(mem_->Length(SequenceId(3)), 8);
  EXPECT_EQ(sched_->Get(SequenceId(3))->pages_held, 0);
  // While memory stays short, 3 stays out.
  s = RunStep();
  EXPECT_TRUE(s.plan.resume.empty());

  // Finish seq 1: its pages free up and the preempted sequence comes back.
  auto f = sched_->Abort(SequenceId(1));
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(mem_->Release(*f).ok());
  s = RunStep();
  EXPECT_THAT(Ids(s.plan.resume), ElementsAre(3));
  EXPECT_EQ(StateOf(3), SequenceState::kDecoding);
  const BatchItem* three = Find(s.plan, 3);
  ASSERT_NE(three, nullptr);
  EXPECT_EQ(three->position, 8);  // picks up where it left off: swap, not recompute
  EXPECT_FALSE(three->prefill);
}

TEST_F(SchedulerTest, LowestDecoderPreemptsItselfAndHigherKeepsRunning) {
  Init({.max_batch_tokens = 16, .max_running_seqs = 4}, 4, 3, 4);
  ASSERT_TRUE(sched_->Add(Req(1, 4, 30, /*priority=*/9)).ok());
  ASSERT_TRUE(sched_->Add(Req(2, 4, 30, /*priority=*/0)).ok());
  RunStep();           // both prefilled: one page each, one free
  Step s = RunStep();  // 1 takes the free page; 2 has nobody below it
  EXPECT_THAT(Ids(s.plan.preempt), ElementsAre(2));
  ASSERT_EQ(s.plan.batch.size(), 1u);
  EXPECT_EQ(s.plan.batch[0].id, SequenceId(1));
  EXPECT_EQ(StateOf(2), SequenceState::kPreempted);
  // With 2 out, 1 runs alone and 2 stays out until enough is free for it to take a step.
  for (int i = 0; i < 3; ++i) {
    s = RunStep();
    EXPECT_TRUE(s.plan.resume.empty());
    EXPECT_TRUE(s.plan.preempt.empty());
  }
}

TEST_F(SchedulerTest, HighPriorityArrivalPreemptsLowerRunningForASlot) {
  Init({.max_batch_tokens = 16, .max_running_seqs = 2}, 4, 32, 8);
  ASSERT_TRUE(sched_->Add(Req(1, 4, 30, 0)).ok());
  ASSERT_TRUE(sched_->Add(Req(2, 4, 30, 1)).ok());
  RunStep();
  ASSERT_TRUE(sched_->Add(Req(3, 4, 30, 0)).ok());  // equal to 1 but later: must wait
  Step s = RunStep();
  EXPECT_TRUE(s.plan.preempt.empty());
  EXPECT_EQ(StateOf(3), SequenceState::kWaiting);
  ASSERT_TRUE(sched_->Add(Req(4, 4, 30, 5)).ok());  // outranks both running
  s = RunStep();
  EXPECT_THAT(Ids(s.plan.preempt), ElementsAre(1));
  EXPECT_THAT(Ids(s.plan.admit), ElementsAre(4));
  EXPECT_EQ(Find(s.plan, 1), nullptr);  // its decode item was withdrawn
  EXPECT_NE(Find(s.plan, 2), nullptr);
  EXPECT_EQ(StateOf(3), SequenceState::kWaiting);  // ranks below the preempted 1
  EXPECT_EQ(sched_->num_resident(), 2);
}

TEST_F(SchedulerTest, HighestPriorityIsNeverPreemptedWhileLowerRuns) {
  // Memory for about two growing sequences; the top one must always be resident and stepping.
  Init({.max_batch_tokens = 32, .max_running_seqs = 4, .prefill_chunk_size = 8}, 4, 10, 4);
  ASSERT_TRUE(sched_->Add(Req(1, 6, 30, 1)).ok());
  ASSERT_TRUE(sched_->Add(Req(2, 6, 30, 1)).ok());
  ASSERT_TRUE(sched_->Add(Req(3, 6, 30, 7)).ok());
  for (int i = 0; i < 25; ++i) {
    Step s = RunStep();
    EXPECT_EQ(std::count(s.plan.preempt.begin(), s.plan.preempt.end(), SequenceId(3)), 0) << i;
    EXPECT_NE(Find(s.plan, 3), nullptr) << i;
    if (!sched_->Get(SequenceId(3)).ok()) break;
  }
}

TEST_F(SchedulerTest, StopConditions) {
  Init({.max_batch_tokens = 64, .max_running_seqs = 8}, 4, 64, 8);
  Request stop = Req(1, 3, 10);
  stop.stop_token_ids = {42};
  Request eos = Req(2, 3, 10);
  Request ignore = Req(3, 3, 10);
  ignore.ignore_eos = true;
  ignore.stop_token_ids = {43};
  Request length = Req(4, 3, 2);
  for (const Request& r : {stop, eos, ignore, length}) ASSERT_TRUE(sched_->Add(r).ok());

  Step s = RunStep([](SequenceId) { return 7; });  // first tokens: none stops
  EXPECT_TRUE(s.finished.empty());
  s = RunStep([](SequenceId id) {
    switch (id.value()) {
      case 1:
        return 42;  // its stop id
      case 2:
        return kEos;
      case 3:
        return kEos;  // ignored
      default:
        return 8;  // second token of 2 allowed
    }
  });
  ASSERT_EQ(s.finished.size(), 3u);
  absl::flat_hash_map<int64_t, FinishedSequence> by_id;
  for (const auto& f : s.finished) by_id[f.id.value()] = f;
  EXPECT_EQ(by_id[1].reason, FinishReason::kStopToken);
  EXPECT_THAT(by_id[1].generated, ElementsAre(7, 42));
  EXPECT_EQ(by_id[2].reason, FinishReason::kStopToken);
  EXPECT_THAT(by_id[2].generated, ElementsAre(7, kEos));
  EXPECT_EQ(by_id[4].reason, FinishReason::kMaxTokens);
  EXPECT_THAT(by_id[4].generated, ElementsAre(7, 8));
  for (const auto& f : s.finished) EXPECT_EQ(f.residence, Residence::kDevice);
  EXPECT_EQ(StateOf(3), SequenceState::kDecoding);
  s = RunStep([](SequenceId) { return 43; });  // stop ids still apply with ignore_eos
  ASSERT_EQ(s.finished.size(), 1u);
  EXPECT_EQ(s.finished[0].reason, FinishReason::kStopToken);
  EXPECT_EQ(sched_->num_sequences(), 0);
  EXPECT_EQ(mem_->used_pages(), 0);
  EXPECT_EQ(mem_->num_on_device(), 0);
}

TEST_F(SchedulerTest, AbortInEveryStateFreesAccounting) {
  Init({.max_batch_tokens = 8, .max_running_seqs = 3, .prefill_chunk_size = 4}, 4, 6, 3);
  // 1: decoding (high priority), 2: prefilling, 3: preempted, 4: waiting.
  ASSERT_TRUE(sched_->Add(Req(1, 4, 40, 9)).ok());
  ASSERT_TRUE(sched_->Add(Req(3, 4, 40, 0)).ok());
  RunStep();
  RunStep();
  ASSERT_TRUE(sched_->Add(Req(2, 20, 40, 5)).ok());
  ASSERT_TRUE(sched_->Add(Req(4, 3, 40, 0)).ok());
  for (int i = 0; i < 10 && StateOf(3) != SequenceState::kPreempted; ++i) RunStep();
  ASSERT_EQ(StateOf(3), SequenceState::kPreempted);
  ASSERT_EQ(StateOf(2), SequenceState::kPrefilling);
  ASSERT_EQ(StateOf(1), SequenceState::kDecoding);
  ASSERT_EQ(StateOf(4), SequenceState::kWaiting);

  const Residence want[] = {Residence::kNone, Residence::kDevice, Residence::kDevice,
                            Residence::kHost, Residence::kNone};
  for (int64_t id : {4, 3, 2}) {
    auto f = sched_->Abort(SequenceId(id));
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(f->reason, FinishReason::kAborted);
    EXPECT_EQ(f->residence, want[id]) << id;
    ASSERT_TRUE(mem_->Release(*f).ok());
    EXPECT_EQ(sched_->Get(SequenceId(id)).status().code(), absl::StatusCode::kNotFound);
  }
  // Abort while its step is in flight: the step's output for it is ignored.
  StepPlan plan = sched_->Schedule();
  ASSERT_TRUE(mem_->Execute(plan).ok());
  ASSERT_NE(Find(plan, 1), nullptr);
  auto f = sched_->Abort(SequenceId(1), FinishReason::kError);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->reason, FinishReason::kError);
  EXPECT_EQ(f->residence, Residence::kDevice);
  ASSERT_TRUE(mem_->Release(*f).ok());
  auto done = sched_->OnStepComplete({{SequenceId(1), 7}});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->empty());

  EXPECT_EQ(sched_->num_sequences(), 0);
  EXPECT_EQ(sched_->pages_held(), 0);
  EXPECT_EQ(sched_->queued_prompt_tokens(), 0);
  EXPECT_EQ(mem_->used_pages(), 0);
  EXPECT_EQ(mem_->num_on_host(), 0);
  EXPECT_EQ(mem_->free_slots(), 3);
  EXPECT_EQ(sched_->Abort(SequenceId(1)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(sched_->Abort(SequenceId(1), FinishReason::kMaxTokens).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(sched_->Schedule().empty());
}

TEST_F(SchedulerTest, OnStepCompleteValidatesBeforeChangingAnything) {
  Init({.max_batch_tokens = 8, .max_running_seqs = 2, .prefill_chunk_size = 4}, 4, 16, 2);
  EXPECT_EQ(sched_->OnStepComplete({}).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(sched_->Add(Req(1, 10)).ok());
  ASSERT_TRUE(sched_->Add(Req(2, 2)).ok());
  StepPlan plan = sched_->Schedule();
  ASSERT_TRUE(mem_->Execute(plan).ok());
  ASSERT_FALSE(Find(plan, 1)->needs_logits);
  ASSERT_TRUE(Find(plan, 2)->needs_logits);
  auto code = [&](std::vector<StepOutput> out) {
    return sched_->OnStepComplete(out).status().code();
  };
  EXPECT_EQ(code({{SequenceId(9), 1}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SequenceId(1), 1}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SequenceId(2), -1}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({{SequenceId(2), 1}, {SequenceId(2), 1}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sched_->Get(SequenceId(1))->num_computed, 0);
  EXPECT_TRUE(sched_->step_in_flight());
  // No token where one was needed: the worker could not sample it.
  auto done =
      sched_->OnStepComplete({{SequenceId(1), std::nullopt}, {SequenceId(2), std::nullopt}});
  ASSERT_TRUE(done.ok());
  ASSERT_EQ(done->size(), 1u);
  EXPECT_EQ((*done)[0].id, SequenceId(2));
  EXPECT_EQ((*done)[0].reason, FinishReason::kError);
  EXPECT_EQ(sched_->Get(SequenceId(1))->num_computed, 4);
}

TEST_F(SchedulerTest, CancelStepAdvancesNothing) {
  Init({.max_batch_tokens = 8, .max_running_seqs = 2, .prefill_chunk_size = 4}, 4, 16, 2);
  ASSERT_TRUE(sched_->Add(Req(1, 10)).ok());
  StepPlan first = sched_->Schedule();
  ASSERT_TRUE(mem_->Execute(StepPlan{.admit = first.admit}).ok());  // Forward "failed"
  sched_->CancelStep();
  EXPECT_FALSE(sched_->step_in_flight());
  StepPlan again = sched_->Schedule();
  EXPECT_TRUE(again.admit.empty());  // the admission stands
  ASSERT_EQ(again.batch.size(), 1u);
  EXPECT_EQ(again.batch[0].position, 0);
  EXPECT_EQ(again.batch[0].tokens.size(), 4u);
}

TEST_F(SchedulerTest, AddPrefilledDecodesAtOnceOrFinishesOnItsFirstToken) {
  Init({.max_batch_tokens = 8, .max_running_seqs = 4}, 4, 16, 4);
  ASSERT_TRUE(mem_->Import(SequenceId(1), 6).ok());
  auto r = sched_->AddPrefilled(Req(1, 6), 55);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(StateOf(1), SequenceState::kDecoding);
  EXPECT_EQ(sched_->pages_held(), mem_->used_pages());
  Step s = RunStep();
  ASSERT_EQ(s.plan.batch.size(), 1u);
  EXPECT_THAT(s.plan.batch[0].tokens, ElementsAre(55));
  EXPECT_EQ(s.plan.batch[0].position, 6);

  auto one = sched_->AddPrefilled(Req(2, 3, /*max_new=*/1), 9);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, FinishReason::kMaxTokens);
  auto eos = sched_->AddPrefilled(Req(3, 3), kEos);
  ASSERT_TRUE(eos.ok());
  EXPECT_EQ(*eos, FinishReason::kStopToken);
  EXPECT_EQ(sched_->num_sequences(), 1);
}

TEST_F(SchedulerTest, PrefillOnlyModeBatchesPromptsAndEndsAfterFirstToken) {
  Init({.max_batch_tokens = 16,
        .max_running_seqs = 4,
        .prefill_chunk_size = 16,
        .prefill_only = true},
       4, 32, 4);
  EXPECT_EQ(sched_->AddPrefilled(Req(9, 3), 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(sched_->Add(Req(1, 10)).ok());
  ASSERT_TRUE(sched_->Add(Req(2, 10)).ok());
  Request stops = Req(3, 4);
  stops.stop_token_ids = {7};
  ASSERT_TRUE(sched_->Add(stops).ok());
  EXPECT_EQ(sched_->queued_prompt_tokens(), 24);
  Step s = RunStep();  // 10 + 6 of the second: the budget is 16
  ASSERT_EQ(s.plan.batch.size(), 2u);
  EXPECT_EQ(s.plan.batch[1].tokens.size(), 6u);
  EXPECT_EQ(sched_->queued_prompt_tokens(), 8);
  ASSERT_EQ(s.finished.size(), 1u);
  EXPECT_EQ(s.finished[0].reason, FinishReason::kPrefillDone);
  EXPECT_EQ(s.finished[0].residence, Residence::kDevice);
  EXPECT_THAT(s.finished[0].generated, ElementsAre(7));
  s = RunStep();
  ASSERT_EQ(s.finished.size(), 2u);
  EXPECT_EQ(s.finished[0].reason, FinishReason::kPrefillDone);
  EXPECT_EQ(s.finished[1].reason, FinishReason::kStopToken);  // done without decoding at all
  EXPECT_EQ(sched_->num_sequences(), 0);
  EXPECT_EQ(sched_->queued_prompt_tokens(), 0);
}

TEST_F(SchedulerTest, MaxRunningSeqsCapsResidentsAndBatch) {
  Init({.max_batch_tokens = 64, .max_running_seqs = 2}, 4, 64, 8);
  for (int id = 1; id <= 5; ++id) ASSERT_TRUE(sched_->Add(Req(id, 3)).ok());
  for (int i = 0; i < 4; ++i) {
    Step s = RunStep();
    EXPECT_LE(sched_->num_resident(), 2);
    EXPECT_LE(s.plan.batch.size(), 2u);
  }
  EXPECT_EQ(sched_->num_waiting(), 3);
}

TEST_F(SchedulerTest, NamesAreStable) {
  EXPECT_EQ(FinishReasonName(FinishReason::kMaxTokens), "length");
  EXPECT_EQ(FinishReasonName(FinishReason::kStopToken), "stop");
  EXPECT_EQ(SequenceStateName(SequenceState::kPreempted), "preempted");
  EXPECT_EQ(ResidenceName(Residence::kHost), "host");
}

}  // namespace
}  // namespace gka::scheduler
