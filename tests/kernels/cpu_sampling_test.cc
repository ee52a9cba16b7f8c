// CPU Sample: greedy, truncation (top-k, top-p, min-p), penalties, vocab_limit, seeded
// reproducibility and independence from the batch.
#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace gka::kernels::cpu {
namespace {

using testing::HostTensor;
using testing::IsInvalidArgumentStatus;
using testing::RandomTensor;

struct Draw {
  int32_t id;
  float logprob;
};

// Samples one row alone; `logits` is copied so callers can reuse it.
Draw SampleOne(const std::vector<float>& logits, const SamplingConfig& config, uint64_t step,
               int32_t vocab_limit = 0, const std::vector<int32_t>& history = {}) {
  HostTensor row({1, static_cast<int64_t>(logits.size())});
  row.values() = logits;
  const std::vector<int32_t> offsets = {0, static_cast<int32_t>(history.size())};
  int32_t id = -1;
  float logprob = 0.0f;
  const absl::Status s = Sample({.logits = row.view(),
                                 .vocab_limit = vocab_limit,
                                 .configs = &config,
                                 .steps = &step,
                                 .history = history.data(),
                                 .history_offsets = offsets.data(),
                                 .out_ids = &id,
                                 .out_logprobs = &logprob,
                                 .num_seqs = 1});
  EXPECT_TRUE(s.ok()) << s;
  return {id, logprob};
}

double LogSoftmax(const std::vector<float>& logits, int id, double temperature = 1.0) {
  double m = -INFINITY, sum = 0.0;
  for (float l : logits) m = std::max(m, l / temperature);
  for (float l : logits) sum += std::exp(l / temperature - m);
  return logits[id] / temperature - m - std::log(sum);
}

std::vector<float> LogProbs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return l;
}

TEST(CpuSampleTest, GreedyTakesTheLowestIdAmongMaxima) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  const Draw d = SampleOne(logits, {.temperature = 0.0f}, 0);
  EXPECT_EQ(d.id, 1);
  EXPECT_NEAR(d.logprob, LogSoftmax(logits, 1), 1e-6);
}

TEST(CpuSampleTest, TopKOneEqualsGreedyForEverySeed) {
  std::mt19937 rng(1);
  HostTensor logits = RandomTensor({1, 50}, rng, -3.0f, 3.0f);
  const int greedy = SampleOne(logits.values(), {.temperature = 0.0f}, 0).id;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    EXPECT_EQ(SampleOne(logits.values(), {.temperature = 1.3f, .top_k = 1, .seed = seed}, seed).id,
              greedy);
  }
}

TEST(CpuSampleTest, SameSeedAndStepReproduceDifferentStepsVary) {
  std::mt19937 rng(2);
  HostTensor logits = RandomTensor({1, 64}, rng, -1.0f, 1.0f);
  const SamplingConfig config{.temperature = 1.0f, .seed = 1234};
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 40; ++step) {
    const Draw a = SampleOne(logits.values(), config, step);
    const Draw b = SampleOne(logits.values(), config, step);
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.logprob, b.logprob);
    EXPECT_NEAR(a.logprob, LogSoftmax(logits.values(), a.id), 1e-5);
    seen.insert(a.id);
  }
  EXPECT_GT(seen.size(), 10u);  // a near-uniform distribution is actually sampled
  SamplingConfig other = config;
  other.seed = 99;
  int differ = 0;
  for (uint64_t step = 0; step < 40; ++step) {
    differ +=
        SampleOne(logits.values(), other, step).id != SampleOne(logits.values(), config, step).id;
  }
  EXPECT_GT(differ, 20);
}

TEST(CpuSampleTest, FrequenciesFollowTheTemperedDistribution) {
  const std::vector<float> logits = LogProbs({0.5, 0.3, 0.15, 0.05});
  std::map<int, int> counts;
  constexpr int kDraws = 4000;
  for (uint64_t step = 0; step < kDraws; ++step) {
    ++counts[SampleOne(logits, {.temperature = 1.0f, .seed = 7}, step).id];
  }
  const double expected[] = {0.5, 0.3, 0.15, 0.05};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(counts[i] / double{kDraws}, expected[i], 0.03) << i;
  // Temperature 2 flattens: p ∝ sqrt(p0).
  const Draw d = SampleOne(logits, {.temperature = 2.0f, .seed = 7}, 3);
  EXPECT_NEAR(d.logprob, LogSoftmax(logits, d.id, 2.0), 1e-5);
}

