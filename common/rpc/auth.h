// Bearer-token authentication for gRPC servers and clients, and API keys stored hashed.
//
// Owns: a ServerCredentials implementation that checks "authorization: Bearer <token>" in
// gRPC core's auth-metadata hook, before any handler runs, and rejects with UNAUTHENTICATED;
// over plaintext or over mutual TLS (tls.h). ApiKeys: the accepted keys as salted SHA-256
// digests, so a leaked config or Secret does not leak a usable key.
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
// The token is sent in clear text over plaintext channels: use it with TLS, inside a trusted
// network or behind TLS termination.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/rpc/tls.h"

namespace grpc {
class ClientContext;
class ServerCredentials;
}  // namespace grpc

namespace gka::rpc {

// Accepted API keys, each stored as "sha256:<salt hex>:<digest hex>" with
// digest = SHA-256(salt bytes || key). A key file has one "<name> <stored form>" per line
// ('#' starts a comment); `gka hash-api-key` prints such a line.
class ApiKeys {
 public:
  ApiKeys() = default;
  // INVALID_ARGUMENT naming the line for a malformed entry or a repeated name.
  static absl::StatusOr<ApiKeys> Parse(absl::string_view text);
  // NOT_FOUND when the file cannot be read; otherwise as Parse.
  static absl::StatusOr<ApiKeys> ReadFile(const std::string& path);
  // One key given in clear (a flag or an environment variable): kept only as its digest
  // under a fresh random salt. Empty `key`: no keys.
  static ApiKeys FromPlain(absl::string_view key, absl::string_view name = "default");
  // The stored form of `key` under `salt` (raw bytes; 16 random bytes when empty).
  static std::string Hash(absl::string_view key, absl::string_view salt = "");
  // A new random key: "gka-" and 48 hex digits (192 bits from OpenSSL's CSPRNG).
  static std::string NewKey();

  // The name of the key `presented` is, or nullopt. Compares against every entry in constant
  // time per entry (no early exit), so timing tells neither the key nor which entry matched.
  std::optional<std::string> Match(absl::string_view presented) const;
  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  void Add(const ApiKeys& other);

 private:
  struct Entry {
    std::string name;
    std::string salt;    // raw bytes
    std::string digest;  // 32 raw bytes
  };
  std::vector<Entry> entries_;
};

// The auth-context property a server call carries once its bearer token matched: the key's
// name (ApiKeys), so that handlers can apply per-key limits
// (grpc::ServerContextBase::auth_context()->FindPropertyValues(kApiKeyNameProperty)).
inline constexpr char kApiKeyNameProperty[] = "gka.api_key_name";

struct BearerTokenOptions {
  // Required token; empty (and no `keys`) disables the check (every call passes).
  std::string token;
  // Further accepted keys (hashed); a call passes with `token` or any of these.
  ApiKeys keys;
  // Method paths ("/package.Service/Method") starting with any of these need no token.
  std::vector<std::string> exempt_method_prefixes = {"/grpc.health.v1.Health/"};
};

// Plaintext (insecure transport) server credentials that enforce `options`. Thread-safe:
// the check runs on gRPC's threads and only reads the options.
std::shared_ptr<grpc::ServerCredentials> BearerTokenServerCredentials(
    const BearerTokenOptions& options);

// As above over mutual TLS when `tls` is enabled: the handshake fails unless the client
// presents a certificate chaining to tls.ca_pem, before any metadata is read.
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const BearerTokenOptions& options,
                                                           const TlsConfig& tls);

// Adds "authorization: Bearer <token>" to a call; no-op for an empty token.
void AddBearerToken(grpc::ClientContext& ctx, absl::string_view token);

// True when `header_value` (the "authorization" value) carries exactly `token`. Constant
// time in the token's length, so the comparison leaks nothing through timing.
bool BearerTokenMatches(absl::string_view header_value, absl::string_view token);

// The key of an "authorization: Bearer <key>" value; nullopt without the "Bearer " prefix.
std::optional<absl::string_view> BearerKey(absl::string_view header_value);

// True when `a` and `b` are equal, in time that depends only on their lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace gka::rpc
