#include "router/router_metrics.h"

#include <vector>

#include "common/base/status.h"

namespace gka::router {
namespace {

// Every canonical code, so each tier x code series exists from start.
constexpr absl::StatusCode kAllCodes[] = {
    absl::StatusCode::kOk,
    absl::StatusCode::kCancelled,
    absl::StatusCode::kUnknown,
    absl::StatusCode::kInvalidArgument,
    absl::StatusCode::kDeadlineExceeded,
    absl::StatusCode::kNotFound,
    absl::StatusCode::kAlreadyExists,
    absl::StatusCode::kPermissionDenied,
    absl::StatusCode::kResourceExhausted,
    absl::StatusCode::kFailedPrecondition,
    absl::StatusCode::kAborted,
    absl::StatusCode::kOutOfRange,
    absl::StatusCode::kUnimplemented,
    absl::StatusCode::kInternal,
    absl::StatusCode::kUnavailable,
    absl::StatusCode::kDataLoss,
    absl::StatusCode::kUnauthenticated,
};

constexpr absl::string_view kRetryReasons[] = {kRetryPrefillUnavailable, kRetryPrefillExhausted,
                                               kRetryPrefillLost, kRetryDecodeUnavailable,
                                               kRetryDecodeFull, kRetryTransferDataLoss};

}  // namespace

absl::StatusOr<std::unique_ptr<RouterMetrics>> RouterMetrics::Create(metrics::Registry& registry,
                                                                     const TierTable& tiers) {
  const std::vector<double> latency = metrics::LatencyBuckets();
  const std::vector<double> iters = {0, 1, 2, 3, 5, 10, 15, 20, 30, 50, 100};
  GKA_ASSIGN_OR_RETURN(
      auto* requests,
      registry.AddCounter("gka_requests_total", "Finished requests by final status (OK included)",
                          {"tier", "code"}));
  GKA_ASSIGN_OR_RETURN(auto* errors,
                       registry.AddCounter("gka_request_errors_total",
                                           "Requests that ended with an error", {"tier", "code"}));
  GKA_ASSIGN_OR_RETURN(
      auto* ttft,
      registry.AddHistogram("gka_ttft_seconds", "Request arrival to first token sent to the client",
                            {"tier"}, latency));
  GKA_ASSIGN_OR_RETURN(
      auto* itl,
      registry.AddHistogram("gka_itl_seconds", "Time between consecutive tokens sent to the client",
                            {"tier"}, latency));
  GKA_ASSIGN_OR_RETURN(
      auto* e2e, registry.AddHistogram("gka_e2e_latency_seconds",
                                       "Request arrival to final message", {"tier"}, latency));
  GKA_ASSIGN_OR_RETURN(auto* queue,
                       registry.AddHistogram("gka_queue_seconds",
                                             "Request arrival to prefill started (router + prefill "
                                             "queue)",
                                             {"tier"}, latency));
  GKA_ASSIGN_OR_RETURN(
      auto* prompt_tokens,
      registry.AddCounter("gka_prompt_tokens_total", "Prompt tokens admitted", {"tier"}));
  GKA_ASSIGN_OR_RETURN(
      auto* generated,
      registry.AddCounter("gka_generated_tokens_total", "Tokens streamed to clients", {"tier"}));
  GKA_ASSIGN_OR_RETURN(auto* running,
                       registry.AddGauge("gka_requests_running",
                                         "Requests between admission and final message", {"tier"}));
  GKA_ASSIGN_OR_RETURN(auto* num_iter,
                       registry.AddHistogram("gka_num_iter", "GKA num_iter served per request",
                                             {"tier", "phase"}, iters));
  GKA_ASSIGN_OR_RETURN(
      auto* overhead,
      registry.AddHistogram("gka_router_overhead_seconds",
                            "The router's own time on a request before its first token: "
                            "validation, tokenizing, placement, hand-offs between worker calls "
                            "(no queueing, no worker time)",
                            {"tier"},
                            {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                             0.05, 0.1, 0.25}));
  GKA_ASSIGN_OR_RETURN(auto* workers,
                       registry.AddGauge("gka_workers", "Registered workers", {"role", "state"}));
  GKA_ASSIGN_OR_RETURN(
      auto* retries,
      registry.AddCounter("gka_retries_total", "Requests placed again on another worker, by reason",
                          {"tier", "reason"}));
  GKA_ASSIGN_OR_RETURN(
      auto* migrations,
      registry.AddCounter("gka_migrations_total",
                          "Running sequences a draining decode worker asked to move, by result "
                          "(ok: moved to another decode worker; failed: finished where they were)",
                          {"tier", "result"}));

  std::unique_ptr<RouterMetrics> m(new RouterMetrics());
  for (const Tier& tier : tiers.tiers()) {
    const metrics::Labels t = {{"tier", tier.name}};
    auto state = std::make_unique<TierState>(TierState{
        .series = {
            .ttft = ttft->Labels(t),
            .itl = itl->Labels(t),
            .e2e = e2e->Labels(t),
            .queue = queue->Labels(t),
            .prefill_num_iter = num_iter->Labels({{"tier", tier.name}, {"phase", "prefill"}}),
            .decode_num_iter = num_iter->Labels({{"tier", tier.name}, {"phase", "decode"}}),
            .prompt_tokens = prompt_tokens->Labels(t),
            .generated_tokens = generated->Labels(t),
            .running = running->Labels(t),
            .router_overhead = overhead->Labels(t)}});
    for (absl::StatusCode code : kAllCodes) {
      const metrics::Labels labels = {{"tier", tier.name},
                                      {"code", absl::StatusCodeToString(code)}};
      state->requests.emplace(code, requests->Labels(labels));
      if (code != absl::StatusCode::kOk) state->errors.emplace(code, errors->Labels(labels));
    }
    for (absl::string_view reason : kRetryReasons) {
      state->retries.emplace(
          std::string(reason),
          retries->Labels({{"tier", tier.name}, {"reason", std::string(reason)}}));
    }
    state->migrations_ok = migrations->Labels({{"tier", tier.name}, {"result", "ok"}});
    state->migrations_failed = migrations->Labels({{"tier", tier.name}, {"result", "failed"}});
    m->tiers_.emplace(tier.name, std::move(state));
  }
  m->default_tier_ = m->tiers_.at(tiers.default_tier().name).get();
  m->workers_ = workers;
  m->SetWorkers({});
  return m;
}

RouterMetrics::TierState& RouterMetrics::StateFor(absl::string_view tier) {
  auto it = tiers_.find(tier);
  return it == tiers_.end() ? *default_tier_ : *it->second;
}

RouterMetrics::TierSeries& RouterMetrics::ForTier(absl::string_view tier) {
  return StateFor(tier).series;
}

void RouterMetrics::CountFinished(absl::string_view tier, absl::StatusCode code) {
  TierState& state = StateFor(tier);
  auto it = state.requests.find(code);
  if (it == state.requests.end()) it = state.requests.find(absl::StatusCode::kUnknown);
  it->second.Increment();
  if (code == absl::StatusCode::kOk) return;
  auto err = state.errors.find(code);
  if (err == state.errors.end()) err = state.errors.find(absl::StatusCode::kUnknown);
  err->second.Increment();
}

void RouterMetrics::CountRetry(absl::string_view tier, absl::string_view reason) {
  TierState& state = StateFor(tier);
  auto it = state.retries.find(reason);
  if (it != state.retries.end()) it->second.Increment();
}

void RouterMetrics::CountMigration(absl::string_view tier, bool ok) {
  TierState& state = StateFor(tier);
  (ok ? state.migrations_ok : state.migrations_failed)->Increment();
}

void RouterMetrics::SetWorkers(const WorkerCounts& c) {
  workers_->Labels({{"role", "prefill"}, {"state", "healthy"}}).Set(c.prefill_healthy);
  workers_->Labels({{"role", "prefill"}, {"state", "unhealthy"}}).Set(c.prefill_unhealthy);
  workers_->Labels({{"role", "decode"}, {"state", "healthy"}}).Set(c.decode_healthy);
  workers_->Labels({{"role", "decode"}, {"state", "unhealthy"}}).Set(c.decode_unhealthy);
  workers_->Labels({{"role", "colocated"}, {"state", "healthy"}}).Set(c.colocated_healthy);
  workers_->Labels({{"role", "colocated"}, {"state", "unhealthy"}}).Set(c.colocated_unhealthy);
}

}  // namespace gka::router