TEST(CpuSampleTest, TopPKeepsTheSmallestPrefixReachingP) {
  const std::vector<float> logits = LogProbs({0.5, 0.3, 0.2});
  std::set<int32_t> with_06, with_05;
  for (uint64_t step = 0; step < 300; ++step) {
    with_06.insert(SampleOne(logits, {.top_p = 0.6f, .seed = 3}, step).id);
    with_05.insert(SampleOne(logits, {.top_p = 0.5f, .seed = 3}, step).id);
  }
  EXPECT_EQ(with_06, (std::set<int32_t>{0, 1}));
  EXPECT_EQ(with_05, (std::set<int32_t>{0}));  // 0.5 alone reaches p = 0.5
  // Tiny top_p still keeps one token.
  EXPECT_EQ(SampleOne(logits, {.top_p = 1e-6f, .seed = 3}, 0).id, 0);
  // Exact boundary: four equal tokens, p = 0.5 is reached by the first two (lowest ids).
  std::set<int32_t> equal;
  for (uint64_t step = 0; step < 200; ++step) {
    equal.insert(SampleOne({0.0f, 0.0f, 0.0f, 0.0f}, {.top_p = 0.5f, .seed = 4}, step).id);
  }
  EXPECT_EQ(equal, (std::set<int32_t>{0, 1}));
}

TEST(CpuSampleTest, MinPDropsTokensBelowTheScaledMax) {
  const std::vector<float> logits = LogProbs({0.6, 0.3, 0.1});
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 300; ++step) {
    seen.insert(SampleOne(logits, {.min_p = 0.2f, .seed = 5}, step).id);  // cut at 0.12
  }
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
}

TEST(CpuSampleTest, VocabLimitIsRespected) {
  std::vector<float> logits(16, 0.0f);
  logits[12] = 10.0f;  // the best token is padding beyond the limit
  logits[3] = 1.0f;
  EXPECT_EQ(SampleOne(logits, {.temperature = 0.0f}, 0, /*vocab_limit=*/10).id, 3);
  for (uint64_t step = 0; step < 200; ++step) {
    EXPECT_LT(SampleOne(logits, {.seed = 11}, step, 10).id, 10);
  }
}

TEST(CpuSampleTest, PenaltiesChangeTheChoiceAndTheLogits) {
  const std::vector<float> logits = {2.0f, 1.9f, -1.0f, 0.5f};
  // Repetition: positive logits divided, negative multiplied; only seen ids.
  EXPECT_EQ(SampleOne(logits, {.temperature = 0.0f}, 0).id, 0);
  EXPECT_EQ(SampleOne(logits, {.temperature = 0.0f, .repetition_penalty = 1.5f}, 0, 0, {0}).id, 1);

  HostTensor row({1, 4});
  row.values() = logits;
  const SamplingConfig config{.temperature = 0.0f,
                              .repetition_penalty = 2.0f,
                              .presence_penalty = 0.25f,
                              .frequency_penalty = 0.5f};
  const std::vector<int32_t> history = {2, 0, 2}, offsets = {0, 3};
  const uint64_t step = 0;
  int32_t id = -1;
  ASSERT_TRUE(Sample({.logits = row.view(),
                      .configs = &config,
                      .steps = &step,
                      .history = history.data(),
                      .history_offsets = offsets.data(),
                      .out_ids = &id,
                      .num_seqs = 1})
                  .ok());
  EXPECT_FLOAT_EQ(row[0], 2.0f / 2.0f - 0.5f * 1 - 0.25f);
  EXPECT_FLOAT_EQ(row[1], 1.9f);
  EXPECT_FLOAT_EQ(row[2], -1.0f * 2.0f - 0.5f * 2 - 0.25f);
  EXPECT_FLOAT_EQ(row[3], 0.5f);
  EXPECT_EQ(id, 1);
}

