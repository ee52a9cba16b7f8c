// The router's shared state and its transport-independent API: admit a request, run it on
// the workers, stream the result to a GenerationSink; abort by id; tokenize; model info;
// worker registry and health. The gRPC services (grpc_services.h) are thin adapters over
// it, and so will be the OpenAI-compatible HTTP gateway (issue 8), which implements a
// GenerationSink that writes server-sent events.
//
// Owns: tiers, tokenizer and chat template, the model description, the WorkerRegistry,
// channels to workers (one per address, kept for the process's life), the router's metrics,
// and the table of running requests (request id -> Generation). Must not depend on the
// engine, kernels or transfer; talks to workers only through gka.worker.v1.
//
//   RouterCore core(options, std::move(tiers), std::move(text), model, *metrics_registry);
//   std::shared_ptr<Generation> g = core.StartGeneration(request, &sink, deadline);
//   core.AbortRequest("req-1");                // Final with finish_reason ABORT
//   core.StopAccepting(); core.WaitIdle(absl::Now() + absl::Seconds(30));   // drain
//
// Thread-safety: every method is thread-safe. Callbacks from gRPC threads arrive
// concurrently; each Generation serializes its own events.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "common/rpc/tls.h"
#include "gka/serving/v1/serving.pb.h"
#include "gka/worker/v1/worker.grpc.pb.h"
#include "router/admission.h"
#include "router/rate_limit.h"
#include "router/generation.h"
#include "router/model_dir.h"
#include "router/request_validation.h"
#include "router/router_metrics.h"
#include "router/tiers.h"
#include "router/worker_registry.h"

namespace gka::router {

// The gRPC health service name whose status is the cluster's readiness.
inline constexpr absl::string_view kGenerateServiceName = "gka.serving.v1.GenerateService";

struct CoreOptions {
  // Reported in ServedBy and used as the prefix of assigned request ids.
  std::string router_id;
  // Overrides the model directory's name as the served model name; empty: the directory's
  // name, else the first worker's model.
  std::string served_model_name;
  int32_t default_max_tokens = 256;
  // Reserve -> prefill -> decode attempts per request (a failed prefill worker, a full or
  // dead decode worker before the first token are retried on another worker).
  int max_attempts = 3;
  // Budget of one Reserve call.
  absl::Duration reserve_timeout = absl::Seconds(5);
  // Lease asked of the decode worker: how long a reservation waits for its transfer.
  absl::Duration lease = absl::Seconds(30);
  // Budget of Abort / Release calls made while cleaning up.
  absl::Duration cleanup_timeout = absl::Seconds(2);
  RegistryOptions registry;
  // Mutual TLS on the channels to workers (disabled: plaintext).
  rpc::TlsConfig worker_tls;
  // Non-empty: the name workers' certificates are checked against instead of their address.
  std::string worker_tls_server_name;
  // Per-tier queues in front of placement and the degrade ladder (router/admission.h).
  AdmissionOptions admission;
  // Per-API-key token buckets (router/rate_limit.h); empty: none.
  RateLimits rate_limits;
  // Which tiers each API key may use (router/rate_limit.h); empty: every tier.
  KeyTiers key_tiers;
};

// Stubs for one worker address (shared by every request placed there).
struct WorkerStubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<worker::v1::DecodeService::Stub> decode;
  std::unique_ptr<worker::v1::PrefillService::Stub> prefill;
};

class RouterCore {
 public:
  RouterCore(CoreOptions options, TierTable tiers, TextAssets text, ModelDescription model,
             metrics::Registry& metrics_registry);
  ~RouterCore();
  RouterCore(const RouterCore&) = delete;
  RouterCore& operator=(const RouterCore&) = delete;

  // Must be called once before serving; fails when the metric families clash.
  absl::Status Init();

