#include "router/rate_limit.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "router/admission.h"

namespace gka::router {

RateLimits::RateLimits(const RateLimits& other) : rules_(other.rules_) {}

RateLimits& RateLimits::operator=(const RateLimits& other) {
  rules_ = other.rules_;
  absl::MutexLock lock(&mu_);
  buckets_.clear();
  return *this;
}

absl::StatusOr<RateLimits> RateLimits::Parse(const std::vector<std::string>& specs) {
  RateLimits limits;
  for (const std::string& spec : specs) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--rate-limit '", spec, "': ", why, " (expected NAME=REQUESTS_PER_SECOND[:BURST])"));
    };
    const std::vector<std::string> kv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (kv.size() != 2) return bad("no '='");
    const std::vector<std::string> rb = absl::StrSplit(kv[1], absl::MaxSplits(':', 1));
    Rule rule;
    if (!absl::SimpleAtod(rb[0], &rule.per_second) || !std::isfinite(rule.per_second) ||
        rule.per_second <= 0) {
      return bad("the rate must be a positive number");
    }
    rule.burst = std::max(1.0, rule.per_second);
    if (rb.size() == 2 &&
        (!absl::SimpleAtod(rb[1], &rule.burst) || !std::isfinite(rule.burst) || rule.burst < 1)) {
      return bad("the burst must be a number >= 1");
    }
    if (!limits.rules_.emplace(kv[0], rule).second) return bad("the name is given twice");
  }
  return limits;
}

const RateLimits::Rule* RateLimits::RuleFor(const std::string& key) const {
  auto it = rules_.find(key);
  if (it == rules_.end()) it = rules_.find("*");
  return it == rules_.end() ? nullptr : &it->second;
}

absl::Status RateLimits::Take(const std::string& key, absl::Time now) {
  const Rule* rule = RuleFor(key);
  if (rule == nullptr) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  auto [it, fresh] = buckets_.try_emplace(key);
  Bucket& b = it->second;
  if (fresh) {
    b.tokens = rule->burst;
    b.refilled = now;
  }
  const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - b.refilled));
  b.tokens = std::min(rule->burst, b.tokens + elapsed * rule->per_second);
  b.refilled = now;
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return absl::OkStatus();
  }
  const absl::Duration wait = absl::Seconds((1.0 - b.tokens) / rule->per_second);
  return ResourceExhaustedWithRetry(
      absl::StrCat("API key '", key.empty() ? "(none)" : key, "' is over its rate limit of ",
                   rule->per_second, " requests/s (burst ", rule->burst, "); retry after ",
                   absl::ToInt64Milliseconds(wait) + 1, " ms"),
      wait);
}

absl::StatusOr<KeyTiers> KeyTiers::Parse(const std::vector<std::string>& specs,
                                          const std::vector<std::string>& known) {
  KeyTiers limits;
  for (const std::string& spec : specs) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("--key-tiers '", spec, "': ", why, " (expected NAME=TIER[|TIER...])"));
    };
    const std::vector<std::string> kv = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (kv.size() != 2) return bad("no '='");
    std::vector<std::string> tiers;
    for (const std::string& t : std::vector<std::string>(absl::StrSplit(kv[1], '|'))) {
      if (t.empty()) return bad("an empty tier name");
      if (std::find(known.begin(), known.end(), t) == known.end()) {
        return bad(absl::StrCat("no tier '", t, "' in the tier table (", absl::StrJoin(known, ", "),
                                ")"));
      }
      if (std::find(tiers.begin(), tiers.end(), t) != tiers.end()) {
        return bad(absl::StrCat("tier '", t, "' is given twice"));
      }
      tiers.push_back(t);
    }
    if (!limits.rules_.emplace(kv[0], std::move(tiers)).second) {
      return bad("the name is given twice");
    }
  }
  return limits;
}

absl::StatusOr<std::string> KeyTiers::Resolve(const std::string& key,
                                              const std::string& requested) const {
  auto it = rules_.find(key);
  if (it == rules_.end()) it = rules_.find("*");
  if (it == rules_.end()) return requested;
  const std::vector<std::string>& allowed = it->second;
  if (requested.empty()) return allowed.front();
  if (std::find(allowed.begin(), allowed.end(), requested) != allowed.end()) return requested;
  return absl::PermissionDeniedError(
      absl::StrCat("tier '", requested, "' is not allowed for ",
                   key.empty() ? std::string("callers without an API key")
                               : absl::StrCat("API key '", key, "'"),
                   "; allowed: ", absl::StrJoin(allowed, ", ")));
}

}  // namespace gka::router
