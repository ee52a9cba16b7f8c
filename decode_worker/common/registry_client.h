// RegistryClient: a worker's membership in the router's WorkerRegistry — register, heartbeat
// a LoadReport every period, register again when the router forgot the worker (it restarted
// or expired it), deregister on the way out.
//
// Owns one background thread and a channel to the router. Depends on rpc and the worker
// proto; knows nothing about engines.
//
//   GKA_ASSIGN_OR_RETURN(auto client, RegistryClient::Start(
//       {.router_address = "127.0.0.1:50051", .registration = request},
//       [&] { return worker.Load(); }));
//   ...
//   client.reset();   // deregisters (best effort) and stops
//
// Thread-safety: public methods are thread-safe. `load` is called on the client's thread and
// must be thread-safe against the worker's own threads.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gka/worker/v1/worker.grpc.pb.h"

namespace gka::worker_common {

namespace wpb = ::gka::worker::v1;

struct RegistryClientOptions {
  std::string router_address;         // host:port of the WorkerRegistry
  wpb::RegisterRequest registration;  // sent as is on every (re)registration
  // Heartbeat period when the router does not name one.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration rpc_timeout = absl::Seconds(2);
};

class RegistryClient {
 public:
  using LoadFn = std::function<wpb::LoadReport()>;

  // Starts the thread; the first registration happens on it (the router may come up later:
  // the client retries every heartbeat period). INVALID_ARGUMENT without a router address.
  static absl::StatusOr<std::unique_ptr<RegistryClient>> Start(const RegistryClientOptions& options,
                                                               LoadFn load);
  ~RegistryClient();

  bool registered() const;
  // Successful Register calls so far (re-registrations included).
  int64_t registrations() const { return registrations_.load(); }
  int64_t heartbeats() const { return heartbeats_.load(); }
  // The id the router confirmed ("" before the first registration).
  std::string worker_id() const;

  // Heartbeats report draining = true from now on.
  void SetDraining();

 private:
  RegistryClient(const RegistryClientOptions& options, LoadFn load);
  void Run();
  bool Register();
  void Heartbeat();
  void Deregister();

  const RegistryClientOptions options_;
  const LoadFn load_;
  std::unique_ptr<wpb::WorkerRegistry::Stub> stub_;
  std::atomic<int64_t> registrations_{0};
  std::atomic<int64_t> heartbeats_{0};
  std::atomic<bool> draining_{false};

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  absl::Duration interval_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace gka::worker_common
