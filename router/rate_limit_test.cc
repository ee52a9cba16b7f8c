// Per-API-key token buckets on a driven clock: burst, refill, the retry-after hint, "*" and
// the key-less caller, flag parsing. The live path (auth property -> router -> refusal) is
// tests/integration/router/test_admission_cluster.py (RateLimitClusterTest).
#include "router/rate_limit.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/admission.h"

namespace gka::router {
namespace {

using ::testing::HasSubstr;

TEST(RateLimitsTest, BurstThenRefillWithAHint) {
  RateLimits limits = *RateLimits::Parse({"team=2:3"});
  absl::Time now = absl::FromUnixSeconds(100);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limits.Take("team", now).ok()) << i;
  const absl::Status over = limits.Take("team", now);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("API key 'team' is over its rate limit of 2"));
  ASSERT_TRUE(RetryAfterOf(over).has_value());
  EXPECT_EQ(*RetryAfterOf(over), absl::Milliseconds(500));  // one token at 2 per second
  now += absl::Milliseconds(499);
  EXPECT_FALSE(limits.Take("team", now).ok());
  now += absl::Milliseconds(2);
  EXPECT_TRUE(limits.Take("team", now).ok());
  // A long pause refills to the burst, not beyond.
  now += absl::Seconds(60);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limits.Take("team", now).ok()) << i;
  EXPECT_FALSE(limits.Take("team", now).ok());
}

TEST(RateLimitsTest, StarCoversOtherKeysEachInItsOwnBucket) {
  RateLimits limits = *RateLimits::Parse({"*=1", "vip=100"});
  const absl::Time now = absl::FromUnixSeconds(100);
  EXPECT_TRUE(limits.Take("a", now).ok());
  EXPECT_FALSE(limits.Take("a", now).ok());
  EXPECT_TRUE(limits.Take("b", now).ok());  // its own bucket
  EXPECT_TRUE(limits.Take("", now).ok());   // the caller without a key
  EXPECT_FALSE(limits.Take("", now).ok());
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(limits.Take("vip", now).ok()) << i;
  // Without a rule nothing is limited.
  RateLimits only = *RateLimits::Parse({"x=1"});
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(only.Take("y", now).ok());
  EXPECT_TRUE(RateLimits().empty());
}

TEST(RateLimitsTest, RefusesMalformedFlags) {
  for (const char* bad :
       {"team", "team=", "team=0", "team=-1", "team=x", "team=1:0.5", "team=1:y", "team=inf"}) {
    absl::StatusOr<RateLimits> r = RateLimits::Parse({bad});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr(bad)) << bad;
  }
  EXPECT_THAT(RateLimits::Parse({"a=1", "a=2"}).status().message(), HasSubstr("given twice"));
}

TEST(KeyTiersTest, AKeyRunsInItsTiersOnly) {
  const KeyTiers limits =
      *KeyTiers::Parse({"batch-team=batch|standard", "*=standard"}, {"interactive", "standard", "batch"});
  // No tier named: the key's first.
  EXPECT_EQ(*limits.Resolve("batch-team", ""), "batch");
  EXPECT_EQ(*limits.Resolve("batch-team", "standard"), "standard");
  const absl::StatusOr<std::string> denied = limits.Resolve("batch-team", "interactive");
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(denied.status().message(),
              HasSubstr("tier 'interactive' is not allowed for API key 'batch-team'; allowed: "
                        "batch, standard"));
  // '*' covers every other key and the key-less caller.
  EXPECT_EQ(*limits.Resolve("other", ""), "standard");
  EXPECT_THAT(limits.Resolve("", "batch").status().message(),
              HasSubstr("not allowed for callers without an API key"));
  // No entry at all: every tier, the request's own choice (empty: the table's default).
  const KeyTiers none = *KeyTiers::Parse({}, {"standard"});
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(*none.Resolve("anyone", ""), "");
  EXPECT_EQ(*none.Resolve("anyone", "interactive"), "interactive");
}

TEST(KeyTiersTest, BadSpecsNameTheEntry) {
  const std::vector<std::string> known = {"interactive", "standard"};
  EXPECT_THAT(KeyTiers::Parse({"team"}, known).status().message(), HasSubstr("no '='"));
  EXPECT_THAT(KeyTiers::Parse({"team=standard|"}, known).status().message(),
              HasSubstr("an empty tier name"));
  EXPECT_THAT(KeyTiers::Parse({"team=gold"}, known).status().message(),
              HasSubstr("no tier 'gold' in the tier table (interactive, standard)"));
  EXPECT_THAT(KeyTiers::Parse({"team=standard|standard"}, known).status().message(),
              HasSubstr("given twice"));
  EXPECT_THAT(KeyTiers::Parse({"team=standard", "team=interactive"}, known).status().message(),
              HasSubstr("the name is given twice"));
}

}  // namespace
}  // namespace gka::router
