#include "router/tiers.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status.h"
#include "router/files.h"

namespace gka::router {
namespace {

using nlohmann::json;

// num_iter beyond this is a typo, not a setting (the model card measures up to 30).
constexpr int kMaxNumIter = 1000;

absl::Status Bad(absl::string_view source, absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", where, ": ", what));
}

absl::Status CheckKeys(const json& object, const std::set<std::string>& known,
                       absl::string_view source, absl::string_view where) {
  for (const auto& [key, value] : object.items()) {
    if (known.count(key) == 0) {
      return Bad(
          source, where,
          absl::StrCat("unknown field '", key, "' (known: ", absl::StrJoin(known, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> GetInt(const json& object, const char* key, absl::string_view source,
                           absl::string_view where, int min, int max) {
  const json& v = object.at(key);
  if (!v.is_number_integer()) {
    return Bad(source, absl::StrCat(where, ".", key),
               absl::StrCat("expected an integer, got ", v.dump()));
  }
  const int64_t i = v.get<int64_t>();
  if (i < min || i > max) {
    return Bad(source, absl::StrCat(where, ".", key),
               absl::StrCat(i, " is outside [", min, ", ", max, "]"));
  }
  return static_cast<int>(i);
}

absl::StatusOr<double> GetNonNegative(const json& object, const char* key, absl::string_view source,
                                      absl::string_view where) {
  const json& v = object.at(key);
  if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0) {
    return Bad(source, absl::StrCat(where, ".", key),
               absl::StrCat("expected a number >= 0, got ", v.dump()));
  }
  return v.get<double>();
}

bool ValidTierName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

// [{"decode_num_iter": 10}, {"decode_num_iter": 1, "max_tokens": 64}]: each rung strictly
// cheaper than the one before (fewer iterations, or the same with a tighter token cap), so
// that stepping down always sheds work.
absl::StatusOr<std::vector<Tier::Rung>> ParseLadder(const json& ladder, const Tier& tier,
                                                    absl::string_view source,
                                                    absl::string_view at) {
  const std::string where = absl::StrCat(at, ".degrade_ladder");
  if (!ladder.is_array() || ladder.empty() || ladder.size() > 16) {
    return Bad(source, where, absl::StrCat("expected 1-16 rung objects, got ", ladder.dump()));
  }
  std::vector<Tier::Rung> rungs;
  int prev_iters = tier.decode_num_iter;
  int prev_prefill = tier.prefill_num_iter;
  int prev_tokens = tier.max_tokens;
  for (size_t i = 0; i < ladder.size(); ++i) {
    const json& r = ladder[i];
    const std::string rw = absl::StrCat(where, "[", i, "]");
    if (!r.is_object()) return Bad(source, rw, "expected an object");
    GKA_RETURN_IF_ERROR(
        CheckKeys(r, {"decode_num_iter", "prefill_num_iter", "max_tokens"}, source, rw));
    if (!r.contains("decode_num_iter")) {
      return Bad(source, rw, "missing required field 'decode_num_iter'");
    }
    Tier::Rung rung;
    GKA_ASSIGN_OR_RETURN(rung.decode_num_iter,
                         GetInt(r, "decode_num_iter", source, rw, 0, kMaxNumIter));
    if (r.contains("prefill_num_iter")) {
      GKA_ASSIGN_OR_RETURN(rung.prefill_num_iter,
                           GetInt(r, "prefill_num_iter", source, rw, 0, kMaxNumIter));
    }
    if (r.contains("max_tokens")) {
      GKA_ASSIGN_OR_RETURN(rung.max_tokens,
                           GetInt(r, "max_tokens", source, rw, 1, std::numeric_limits<int>::max()));
    }
    // Rungs keep what the rung above capped unless they cap it harder.
    const int prefill = rung.prefill_num_iter >= 0 ? rung.prefill_num_iter : prev_prefill;
    const int tokens = rung.max_tokens > 0 ? rung.max_tokens : prev_tokens;
    const bool raises = rung.decode_num_iter > prev_iters || prefill > prev_prefill ||
                        (prev_tokens > 0 && tokens > prev_tokens);
    const bool lowers = rung.decode_num_iter < prev_iters || prefill < prev_prefill ||
                        (tokens > 0 && (prev_tokens == 0 || tokens < prev_tokens));
    if (raises || !lowers) {
      return Bad(source, rw,
                 absl::StrCat("each rung must be cheaper than the one above it: lower "
                              "decode_num_iter, prefill_num_iter or max_tokens, raise none "
                              "(decode_num_iter ",
                              rung.decode_num_iter, " after ", prev_iters, ")"));
    }
    prev_iters = rung.decode_num_iter;
    prev_prefill = prefill;
    prev_tokens = tokens;
    // The rung's effective values, so that Generation applies one rung without the others.
    rung.prefill_num_iter = prefill;
    rung.max_tokens = tokens;
    rungs.push_back(rung);
  }
  return rungs;
}

absl::StatusOr<Tier> ParseTier(const json& t, absl::string_view source, absl::string_view where) {
  if (!t.is_object()) return Bad(source, where, "expected an object");
  GKA_RETURN_IF_ERROR(
      CheckKeys(t,
                {"name", "prefill_num_iter", "decode_num_iter", "priority", "num_iter_range",
                 "ttft_target_ms", "itl_target_ms", "max_tokens", "queue_limit", "max_queue_ms",
                 "degrade_ladder", "degrade_queue_ms", "degrade_itl_ms"},
                source, where));
  for (const char* required : {"name", "prefill_num_iter", "decode_num_iter"}) {
    if (!t.contains(required)) {
      return Bad(source, where, absl::StrCat("missing required field '", required, "'"));
    }
  }
  Tier tier;
  if (!t["name"].is_string() || !ValidTierName(t["name"].get<std::string>())) {
    return Bad(source, absl::StrCat(where, ".name"),
               absl::StrCat("expected 1-64 characters of [A-Za-z0-9_.-], got ", t["name"].dump()));
  }
  tier.name = t["name"].get<std::string>();
  const std::string at = absl::StrCat(where, " (", tier.name, ")");
  GKA_ASSIGN_OR_RETURN(tier.prefill_num_iter,
                       GetInt(t, "prefill_num_iter", source, at, 0, kMaxNumIter));
  GKA_ASSIGN_OR_RETURN(tier.decode_num_iter,
                       GetInt(t, "decode_num_iter", source, at, 0, kMaxNumIter));
  if (t.contains("priority")) {
    GKA_ASSIGN_OR_RETURN(tier.priority, GetInt(t, "priority", source, at, -1000000, 1000000));
  }
  if (t.contains("max_tokens")) {
    GKA_ASSIGN_OR_RETURN(tier.max_tokens,
                         GetInt(t, "max_tokens", source, at, 0, std::numeric_limits<int>::max()));
  }
  if (t.contains("ttft_target_ms")) {
    GKA_ASSIGN_OR_RETURN(tier.ttft_target_ms, GetNonNegative(t, "ttft_target_ms", source, at));
  }
  if (t.contains("itl_target_ms")) {
    GKA_ASSIGN_OR_RETURN(tier.itl_target_ms, GetNonNegative(t, "itl_target_ms", source, at));
  }
  if (t.contains("queue_limit")) {
    GKA_ASSIGN_OR_RETURN(tier.queue_limit, GetInt(t, "queue_limit", source, at, 0, 1000000));
  }
  if (t.contains("max_queue_ms")) {
    GKA_ASSIGN_OR_RETURN(tier.max_queue_ms, GetNonNegative(t, "max_queue_ms", source, at));
  }
  if (t.contains("degrade_queue_ms")) {
    GKA_ASSIGN_OR_RETURN(tier.degrade_queue_ms, GetNonNegative(t, "degrade_queue_ms", source, at));
  }
  if (t.contains("degrade_itl_ms")) {
    GKA_ASSIGN_OR_RETURN(tier.degrade_itl_ms, GetNonNegative(t, "degrade_itl_ms", source, at));
  }
  if (t.contains("degrade_ladder")) {
    GKA_ASSIGN_OR_RETURN(tier.degrade_ladder, ParseLadder(t["degrade_ladder"], tier, source, at));
    if (!tier.degrade_queue_ms.has_value() && !tier.degrade_itl_ms.has_value()) {
      return Bad(source, absl::StrCat(at, ".degrade_ladder"),
                 "a ladder needs a load signal: set degrade_queue_ms and/or degrade_itl_ms");
    }
  }
  const int lo = std::min(tier.prefill_num_iter, tier.decode_num_iter);
  const int hi = std::max(tier.prefill_num_iter, tier.decode_num_iter);
  if (t.contains("num_iter_range")) {
    const json& r = t["num_iter_range"];
    const std::string field = absl::StrCat(at, ".num_iter_range");
    if (!r.is_array() || r.size() != 2 || !r[0].is_number_integer() || !r[1].is_number_integer()) {
      return Bad(source, field, absl::StrCat("expected [min, max] integers, got ", r.dump()));
    }
    const int64_t min = r[0].get<int64_t>();
    const int64_t max = r[1].get<int64_t>();
    if (min < 0 || max > kMaxNumIter || min > max) {
      return Bad(
          source, field,
          absl::StrCat("[", min, ", ", max, "] must satisfy 0 <= min <= max <= ", kMaxNumIter));
    }
    if (lo < min || hi > max) {
      return Bad(
          source, field,
          absl::StrCat("[", min, ", ", max, "] does not contain the tier's own num_iter (",
                       tier.prefill_num_iter, " prefill, ", tier.decode_num_iter, " decode)"));
    }
    tier.num_iter_min = static_cast<int>(min);
    tier.num_iter_max = static_cast<int>(max);
  } else {
    tier.num_iter_min = std::min(1, lo);
    tier.num_iter_max = std::max(30, hi);
  }
  return tier;
}

}  // namespace

int Tier::ClampNumIter(std::optional<int> requested, int tier_value) const {
  if (!requested.has_value()) return tier_value;
  return std::clamp(*requested, num_iter_min, num_iter_max);
}

TierTable TierTable::BuiltIn() {
  std::vector<Tier> tiers = {
      {.name = "interactive", .prefill_num_iter = 30, .decode_num_iter = 30, .priority = 10},
      {.name = "standard", .prefill_num_iter = 10, .decode_num_iter = 10, .priority = 5},
      {.name = "batch", .prefill_num_iter = 5, .decode_num_iter = 5, .priority = 1},
  };
  return TierTable(std::move(tiers), /*default_index=*/1);
}

absl::StatusOr<TierTable> TierTable::FromFile(absl::string_view path) {
  GKA_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return FromJson(text, path);
}

absl::StatusOr<TierTable> TierTable::FromJson(absl::string_view text, absl::string_view source) {
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not valid JSON: ", e.what()));
  }
  if (!doc.is_object()) return Bad(source, "top level", "expected an object");
  GKA_RETURN_IF_ERROR(CheckKeys(doc, {"default", "tiers"}, source, "top level"));
  if (!doc.contains("tiers") || !doc["tiers"].is_array() || doc["tiers"].empty()) {
    return Bad(source, "tiers", "expected a non-empty array of tier objects");
  }
  std::vector<Tier> tiers;
  std::set<std::string> seen;
  for (size_t i = 0; i < doc["tiers"].size(); ++i) {
    GKA_ASSIGN_OR_RETURN(Tier tier,
                         ParseTier(doc["tiers"][i], source, absl::StrCat("tiers[", i, "]")));
    if (!seen.insert(tier.name).second) {
      return Bad(source, absl::StrCat("tiers[", i, "].name"),
                 absl::StrCat("tier '", tier.name, "' is defined twice"));
    }
    tiers.push_back(std::move(tier));
  }
  size_t default_index = 0;
  if (doc.contains("default")) {
    if (!doc["default"].is_string()) {
      return Bad(source, "default",
                 absl::StrCat("expected a tier name, got ", doc["default"].dump()));
    }
    const std::string name = doc["default"].get<std::string>();
    auto it =
        std::find_if(tiers.begin(), tiers.end(), [&](const Tier& t) { return t.name == name; });
    if (it == tiers.end()) {
      return Bad(
          source, "default",
          absl::StrCat("unknown tier '", name, "' (defined: ", absl::StrJoin(seen, ", "), ")"));
    }
    default_index = static_cast<size_t>(it - tiers.begin());
  }
  return TierTable(std::move(tiers), default_index);
}

absl::StatusOr<const Tier*> TierTable::Find(absl::string_view name) const {
  if (name.empty()) return &tiers_[default_index_];
  for (const Tier& tier : tiers_) {
    if (tier.name == name) return &tier;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tier: unknown tier '", name, "'; this router serves: ", Names()));
}

std::string TierTable::Names() const {
  return absl::StrJoin(tiers_, ", ", [](std::string* out, const Tier& t) { out->append(t.name); });
}

}  // namespace gka::router
