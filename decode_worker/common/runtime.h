// WorkerRuntime: the process shell both workers share — the engine thread (posted tasks,
// then the worker's tick), the gRPC server, the /metrics exposer, the router registration,
// and their orderly shutdown.
//
// Owns the engine thread, its TaskQueue, the server, the exposer and the registry client.
// Borrows the services, which must outlive Shutdown().
//
//   WorkerRuntime rt;
//   rt.StartEngineThread([&] { return core->Tick(); }, [&] { Publish(); });
//   GKA_RETURN_IF_ERROR(rt.Serve(options, {&service}, registry, [&] { return Load(); }));
//   ...
//   rt.Shutdown(absl::Seconds(5), [&] { core->AbortAll(...); });
//
// Thread-safety: engine_queue() is thread-safe; Start*/Serve/Shutdown are called by the
// owner, Shutdown at most once effectively (idempotent).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "common/rpc/server.h"
#include "common/rpc/tls.h"
#include "decode_worker/common/model_loader.h"
#include "decode_worker/common/registry_client.h"
#include "decode_worker/common/task_queue.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace gka::worker_common {

// What every worker is configured with (flags.h fills it from the command line).
struct WorkerOptions {
  ModelOptions model;
  std::string worker_id;
  std::string grpc_address = "127.0.0.1:0";     // port 0: pick one
  std::string metrics_address = "127.0.0.1:0";  // "" = no exposer
  // "" = none. A plaintext grpc.health.v1-only port for probes that cannot speak TLS (the
  // kubelet's); it says nothing but SERVING / NOT_SERVING.
  std::string health_address;
  std::string router_address;  // "" = do not register; "a:1,b:2": several
  // host:port names resolving to every router (a headless Service), comma-separated.
  std::string router_service;
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // Mutual TLS on the gRPC port and the channel to the router; disabled: plaintext.
  rpc::TlsConfig tls;
  // Non-empty: the name the router's certificate must carry instead of --router's host.
  std::string tls_server_name;
  // UCX transports in UCX_TLS syntax; empty: UCX_TLS from the environment or UCX's default.
  std::string ucx_transports;
  // How state in GPU memory moves (transfer/staging's StagingMode): auto | staged | direct.
  std::string device_transfer = "auto";
  // Staged path: max-length hand-off shares pinned per rank at startup (DeviceTransfer::Prewarm).
  int32_t staging_prewarm = 2;
  int32_t vocab_limit = 0;  // sample ids below this (0: the whole vocabulary)
  // Tier names, so per-tier series exist from start.
  std::vector<std::string> tiers;
};

// The registration a worker of `role` sends (addresses are filled in by Serve).
wpb::RegisterRequest Registration(wpb::WorkerRole role, const WorkerOptions& options,
                                  const LoadedModel& model, uint64_t compat_hash,
                                  int32_t max_batch_tokens);

// A value one thread publishes and others read (the engine thread's stats snapshot).
// Thread-safe.
template <typename T>
class Published {
 public:
  void Set(T value) {
    absl::MutexLock lock(&mu_);
    value_ = std::move(value);
  }
  T Get() const {
    absl::MutexLock lock(&mu_);
    return value_;
  }

 private:
  mutable absl::Mutex mu_;
  T value_ ABSL_GUARDED_BY(mu_);
};

// Events per second between calls (tokens/s in load reports). Not thread-safe.
class RateMeter {
 public:
  double Update(int64_t total, absl::Time now = absl::Now());

 private:
  int64_t last_total_ = 0;
  absl::Time last_ = absl::Now();
};

struct ServeOptions {
  std::string grpc_address = "127.0.0.1:0";
  std::string metrics_address = "127.0.0.1:0";  // "" = no exposer
  std::string health_address;                   // see WorkerOptions
  std::string router_address;                   // "" = do not register
  std::string router_service;                   // see WorkerOptions
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // Sent to the router; Serve fills in the bound gRPC and metrics addresses.
  wpb::RegisterRequest registration;
  rpc::TlsConfig tls;           // see WorkerOptions
  std::string tls_server_name;  // see WorkerOptions
  // Passed to the registry client (decode workers: the degrade ladder's caps).
  std::function<void(const std::string& router, const std::map<std::string, int32_t>& caps)>
      on_num_iter_caps;

  static ServeOptions Of(const WorkerOptions& options, wpb::RegisterRequest registration) {
    return {options.grpc_address,    options.metrics_address,
            options.health_address,  options.router_address,
            options.router_service,  options.heartbeat_interval,
            std::move(registration), options.tls,
            options.tls_server_name, {}};
  }
};

class WorkerRuntime {
 public:
  WorkerRuntime() = default;
  ~WorkerRuntime();  // Shutdown(zero grace) if needed
  WorkerRuntime(const WorkerRuntime&) = delete;
  WorkerRuntime& operator=(const WorkerRuntime&) = delete;

  TaskQueue& engine_queue() { return engine_queue_; }

  // The engine thread: runs posted tasks, then `tick` (which returns when it wants to run
  // again), then `publish` (snapshots for other threads), until Shutdown.
  void StartEngineThread(std::function<absl::Time()> tick, std::function<void()> publish);

  // Binds the server, starts the exposer and the registration.
  absl::Status Serve(const ServeOptions& options, const std::vector<grpc::Service*>& services,
                     std::shared_ptr<metrics::Registry> registry, RegistryClient::LoadFn load);

  // Tells the routers this worker drains (they place nothing new here) while it keeps
  // serving calls, new ones included (a decode worker's Migrate). Idempotent.
  void Deregister();

  // Deregisters, gives calls in flight `grace` (the engine thread keeps serving them), runs
  // `last` on the engine thread, stops it, stops the exposer.
  void Shutdown(absl::Duration grace, std::function<void()> last);

  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  int64_t registrations() const;

 private:
  TaskQueue engine_queue_;
  std::thread engine_thread_;
  std::unique_ptr<rpc::GrpcServer> server_;
  std::unique_ptr<rpc::GrpcServer> health_server_;  // ServeOptions::health_address
  std::unique_ptr<metrics::MetricsExposer> exposer_;
  mutable absl::Mutex mu_;
  std::unique_ptr<RegistryClient> registry_client_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::string grpc_address_, metrics_address_;
};

}  // namespace gka::worker_common
