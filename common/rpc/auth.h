// Bearer-token authentication for gRPC servers and clients.
//
// Owns: a ServerCredentials implementation that checks "authorization: Bearer <token>" in
// gRPC core's auth-metadata hook, before any handler runs, and rejects with UNAUTHENTICATED.
// Methods whose path starts with an exempt prefix (health checks, by default) pass without a
// token so that load balancers and kubelet probes work. Depends on grpc++ only.
//
//   // Server side: GrpcServer does this when ServerOptions::auth_token is set.
//   auto creds = gka::rpc::BearerTokenServerCredentials({.token = "s3cret"});
//   // Client side:
//   grpc::ClientContext ctx;
//   gka::rpc::AddBearerToken(ctx, "s3cret");
//
// Why core's hook and not an interceptor: a gRPC C++ server interceptor cannot fail a call
// before its handler runs, and AuthMetadataProcessor is only accepted by TLS credentials;
// core's processor also works on plaintext (insecure) credentials.
// The token is sent in clear text over plaintext channels: use it inside a trusted network
// or behind TLS termination.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace grpc {
class ClientContext;
class ServerCredentials;
}  // namespace grpc

namespace gka::rpc {

struct BearerTokenOptions {
  // Required token; empty disables the check (every call passes).
  std::string token;
  // Method paths ("/package.Service/Method") starting with any of these need no token.
  std::vector<std::string> exempt_method_prefixes = {"/grpc.health.v1.Health/"};
};

// Plaintext (insecure transport) server credentials that enforce `options`. Thread-safe:
// the check runs on gRPC's threads and only reads the options.
std::shared_ptr<grpc::ServerCredentials> BearerTokenServerCredentials(
    const BearerTokenOptions& options);

// Adds "authorization: Bearer <token>" to a call; no-op for an empty token.
void AddBearerToken(grpc::ClientContext& ctx, absl::string_view token);

// True when `header_value` (the "authorization" value) carries exactly `token`. Constant
// time in the token's length, so the comparison leaks nothing through timing.
bool BearerTokenMatches(absl::string_view header_value, absl::string_view token);

}  // namespace gka::rpc
