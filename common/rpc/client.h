// Client-side helpers: channels with our defaults, readiness and health checks.
//
// Owns nothing long-lived (channels are shared_ptr, as gRPC hands them out). Depends on
// base, grpc++, and the generated grpc.health.v1 stub (kept out of this header).
//
//   auto channel = gka::rpc::CreateChannel("127.0.0.1:50051", {});
//   GKA_RETURN_IF_ERROR(gka::rpc::WaitForReady(*channel, absl::Now() + absl::Seconds(2)));
//   GKA_ASSIGN_OR_RETURN(bool serving, gka::rpc::CheckHealth(*channel, "", deadline));
//
// Thread-safety: free functions, safe from any thread; a grpc::Channel is thread-safe.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/rpc/tls.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace gka::rpc {

struct ChannelOptions {
  int max_message_bytes = 64 << 20;
  // HTTP/2 keepalive pings, so a dead server is noticed on an idle channel.
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // Mutual TLS when enabled: presents tls.cert_pem and verifies the server against
  // tls.ca_pem (its certificate must name the host of the address).
  TlsConfig tls;
  // With tls: the name the server's certificate must carry instead of the address's host,
  // for an address resolved from a name (a worker dialling each IP of the routers' headless
  // Service checks the certificate against the Service name, not the pod IP).
  std::string tls_server_name;
};

// Channel to "host:port", plaintext unless options.tls is enabled. Never fails: connection
// (and handshake) errors surface on calls.
std::shared_ptr<grpc::Channel> CreateChannel(absl::string_view address,
                                             const ChannelOptions& options);

// Connects now; DEADLINE_EXCEEDED if not connected by `deadline` (callers add the address
// with base::Annotate: grpc::Channel does not expose its target here).
absl::Status WaitForReady(grpc::Channel& channel, absl::Time deadline);

// grpc.health.v1.Health/Check for `service` ("" is the whole server). true: SERVING;
// false: NOT_SERVING or UNKNOWN; an error Status when the call fails (server down:
// UNAVAILABLE; unknown service: NOT_FOUND).
absl::StatusOr<bool> CheckHealth(grpc::Channel& channel, absl::string_view service,
                                 absl::Time deadline);

}  // namespace gka::rpc
