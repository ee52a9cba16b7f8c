// Tier file parsing: the schema of issue 3 §4, unknown fields and tiers refused with the
// field named, num_iter_range clamping, the built-in table.
#include "router/tiers.h"

#include <cstdio>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::router {
namespace {

using ::testing::HasSubstr;

constexpr absl::string_view kGood = R"({
  "default": "standard",
  "tiers": [
    {"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30, "priority": 10,
     "num_iter_range": [10, 30], "ttft_target_ms": 500, "itl_target_ms": 40.5,
     "max_tokens": 2048},
    {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10, "priority": 5},
    {"name": "cheap", "prefill_num_iter": 0, "decode_num_iter": 0}
  ]})";

TEST(TierTableTest, ParsesTheSchema) {
  absl::StatusOr<TierTable> table = TierTable::FromJson(kGood);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->tiers().size(), 3u);
  EXPECT_EQ(table->default_tier().name, "standard");
  const Tier& interactive = table->tiers()[0];
  EXPECT_EQ(interactive.prefill_num_iter, 30);
  EXPECT_EQ(interactive.priority, 10);
  EXPECT_EQ(interactive.num_iter_min, 10);
  EXPECT_EQ(interactive.num_iter_max, 30);
  EXPECT_DOUBLE_EQ(*interactive.ttft_target_ms, 500);
  EXPECT_DOUBLE_EQ(*interactive.itl_target_ms, 40.5);
  EXPECT_EQ(interactive.max_tokens, 2048);
  // Without a range: [min(1, p, d), max(30, p, d)]; 0 only when the tier itself uses it.
  EXPECT_EQ(table->tiers()[1].num_iter_min, 1);
  EXPECT_EQ(table->tiers()[1].num_iter_max, 30);
  EXPECT_EQ(table->tiers()[1].priority, 5);
  EXPECT_EQ(table->tiers()[2].num_iter_min, 0);
  EXPECT_EQ(table->tiers()[2].priority, 0);
  EXPECT_FALSE(table->tiers()[2].ttft_target_ms.has_value());
  EXPECT_EQ(table->tiers()[2].max_tokens, 0);
}

TEST(TierTableTest, FindResolvesNamesAndTheDefault) {
  TierTable table = *TierTable::FromJson(kGood);
  EXPECT_EQ((*table.Find(""))->name, "standard");
  EXPECT_EQ((*table.Find("interactive"))->name, "interactive");
  absl::StatusOr<const Tier*> unknown = table.Find("gold");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("tier: unknown tier 'gold'"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("interactive, standard, cheap"));
}

TEST(TierTableTest, ClampsOverridesToTheRange) {
  TierTable table = *TierTable::FromJson(kGood);
  const Tier& interactive = table.tiers()[0];
  EXPECT_EQ(interactive.ClampNumIter(std::nullopt, 30), 30);
  EXPECT_EQ(interactive.ClampNumIter(5, 30), 10);
  EXPECT_EQ(interactive.ClampNumIter(20, 30), 20);
  EXPECT_EQ(interactive.ClampNumIter(100, 30), 30);
  EXPECT_EQ(interactive.ClampNumIter(0, 30), 10);
}

TEST(TierTableTest, BuiltInTiers) {
  TierTable table = TierTable::BuiltIn();
  ASSERT_EQ(table.tiers().size(), 3u);
  EXPECT_EQ(table.default_tier().name, "standard");
  const auto expect = [&](absl::string_view name, int iters, int priority) {
    const Tier* t = *table.Find(name);
    EXPECT_EQ(t->prefill_num_iter, iters) << name;
    EXPECT_EQ(t->decode_num_iter, iters) << name;
    EXPECT_EQ(t->priority, priority) << name;
    EXPECT_EQ(t->num_iter_min, 1) << name;
    EXPECT_EQ(t->num_iter_max, 30) << name;
  };
  expect("interactive", 30, 10);
  expect("standard", 10, 5);
  expect("batch", 5, 1);
}

TEST(TierTableTest, DefaultIsTheFirstTierWhenAbsent) {
  absl::StatusOr<TierTable> table = TierTable::FromJson(
      R"({"tiers": [{"name": "a", "prefill_num_iter": 3, "decode_num_iter": 4}]})");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->default_tier().name, "a");
}

struct BadCase {
  const char* json;
  const char* expected;
};

TEST(TierTableTest, RejectsBadFilesNamingTheField) {
  const BadCase cases[] = {
      {"not json", "is not valid JSON"},
      {"[]", "expected an object"},
      {R"({"tiers": []})", "tiers: expected a non-empty array"},
      {R"({"tierz": []})", "unknown field 'tierz'"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": 1, "decode_num_iter": 1,
           "colour": "red"}]})",
       "tiers[0]: unknown field 'colour'"},
      {R"({"tiers": [{"name": "a", "decode_num_iter": 1}]})",
       "tiers[0]: missing required field 'prefill_num_iter'"},
      {R"({"tiers": [{"prefill_num_iter": 1, "decode_num_iter": 1}]})",
       "missing required field 'name'"},
      {R"({"tiers": [{"name": "a b", "prefill_num_iter": 1, "decode_num_iter": 1}]})",
       "tiers[0].name"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": "ten", "decode_num_iter": 1}]})",
       "tiers[0] (a).prefill_num_iter: expected an integer"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": -1, "decode_num_iter": 1}]})",
       "prefill_num_iter: -1 is outside [0, 1000]"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": 1, "decode_num_iter": 1.5}]})",
       "decode_num_iter: expected an integer"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": 1, "decode_num_iter": 1,
           "num_iter_range": [5]}]})",
       "num_iter_range: expected [min, max]"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": 1, "decode_num_iter": 1,
           "num_iter_range": [5, 2]}]})",
       "must satisfy 0 <= min <= max"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": 1, "decode_num_iter": 1,
           "num_iter_range": [5, 10]}]})",
       "does not contain the tier's own num_iter"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": 1, "decode_num_iter": 1,
           "ttft_target_ms": -3}]})",
       "ttft_target_ms: expected a number >= 0"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": 1, "decode_num_iter": 1,
           "max_tokens": -1}]})",
       "max_tokens: -1 is outside"},
      {R"({"tiers": [{"name": "a", "prefill_num_iter": 1, "decode_num_iter": 1},
                     {"name": "a", "prefill_num_iter": 2, "decode_num_iter": 2}]})",
       "tiers[1].name: tier 'a' is defined twice"},
      {R"({"default": "b", "tiers": [{"name": "a", "prefill_num_iter": 1,
           "decode_num_iter": 1}]})",
       "default: unknown tier 'b'"},
  };
  for (const BadCase& c : cases) {
    absl::StatusOr<TierTable> table = TierTable::FromJson(c.json, "tiers.json");
    ASSERT_FALSE(table.ok()) << c.json;
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(table.status().message(), HasSubstr(c.expected)) << c.json;
    EXPECT_THAT(table.status().message(), HasSubstr("tiers.json")) << c.json;
  }
}

TEST(TierTableTest, FromFile) {
  const std::string path = ::testing::TempDir() + "/router_tiers_test.json";
  std::ofstream(path) << kGood;
  absl::StatusOr<TierTable> table = TierTable::FromFile(path);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->tiers().size(), 3u);
  std::remove(path.c_str());
  EXPECT_EQ(TierTable::FromFile(path).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace gka::router
