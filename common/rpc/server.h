// gRPC server bootstrap: one RAII object per listening server.
//
// Owns: the grpc::Server, its listening port, the standard grpc.health.v1 health service and
// server reflection (both on every server), optional bearer-token auth (a key in clear or
// hashed keys) and mutual TLS. Registered services
// are borrowed and must outlive the GrpcServer. Depends on base, Abseil, grpc++; never on our
// protobuf messages.
//
//   MyCallbackService service;                        // e.g. GenerateService::CallbackService
//   GKA_ASSIGN_OR_RETURN(auto server,
//       gka::rpc::GrpcServer::Create({.address = "127.0.0.1:0"}, {&service}));
//   GKA_LOG(INFO) << "serving on " << server->address();   // "127.0.0.1:41233"
//   ...
//   server->Shutdown(absl::Seconds(5));               // drain: NOT_SERVING, finish or cancel
//
// Thread-safety: all methods may be called from any thread; Shutdown is idempotent. The
// destructor shuts down with a zero grace period if Shutdown was not called.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/rpc/auth.h"

namespace grpc {
class Channel;
class Server;
class Service;
}  // namespace grpc

namespace gka::rpc {

struct ServerOptions {
  // host:port to listen on; port 0 picks a free port (see GrpcServer::port()).
  std::string address = "127.0.0.1:0";
  // Largest message accepted or sent, in bytes (token id arrays, tickets).
  int max_message_bytes = 64 << 20;
  // Empty: no authentication. Otherwise every call except health checks must carry
  // "authorization: Bearer <auth_token>"; others get UNAUTHENTICATED before any handler runs.
  std::string auth_token;
  // Further accepted keys, stored hashed (auth.h); a call passes with auth_token or any.
  ApiKeys api_keys;
  // Mutual TLS when enabled: clients must present a certificate of tls.ca_pem's CA.
  TlsConfig tls;
  // Methods exempt from the token check (prefixes of "/package.Service/Method").
  std::vector<std::string> auth_exempt_method_prefixes = {"/grpc.health.v1.Health/"};
  // No services of our own: only grpc.health.v1 (a plaintext port for probes that cannot speak
  // TLS, such as the kubelet's, beside a mutual-TLS port).
  bool health_only = false;
  // Interval of HTTP/2 keepalive pings to idle clients, so dead peers are noticed.
  absl::Duration keepalive_time = absl::Seconds(30);
};

class GrpcServer {
 public:
  // Builds, binds and starts. UNAVAILABLE when the address cannot be bound (in use, bad
  // host); INVALID_ARGUMENT for a malformed address or no services (unless health_only).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Create(
      const ServerOptions& options, const std::vector<grpc::Service*>& services);

  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // The port actually bound (the chosen one when the options asked for port 0).
  int port() const { return port_; }
  // "host:port" with the bound port, for clients and registration messages.
  const std::string& address() const { return address_; }

  // Health status reported for `service` ("" is the whole server). Starts SERVING. Ignored
  // after Shutdown.
  void SetServing(bool serving, absl::string_view service = "");

  // Graceful stop: health turns NOT_SERVING, no new calls are accepted, calls in flight get
  // `grace` to finish and are then cancelled; returns when all handlers have returned.
  void Shutdown(absl::Duration grace);

  // A channel into this server that skips the network (tests, co-located clients).
  std::shared_ptr<grpc::Channel> InProcessChannel();

  grpc::Server* raw() { return server_.get(); }

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, int port, std::string address);

  std::unique_ptr<grpc::Server> server_;
  const int port_;
  const std::string address_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

// Replaces the port of "host:port" ("[::1]:0" -> "[::1]:4711"). INVALID_ARGUMENT when the
// address has no port.
absl::StatusOr<std::string> WithPort(absl::string_view address, int port);

}  // namespace gka::rpc
