// Per-API-key limits: rate limits (issue 9 §2) and tier limits (KeyTiers below, issue 10 §4).
// Rate: a token bucket per key name, refilled at the key's
// rate; a request that finds its bucket empty is refused with RESOURCE_EXHAUSTED carrying a
// retry-after hint (the time until the bucket holds a token again), before admission.
//
// Owns: the parsed limits ("NAME=RPS[:BURST]"; NAME "*" applies to every key without its own
// rule, each key then getting its own bucket; the caller without a key is the key "") and the
// buckets. Time is passed in, so tests drive it. The key's name comes from the gRPC auth
// context (rpc::kApiKeyNameProperty) or the HTTP gateway's own check, so one key has one
// bucket over both.
//
//   GKA_ASSIGN_OR_RETURN(RateLimits limits, RateLimits::Parse({"batch-team=2:4", "*=50"}));
//   absl::Status s = limits.Take("batch-team", absl::Now());   // OK or RESOURCE_EXHAUSTED
//
// Thread-safety: Take is thread-safe (one mutex).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gka::router {

class RateLimits {
 public:
  struct Rule {
    double per_second = 0;
    double burst = 0;  // bucket size; default max(1, per_second)
  };

  RateLimits() = default;
  RateLimits(const RateLimits& other);
  RateLimits& operator=(const RateLimits& other);
  // INVALID_ARGUMENT naming the entry for a malformed "NAME=RPS[:BURST]", a rate or burst
  // that is not a positive finite number, or a repeated name.
  static absl::StatusOr<RateLimits> Parse(const std::vector<std::string>& specs);

  bool empty() const { return rules_.empty(); }
  // Takes one token from `key`'s bucket: OK, or RESOURCE_EXHAUSTED with the retry-after hint
  // (admission.h RetryAfterOf). OK for a key no rule covers.
  absl::Status Take(const std::string& key, absl::Time now);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time refilled;
  };
  const Rule* RuleFor(const std::string& key) const;

  std::map<std::string, Rule> rules_;  // immutable after Parse
  absl::Mutex mu_;
  std::map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

// Per-API-key tier limits (issue 10 §4): which traffic tiers a key may use, from
// "--key-tiers NAME=TIER[|TIER...]" (NAME '*': every key without its own entry; callers without a
// key are the key ''). A request of a key with an entry that names no tier gets the entry's
// first tier; one that names a tier outside the entry is refused with PERMISSION_DENIED (HTTP
// 403). Keys without an entry may use every tier. Immutable after Parse: thread-safe.
class KeyTiers {
 public:
  // INVALID_ARGUMENT naming the entry for a malformed spec, an empty or repeated tier, a tier
  // `known` does not list, or a repeated name.
  static absl::StatusOr<KeyTiers> Parse(const std::vector<std::string>& specs,
                                        const std::vector<std::string>& known);

  bool empty() const { return rules_.empty(); }
  // The tier a request of `key` runs in: `requested` when the key may use it (or has no
  // entry), the key's first tier when `requested` is empty, PERMISSION_DENIED otherwise.
  absl::StatusOr<std::string> Resolve(const std::string& key, const std::string& requested) const;

 private:
  std::map<std::string, std::vector<std::string>> rules_;
};

}  // namespace gka::router