TEST(CpuSampleTest, ResultDoesNotDependOnTheBatch) {
  std::mt19937 rng(4);
  constexpr int kB = 5, kV = 40;
  HostTensor logits = RandomTensor({kB, kV}, rng, -2.0f, 2.0f);
  std::vector<SamplingConfig> configs = {
      {.temperature = 0.7f, .top_k = 5, .seed = 1},
      {.temperature = 0.0f},
      {.top_p = 0.8f, .seed = 2},
      {.min_p = 0.1f, .repetition_penalty = 1.3f, .seed = 3},
      {.temperature = 1.5f, .frequency_penalty = 0.4f, .seed = 4}};
  const std::vector<uint64_t> steps = {3, 0, 17, 5, 9};
  const std::vector<int32_t> history = {1, 2, 3, 7, 7, 8};
  const std::vector<int32_t> offsets = {0, 0, 2, 2, 5, 6};
  HostTensor batch_logits = logits;
  std::vector<int32_t> ids(kB);
  std::vector<float> logprobs(kB);
  ASSERT_TRUE(Sample({.logits = batch_logits.view(),
                      .configs = configs.data(),
                      .steps = steps.data(),
                      .history = history.data(),
                      .history_offsets = offsets.data(),
                      .out_ids = ids.data(),
                      .out_logprobs = logprobs.data(),
                      .num_seqs = kB})
                  .ok());
  for (int b = 0; b < kB; ++b) {
    const std::vector<float> row(logits.data() + b * kV, logits.data() + (b + 1) * kV);
    const std::vector<int32_t> mine(history.begin() + offsets[b], history.begin() + offsets[b + 1]);
    const Draw alone = SampleOne(row, configs[b], steps[b], 0, mine);
    EXPECT_EQ(alone.id, ids[b]) << b;
    EXPECT_EQ(alone.logprob, logprobs[b]) << b;
  }
}

TEST(CpuSampleTest, AllMinusInfinityPicksIdZero) {
  const std::vector<float> logits(4, -INFINITY);
  EXPECT_EQ(SampleOne(logits, {.seed = 1}, 0).id, 0);
}

TEST(CpuSampleTest, RejectsBadArguments) {
  HostTensor logits({2, 8});
  const std::vector<SamplingConfig> configs(2);
  const std::vector<uint64_t> steps = {0, 0};
  std::vector<int32_t> ids(2);
  const SampleParams good{.logits = logits.view(),
                          .configs = configs.data(),
                          .steps = steps.data(),
                          .out_ids = ids.data(),
                          .num_seqs = 2};
  ASSERT_TRUE(Sample(good).ok());
  auto with = [&](auto mutate) { return testing::CallChanged(Sample, good, mutate); };
  std::vector<SamplingConfig> bad(2);
  auto with_config = [&](SamplingConfig c) {
    bad[1] = c;
    return with([&](auto& p) { p.configs = bad.data(); });
  };
  const std::vector<int32_t> history = {8}, offsets = {0, 0, 1};
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.num_seqs = 3; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.vocab_limit = 9; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.configs = nullptr; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.out_ids = nullptr; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.history = history.data();
    p.history_offsets = offsets.data();
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.logits = logits.view_as({2, 8}, tensor::DType::kBF16);
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with_config({.temperature = -1.0f})));
  EXPECT_TRUE(IsInvalidArgumentStatus(with_config({.top_k = -1})));
  EXPECT_TRUE(IsInvalidArgumentStatus(with_config({.top_p = 0.0f})));
  EXPECT_TRUE(IsInvalidArgumentStatus(with_config({.min_p = 1.5f})));
  EXPECT_TRUE(IsInvalidArgumentStatus(with_config({.repetition_penalty = 0.0f})));
  EXPECT_TRUE(IsInvalidArgumentStatus(with_config({.num_top_logprobs = -1})));
  EXPECT_TRUE(IsInvalidArgumentStatus(with_config({.num_top_logprobs = kMaxTopLogprobs + 1})));
  // Alternatives asked for without room for them.
  EXPECT_TRUE(IsInvalidArgumentStatus(with_config({.num_top_logprobs = 1})));
}