  // Admits and starts `request`. Every outcome reaches `sink` (a rejected request gets an
  // Error response and a non-OK finish before this returns, and nullptr is returned). The
  // sink must stay valid until its OnFinish. `deadline`: the client's (InfiniteFuture when
  // none); it bounds every worker call. `api_key`: the name of the caller's API key ("" for
  // none), for the per-key rate limits.
  std::shared_ptr<Generation> StartGeneration(const serving::v1::GenerateRequest& request,
                                              GenerationSink* sink, absl::Time deadline,
                                              const std::string& api_key = "");

  // Delivers a rejection to `sink` (an Error response, then OnFinish(status)) and counts it
  // under `tier` (the default tier when empty). For requests refused before admission, e.g.
  // bytes that do not parse, and those admission control refuses (the status's retry-after
  // hint goes into Error.retry_after_ms).
  void Reject(GenerationSink* sink, const std::string& request_id, absl::string_view tier,
              const absl::Status& status, bool retryable);

  // Ends the running request `request_id` with finish_reason ABORT; false when unknown.
  bool AbortRequest(absl::string_view request_id);

  absl::StatusOr<serving::v1::TokenizeResponse> Tokenize(
      const serving::v1::TokenizeRequest& request) const;
  serving::v1::GetModelInfoResponse ModelInfo() const;

  // After any registry change (register, heartbeat, deregister, sweep): refreshes
  // gka_workers and the health status.
  void OnRegistryChanged();
  // Fails or retries requests running on workers that stopped heartbeating.
  void OnWorkersLost(const std::vector<std::string>& worker_ids);

  // Called with the cluster's readiness whenever it changes (and once from Init).
  void SetHealthCallback(std::function<void(bool serving)> callback);

  // Drain: new Generate calls get UNAVAILABLE (retryable); running ones continue.
  void StopAccepting();
  // Waits until no request is running or `deadline`; true when idle.
  bool WaitIdle(absl::Time deadline);
  size_t RunningRequests() const;

  // For Generation.
  WorkerRegistry& registry() { return registry_; }
  RouterMetrics& metrics() { return *metrics_; }
  Admission& admission() { return *admission_; }
  const CoreOptions& options() const { return options_; }
  const text::Tokenizer* tokenizer() const { return text_.tokenizer.get(); }
  WorkerStubs& StubsFor(const std::string& address);
  // Removes `generation` from the running table (only if it is still the one under its id)
  // and from admission control (its decode slot frees, or it leaves its queue).
  void Forget(const std::string& request_id, const Generation* generation);
  // Generation objects alive (running, or finishing their Abort/Release calls); the
  // destructor waits for zero so that no completion outlives the channels.
  void TrackGeneration(int delta);

 private:
  RequestContext MakeRequestContext() const;
  std::string ServedModelName() const;

  const CoreOptions options_;
  const TierTable tiers_;
  const TextAssets text_;
  const ModelDescription model_;
  metrics::Registry& metrics_registry_;
  std::unique_ptr<RouterMetrics> metrics_;
  WorkerRegistry registry_;
  std::unique_ptr<Admission> admission_;
  RateLimits rate_limits_;
  const KeyTiers key_tiers_;
  std::atomic<uint64_t> next_request_ = 0;

  absl::Mutex stubs_mu_;
  std::map<std::string, std::unique_ptr<WorkerStubs>> stubs_ ABSL_GUARDED_BY(stubs_mu_);

  mutable absl::Mutex running_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Generation>> running_
      ABSL_GUARDED_BY(running_mu_);
  bool accepting_ ABSL_GUARDED_BY(running_mu_) = true;
  int live_generations_ ABSL_GUARDED_BY(running_mu_) = 0;

  absl::Mutex health_mu_;
  std::function<void(bool)> health_callback_ ABSL_GUARDED_BY(health_mu_);
  int last_health_ ABSL_GUARDED_BY(health_mu_) = -1;  // -1 unknown, 0 not serving, 1 serving
};

}  // namespace gka::router
