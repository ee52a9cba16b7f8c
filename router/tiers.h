// Service tiers: configuration that maps a tier name to GKA solver iterations, priority and
// limits (architecture.md "Tiers"; the tier file schema is issue 3 §4).
//
// Owns: parsing and validating the tier file (JSON), the built-in default table, and the
// per-request resolution of num_iter overrides (clamped to the tier's num_iter_range) and
// max_tokens caps. Must not depend on gRPC, the engine or the workers: plain C++ and JSON.
//
//   GKA_ASSIGN_OR_RETURN(gka::router::TierTable tiers,
//                        gka::router::TierTable::FromFile("deploy/tiers.json"));
//   GKA_ASSIGN_OR_RETURN(const gka::router::Tier* tier, tiers.Find(request.tier()));
//   int decode_iters = tier->ClampNumIter(request_override);   // within num_iter_range
//
// Tier file:
//   {"default": "standard",
//    "tiers": [{"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30,
//               "priority": 10, "num_iter_range": [10, 30], "ttft_target_ms": 500,
//               "itl_target_ms": 50, "max_tokens": 4096, "queue_limit": 64,
//               "max_queue_ms": 2000, "degrade_ladder": [{"decode_num_iter": 10},
//               {"decode_num_iter": 1, "prefill_num_iter": 10, "max_tokens": 256}],
//               "degrade_queue_ms": 200,
//               "degrade_itl_ms": 80}, ...]}
// Required per tier: name, prefill_num_iter, decode_num_iter. Any other key, at the top or
// in a tier, is INVALID_ARGUMENT naming it (later issues add fields here, not silently).
// Without "num_iter_range" a tier allows overrides in [min(1, p, d), max(30, p, d)] (the
// model card's range; 0 iterations only when the tier itself uses 0). Without "default" the
// first tier is the default.
//
// Thread-safety: a TierTable is immutable after construction; share it freely.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::router {

struct Tier {
  std::string name;
  int prefill_num_iter = 10;
  int decode_num_iter = 10;
  // Higher is more important (workers preempt lower priorities first).
  int priority = 0;
  // Inclusive range for per-request num_iter overrides.
  int num_iter_min = 1;
  int num_iter_max = 30;
  // SLO targets (informational today; dashboards and later admission use them).
  std::optional<double> ttft_target_ms;
  std::optional<double> itl_target_ms;
  // Cap on a request's max_tokens; 0 means none beyond the context.
  int max_tokens = 0;

  // Admission (router/admission.h). Requests of this tier waiting for a decode slot beyond
  // `queue_limit` are refused at once (RESOURCE_EXHAUSTED with a retry-after hint); a queued
  // request that waited `max_queue_ms` (0: only its own deadline bounds the wait) is refused
  // the same way, since by then its TTFT target is lost anyway.
  int queue_limit = 256;
  double max_queue_ms = 0;

  // Degrade before shedding (issue 9 §3): rungs applied one at a time while the tier is
  // under pressure, lifted one at a time when it is gone. Rung k (1-based) caps decode
  // num_iter (the GKA state format does not depend on it, so running sequences may be
  // lowered too) and optionally prefill num_iter (new requests only: fewer prefill
  // iterations is what buys capacity when prefill is the bottleneck) and max_tokens. Rung 0
  // is the tier as configured.
  // Parsed rungs hold effective values: a rung keeps the caps of the rungs above it.
  struct Rung {
    int decode_num_iter = 0;
    int prefill_num_iter = -1;  // -1: the tier's
    int max_tokens = 0;         // 0: no cap beyond the tier's
  };
  std::vector<Rung> degrade_ladder;
  // Load signals: pressure when the oldest request waiting in the router's admission queue
  // has waited longer than `degrade_queue_ms`, or when the tier's recent inter-token latency
  // exceeds `degrade_itl_ms`. Unset signals are not watched; a ladder needs at least one.
  std::optional<double> degrade_queue_ms;
  std::optional<double> degrade_itl_ms;

  // `requested` clamped into [num_iter_min, num_iter_max], or `tier_value` when absent.
  int ClampNumIter(std::optional<int> requested, int tier_value) const;
};

class TierTable {
 public:
  // interactive 30/30 priority 10, standard 10/10 priority 5 (the default), batch 5/5
  // priority 1; every one allows overrides in [1, 30].
  static TierTable BuiltIn();

  // NotFound when the file is missing; InvalidArgument (naming the file and the key) for
  // bad JSON, a missing required key, an unknown key, a bad value or an unknown default.
  static absl::StatusOr<TierTable> FromFile(absl::string_view path);
  static absl::StatusOr<TierTable> FromJson(absl::string_view json,
                                            absl::string_view source = "tier file");

  // The tier named `name`, or the default tier for "". InvalidArgument naming the field
  // "tier" and listing the known tiers otherwise. The pointer lives as long as the table.
  absl::StatusOr<const Tier*> Find(absl::string_view name) const;

  const Tier& default_tier() const { return tiers_[default_index_]; }
  const std::vector<Tier>& tiers() const { return tiers_; }
  // "interactive, standard, batch" for messages.
  std::string Names() const;

 private:
  TierTable(std::vector<Tier> tiers, size_t default_index)
      : tiers_(std::move(tiers)), default_index_(default_index) {}

  std::vector<Tier> tiers_;
  size_t default_index_ = 0;
};

}  // namespace gka::router
