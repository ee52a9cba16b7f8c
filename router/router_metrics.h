// The router's Prometheus series (docs/metrics.md, "Router"): every family registered once,
// every series whose labels are known at start (each tier x each gRPC code, each retry
// reason, each worker role x state) created at 0, and per-tier handles cached so the hot
// path never looks a label up.
//
//   GKA_ASSIGN_OR_RETURN(auto metrics, RouterMetrics::Create(*registry, tiers));
//   RouterMetrics::TierSeries& t = metrics->ForTier("standard");
//   t.ttft.Observe(0.120);
//   metrics->CountFinished("standard", absl::StatusCode::kOk);
//
// Thread-safety: all methods are thread-safe (handles are atomics; the maps are immutable
// after Create).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/metrics/metrics.h"
#include "router/tiers.h"
#include "router/worker_registry.h"

namespace gka::router {

// Label values of gka_retries_total{reason}.
inline constexpr absl::string_view kRetryPrefillUnavailable = "prefill_unavailable";
inline constexpr absl::string_view kRetryPrefillExhausted = "prefill_exhausted";
inline constexpr absl::string_view kRetryPrefillLost = "prefill_lost";
inline constexpr absl::string_view kRetryDecodeUnavailable = "decode_unavailable";
inline constexpr absl::string_view kRetryDecodeFull = "decode_full";
// The decode worker refused the transferred state (checksum): placed once more elsewhere.
inline constexpr absl::string_view kRetryTransferDataLoss = "transfer_data_loss";

class RouterMetrics {
 public:
  struct TierSeries {
    metrics::Histogram ttft;
    metrics::Histogram itl;
    metrics::Histogram e2e;
    metrics::Histogram queue;
    metrics::Histogram prefill_num_iter;
    metrics::Histogram decode_num_iter;
    metrics::Counter prompt_tokens;
    metrics::Counter generated_tokens;
    metrics::Gauge running;
    // The router's own time on a request before its first token (Timings.router_ms).
    metrics::Histogram router_overhead;
  };

  // INVALID_ARGUMENT when a family clashes with one already in `registry`.
  static absl::StatusOr<std::unique_ptr<RouterMetrics>> Create(metrics::Registry& registry,
                                                               const TierTable& tiers);

  // The tier's series; the default tier's for a name the table does not have.
  TierSeries& ForTier(absl::string_view tier);
  // gka_requests_total, and gka_request_errors_total unless `code` is OK.
  void CountFinished(absl::string_view tier, absl::StatusCode code);
  void CountRetry(absl::string_view tier, absl::string_view reason);
  // gka_migrations_total{tier, result}: a draining decode worker's running sequence moved to
  // another decode worker (ok) or stayed where it was (failed).
  void CountMigration(absl::string_view tier, bool ok);
  void SetWorkers(const WorkerCounts& counts);

 private:
  struct TierState {
    TierSeries series;
    std::map<absl::StatusCode, metrics::Counter> requests;
    std::map<absl::StatusCode, metrics::Counter> errors;
    std::map<std::string, metrics::Counter, std::less<>> retries;
    std::optional<metrics::Counter> migrations_ok, migrations_failed;
  };
  RouterMetrics() = default;
  TierState& StateFor(absl::string_view tier);

  std::map<std::string, std::unique_ptr<TierState>, std::less<>> tiers_;
  TierState* default_tier_ = nullptr;
  metrics::GaugeFamily* workers_ = nullptr;
};

}  // namespace gka::router