// ---- top_logprobs alternatives ---------------------------------------------------------

struct Top {
  std::vector<int32_t> ids;  // [kMaxTopLogprobs]
  std::vector<float> logprobs;
  Draw draw;
};

Top SampleWithTop(const std::vector<float>& logits, const SamplingConfig& config, uint64_t step,
                  int32_t vocab_limit = 0, const std::vector<int32_t>& history = {}) {
  HostTensor row({1, static_cast<int64_t>(logits.size())});
  row.values() = logits;
  const std::vector<int32_t> offsets = {0, static_cast<int32_t>(history.size())};
  Top t{std::vector<int32_t>(kMaxTopLogprobs, -7), std::vector<float>(kMaxTopLogprobs, 7.0f)};
  const absl::Status s = Sample({.logits = row.view(),
                                 .vocab_limit = vocab_limit,
                                 .configs = &config,
                                 .steps = &step,
                                 .history = history.data(),
                                 .history_offsets = offsets.data(),
                                 .out_ids = &t.draw.id,
                                 .out_logprobs = &t.draw.logprob,
                                 .out_top_ids = t.ids.data(),
                                 .out_top_logprobs = t.logprobs.data(),
                                 .num_seqs = 1});
  EXPECT_TRUE(s.ok()) << s;
  return t;
}

