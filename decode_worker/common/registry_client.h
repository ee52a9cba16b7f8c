// RegistryClient: a worker's membership in every router's WorkerRegistry — register,
// heartbeat a LoadReport every period, register again when a router forgot the worker (it
// restarted or expired it), deregister on the way out.
//
// Several routers: each keeps its own registry and places from its own view, so the worker
// registers and heartbeats with each one independently (one membership, one thread and one
// channel per router; a dead router delays no other). A router that does not answer gets a
// fresh channel every period, so a router restarted at the same address is found within a
// period instead of after gRPC's reconnect backoff (which grows to 2 minutes). Routers come from
// two sources:
//   - `router_addresses`: one router per entry, kept for the client's life;
//   - `router_services`: names that resolve to every router (a Kubernetes headless Service
//     with publishNotReadyAddresses), resolved again every `resolve_interval`; an address
//     that disappears from the answer loses its membership, a new one gains one. A failed
//     resolution keeps the current set (a DNS hiccup must not drop every router).
//
// Owns the membership threads, one resolver thread when services are given, and a channel
// per router. Depends on rpc and the worker proto; knows nothing about engines.
//
//   GKA_ASSIGN_OR_RETURN(auto client, RegistryClient::Start(
//       {.router_addresses = {"127.0.0.1:50051"}, .registration = request},
//       [&] { return worker.Load(); }));
//   ...
//   client.reset();   // deregisters from every router (best effort) and stops
//
// Thread-safety: public methods are thread-safe. `load` is called on the membership threads,
// concurrently, and must be thread-safe against them and the worker's own threads.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/rpc/client.h"
#include "gka/worker/v1/worker.grpc.pb.h"

namespace gka::worker_common {

namespace wpb = ::gka::worker::v1;

struct RegistryClientOptions {
  // host:port of one router's WorkerRegistry each.
  std::vector<std::string> router_addresses;
  // host:port names that resolve to every router (all A/AAAA records are used).
  std::vector<std::string> router_services;
  absl::Duration resolve_interval = absl::Seconds(5);
  wpb::RegisterRequest registration;  // sent as is on every (re)registration
  // Heartbeat period when the router does not name one.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration rpc_timeout = absl::Seconds(2);
  // For every router's channel (with TLS, a service's addresses check the service's name).
  rpc::ChannelOptions channel;
  // Called after every successful heartbeat with the router's address and its decode
  // num_iter caps per tier (HeartbeatResponse.decode_num_iter_caps; empty: none). On the
  // membership's thread; must not block.
  std::function<void(const std::string& router, const std::map<std::string, int32_t>& caps)>
      on_num_iter_caps;
};

// Splits a comma-separated flag value into its non-empty, trimmed entries.
std::vector<std::string> SplitAddressList(absl::string_view list);

// Every address `host_port` ("name:port", "1.2.3.4:port", "[::1]:port") resolves to, as
// "ip:port" / "[ip6]:port", sorted, without duplicates: the IPv4 ones, or the IPv6 ones when
// there is no IPv4 address (a dual-stack name would give each router twice). INVALID_ARGUMENT
// for a malformed value, UNAVAILABLE when the name does not resolve.
absl::StatusOr<std::vector<std::string>> ResolveAllAddresses(absl::string_view host_port);

class RegistryClient {
 public:
  using LoadFn = std::function<wpb::LoadReport()>;

  // Starts the threads; the first registrations happen on them (routers may come up later:
  // each membership retries every heartbeat period). INVALID_ARGUMENT without any router,
  // or for a malformed service name.
  static absl::StatusOr<std::unique_ptr<RegistryClient>> Start(const RegistryClientOptions& options,
                                                               LoadFn load);
  ~RegistryClient();

  // Registered with at least one router.
  bool registered() const;
  // Successful Register calls so far, over all routers (re-registrations included).
  int64_t registrations() const { return registrations_.load(); }
  int64_t heartbeats() const { return heartbeats_.load(); }
  // The id the first router (by address) confirmed ("" before any registration).
  std::string worker_id() const;
  // The routers this client currently keeps a membership with, sorted.
  std::vector<std::string> routers() const;

  // Heartbeats report draining = true from now on.
  void SetDraining();

 private:
  class Membership;

  struct Resolution {
    std::map<std::string, std::string> resolved;  // address -> the service host it came from
    bool complete = true;                         // every service resolved
  };

  RegistryClient(const RegistryClientOptions& options, LoadFn load);
  Resolution ResolveServices() const;
  // Brings the membership set to `static addresses ∪ resolved`. An address from a service
  // dials with the service host as its TLS server name (the certificate names the Service,
  // not the pod IP). Memberships that leave are stopped (and deregistered) outside mu_.
  void Reconcile(const std::map<std::string, std::string>& resolved);
  void ResolveLoop();

  const RegistryClientOptions options_;
  const LoadFn load_;
  std::atomic<int64_t> registrations_{0};
  std::atomic<int64_t> heartbeats_{0};
  std::atomic<bool> draining_{false};

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::unique_ptr<Membership>> members_ ABSL_GUARDED_BY(mu_);
  std::thread resolver_;
};

}  // namespace gka::worker_common
