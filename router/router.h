// gka_router: the cluster's front door. Serves gka.serving.v1.GenerateService (the public
// API: text in and out, tiers, placement, retries, streaming) on the public gRPC port and
// gka.worker.v1.WorkerRegistry (workers register and heartbeat here) on the internal one, plus
// Prometheus /metrics.
//
// Two ports, because they trust differently. The internal port and the router's channels to
// workers carry reservations and UCX transfer tickets: mutual TLS (`tls`), plaintext only when
// the binary is given --insecure. The public port carries the client API: plaintext unless
// `public_tls` (then mutual TLS with the same CA), guarded by API keys when keys are configured
// (so a loopback port needs no key unless the operator sets some).
//
// Owns: the two gRPC servers (with grpc.health.v1 and reflection), the metrics exposer, the
// RouterCore (tiers, tokenizer, registry, running requests) and a sweeper thread that marks
// silent workers unhealthy. Must not depend on the engine, kernels or transfer: workers are
// reached only through gka.worker.v1.
//
// Health: the overall server status ("") is SERVING while the process serves; the service
// "gka.serving.v1.GenerateService" is SERVING only while the router accepts requests and at
// least one healthy prefill and one healthy decode worker are registered (what `gka health`
// checks).
//
//   GKA_ASSIGN_OR_RETURN(std::unique_ptr<gka::router::Router> router,
//                        gka::router::Router::Create({.address = "127.0.0.1:0",
//                                                     .model_dir = "/models/qwen3"}));
//   std::cout << router->address() << " " << router->internal_address();
//   ... SIGTERM:
//   router->Drain(absl::Seconds(30));   // refuse new requests, finish running ones
//
// Thread-safety: all methods are thread-safe; Drain/Shutdown are idempotent.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/rpc/auth.h"
#include "common/rpc/tls.h"

namespace gka::metrics {
class Registry;
class MetricsExposer;
}  // namespace gka::metrics

namespace gka::rpc {
class GrpcServer;
}  // namespace gka::rpc

namespace gka::router {

class RouterCore;
class GenerateServiceImpl;
class RegistryServiceImpl;

struct RouterOptions {
  // Public gRPC listen address (GenerateService); port 0 picks a free port.
  std::string address = "127.0.0.1:0";
  // Internal gRPC listen address (WorkerRegistry: what workers' --router names).
  std::string internal_address = "127.0.0.1:0";
  // /metrics listen address; empty disables the exposer.
  std::string metrics_address = "127.0.0.1:0";
  // Tier file (JSON); empty: the built-in interactive / standard / batch tiers.
  std::string tiers_file;
  // Model directory: config.json / generation_config.json (vocabulary, EOS, sampling
  // defaults), its name (the served model name), and its tokenizer files.
  std::string model_dir;
  // Directory with tokenizer.json (+ tokenizer_config.json); empty: model_dir's.
  std::string tokenizer_dir;
  // Served model name; empty: model_dir's last component (else the workers' model).
  std::string served_model_name;
  int default_max_tokens = 256;
  // A worker silent this long is unhealthy; it heartbeats every third of it.
  absl::Duration heartbeat_timeout = absl::Seconds(3);
  // Optional bearer token every public call must carry (health exempt; workers register on
  // the internal port, which authenticates them by certificate).
  std::string api_key;
  // Further accepted keys, stored hashed (--api-keys-file; common/rpc/auth.h).
  rpc::ApiKeys api_keys;
  // Mutual TLS on the internal port (workers must present a certificate of the CA) and on the
  // router's channels to workers. Disabled: plaintext (gka-router insists on --insecure).
  rpc::TlsConfig tls;
  // The public port over mutual TLS with `tls` too (clients present a certificate of the CA).
  bool public_tls = false;
  // Non-empty: the name workers' certificates must carry, checked instead of the address they
  // register (pod IPs are not in certificates; the chart issues one name for the cluster).
  std::string tls_server_name;
  // Reported in ServedBy; empty: "router-<random hex>".
  std::string router_id;
  // Placements per request (see CoreOptions::max_attempts).
  int max_attempts = 3;
  // Lease asked of decode workers for a reservation.
  absl::Duration lease = absl::Seconds(30);
  // Admission control (router/admission.h): off places every request at once (the
  // behaviour before issue 9); max_running 0 = the decode workers' state slots.
  bool admission = true;
  int max_running = 0;
  // Per-API-key rate limits, "NAME=RPS[:BURST]" each (router/rate_limit.h).
  std::vector<std::string> rate_limits;
  // Per-API-key tier limits, "NAME=TIER[|TIER...]" each (router/rate_limit.h KeyTiers).
  std::vector<std::string> key_tiers;
};

class Router {
 public:
  // INVALID_ARGUMENT / NOT_FOUND for bad options or files (tier file, model dir, tokenizer);
  // UNAVAILABLE when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<Router>> Create(const RouterOptions& options);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  const std::string& address() const;
  // Where workers register ("host:port" of the internal port).
  const std::string& internal_address() const;
  // "" when the exposer is disabled.
  const std::string& metrics_address() const;
  const std::string& router_id() const;

  // Graceful stop: the cluster health turns NOT_SERVING and new Generate calls get
  // UNAVAILABLE (retryable) at once; running requests get `grace` to finish; then the server
  // stops (cancelling what is left). Worker heartbeats are accepted throughout.
  void Drain(absl::Duration grace);
  // Immediate stop (running requests are cancelled after `grace`).
  void Shutdown(absl::Duration grace);

  RouterCore& core() { return *core_; }
  metrics::Registry& metrics_registry() { return *metrics_registry_; }

 private:
  Router() = default;
  void SweepLoop();

  std::string router_id_;
  std::shared_ptr<metrics::Registry> metrics_registry_;
  std::unique_ptr<RouterCore> core_;
  std::unique_ptr<GenerateServiceImpl> generate_service_;
  std::unique_ptr<RegistryServiceImpl> registry_service_;
  std::unique_ptr<rpc::GrpcServer> server_;           // public: GenerateService
  std::unique_ptr<rpc::GrpcServer> internal_server_;  // internal: WorkerRegistry
  std::unique_ptr<metrics::MetricsExposer> exposer_;
  std::string metrics_address_;
  absl::Duration sweep_period_;
  absl::Notification stop_sweeper_;
  std::once_flag stop_once_;
  std::thread sweeper_;
};

}  // namespace gka::router