TEST(CpuSampleTopLogprobsTest, MostLikelyIdsOfTheTemperedDistributionInOrder) {
  std::mt19937 rng(21);
  HostTensor logits = RandomTensor({1, 300}, rng, -4.0f, 4.0f);
  for (const float temperature : {0.0f, 0.6f, 1.0f, 1.7f}) {
    for (const int32_t k : {1, 5, 20}) {
      const SamplingConfig config{.temperature = temperature, .seed = 9, .num_top_logprobs = k};
      const Top t = SampleWithTop(logits.values(), config, 4);
      // Naive reference: every id's log-softmax (temperature 0 reads the raw logits), sorted.
      const double temp = temperature == 0.0f ? 1.0 : temperature;
      std::vector<std::pair<double, int32_t>> all;
      for (int32_t i = 0; i < 300; ++i) all.push_back({LogSoftmax(logits.values(), i, temp), i});
      std::sort(all.begin(), all.end(), [](auto a, auto b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      for (int32_t j = 0; j < kMaxTopLogprobs; ++j) {
        if (j < k) {
          EXPECT_EQ(t.ids[j], all[j].second) << "T " << temperature << " k " << k << " rank " << j;
          EXPECT_NEAR(t.logprobs[j], all[j].first, 1e-5) << j;
        } else {
          EXPECT_EQ(t.ids[j], -1) << j;
          EXPECT_EQ(t.logprobs[j], -INFINITY) << j;
        }
      }
      // The sampled token's logprob is the one listed for it.
      for (int32_t j = 0; j < k; ++j) {
        if (t.ids[j] == t.draw.id) EXPECT_EQ(t.logprobs[j], t.draw.logprob);
      }
      // Asking for alternatives never changes the draw.
      SamplingConfig plain = config;
      plain.num_top_logprobs = 0;
      const Draw d = SampleOne(logits.values(), plain, 4);
      EXPECT_EQ(d.id, t.draw.id);
      EXPECT_EQ(d.logprob, t.draw.logprob);
    }
  }
}

TEST(CpuSampleTopLogprobsTest, TiesGoToTheLowerIdAndNaNRanksLast) {
  const std::vector<float> logits = {1.0f, 3.0f, std::nanf(""), 3.0f, 2.0f, 1.0f};
  const Top t = SampleWithTop(logits, {.temperature = 0.0f, .num_top_logprobs = 6}, 0);
  EXPECT_EQ(std::vector<int32_t>(t.ids.begin(), t.ids.begin() + 7),
            (std::vector<int32_t>{1, 3, 4, 0, 5, 2, -1}));
  EXPECT_EQ(t.logprobs[0], t.logprobs[1]);
  EXPECT_EQ(t.logprobs[5], -INFINITY);  // NaN counts as -inf
  EXPECT_EQ(t.draw.id, 1);
  EXPECT_EQ(t.draw.logprob, t.logprobs[0]);
}

TEST(CpuSampleTopLogprobsTest, VocabLimitPenaltiesAndAllMinusInfinity) {
  std::vector<float> logits = {0.0f, 0.5f, 1.0f, 9.0f, 8.0f};
  // Only ids < vocab_limit are listed, and no more of them than exist.
  Top t = SampleWithTop(logits, {.temperature = 0.0f, .num_top_logprobs = 5}, 0, 3);
  EXPECT_EQ(std::vector<int32_t>(t.ids.begin(), t.ids.begin() + 4),
            (std::vector<int32_t>{2, 1, 0, -1}));
  // Penalties move a token down the list (repetition 4 on id 3: 9 -> 2.25).
  t = SampleWithTop(
      logits, {.temperature = 0.0f, .repetition_penalty = 4.0f, .num_top_logprobs = 3}, 0, 0, {3});
  EXPECT_EQ(std::vector<int32_t>(t.ids.begin(), t.ids.begin() + 3),
            (std::vector<int32_t>{4, 3, 2}));
  const std::vector<float> penalised = {0.0f, 0.5f, 1.0f, 2.25f, 8.0f};
  EXPECT_NEAR(t.logprobs[1], LogSoftmax(penalised, 3), 1e-6);
  // Every logit -inf: ids in order, logprobs -inf.
  t = SampleWithTop(std::vector<float>(4, -INFINITY), {.seed = 1, .num_top_logprobs = 3}, 0);
  EXPECT_EQ(std::vector<int32_t>(t.ids.begin(), t.ids.begin() + 4),
            (std::vector<int32_t>{0, 1, 2, -1}));
  EXPECT_EQ(t.logprobs[0], -INFINITY);
}

TEST(CpuSampleTopLogprobsTest, PerSequenceCountsInOneBatch) {
  std::mt19937 rng(22);
  constexpr int kB = 3, kV = 50;
  HostTensor logits = RandomTensor({kB, kV}, rng, -2.0f, 2.0f);
  const std::vector<SamplingConfig> configs = {
      {.temperature = 0.8f, .seed = 1, .num_top_logprobs = 2},
      {.temperature = 0.0f},
      {.top_k = 3, .seed = 3, .num_top_logprobs = 20}};
  const std::vector<uint64_t> steps = {1, 2, 3};
  std::vector<int32_t> ids(kB), top_ids(kB * kMaxTopLogprobs, -7);
  std::vector<float> top_lps(kB * kMaxTopLogprobs, 7.0f);
  HostTensor batch = logits;
  ASSERT_TRUE(Sample({.logits = batch.view(),
                      .configs = configs.data(),
                      .steps = steps.data(),
                      .out_ids = ids.data(),
                      .out_top_ids = top_ids.data(),
                      .out_top_logprobs = top_lps.data(),
                      .num_seqs = kB})
                  .ok());
  for (int b = 0; b < kB; ++b) {
    const std::vector<float> row(logits.data() + b * kV, logits.data() + (b + 1) * kV);
    const Top alone = SampleWithTop(row, configs[b], steps[b]);
    for (int j = 0; j < kMaxTopLogprobs; ++j) {
      const int at = b * kMaxTopLogprobs + j;
      if (configs[b].num_top_logprobs == 0) {  // a row that asked for none reads empty
        EXPECT_EQ(top_ids[at], -1) << b << " " << j;
        EXPECT_EQ(top_lps[at], -INFINITY) << b << " " << j;
      } else {
        EXPECT_EQ(top_ids[at], alone.ids[j]) << b << " " << j;
        EXPECT_EQ(top_lps[at], alone.logprobs[j]) << b << " " << j;
      }
    }
  }
  EXPECT_NE(top_ids[2 * kMaxTopLogprobs + 19], -1);  // 20 alternatives of 50 ids (top_k aside)
}

}  // namespace
}  // namespace gka::kernels::cpu
