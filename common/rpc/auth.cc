#include "common/rpc/auth.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace gka::rpc {
namespace {

constexpr absl::string_view kAuthorization = "authorization";
constexpr absl::string_view kBearerPrefix = "Bearer ";

absl::string_view View(const grpc_slice& slice) {
  return absl::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)),
                           GRPC_SLICE_LENGTH(slice));
}

// Plaintext credentials with gRPC core's auth-metadata processor attached.
//
// grpc::ServerCredentials has no public way to wrap core credentials, but its port-binding
// hook (AddPortToServer) is a virtual the server calls on whatever credentials it is given,
// so implementing it with grpc_server_add_http2_port on our own core credentials is enough.
class BearerTokenCredentials final : public grpc::ServerCredentials {
 public:
  explicit BearerTokenCredentials(const BearerTokenOptions& options)
      : creds_(grpc_insecure_server_credentials_create()) {
    if (!options.token.empty()) {
      // The processor state belongs to the core credentials, which the server's listeners
      // keep referenced after this wrapper (held by the ServerBuilder) is gone.
      grpc_server_credentials_set_auth_metadata_processor(
          creds_,
          grpc_auth_metadata_processor{&Process, &DestroyState, new BearerTokenOptions(options)});
    }
  }
  ~BearerTokenCredentials() override { grpc_server_credentials_release(creds_); }

  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>& /*processor*/) override {
    // The bearer check is the processor; callers configure it through BearerTokenOptions.
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }

  static void Process(void* state, grpc_auth_context* /*context*/, const grpc_metadata* md,
                      size_t num_md, grpc_process_auth_metadata_done_cb cb, void* user_data) {
    const auto& options = *static_cast<const BearerTokenOptions*>(state);
    absl::string_view path;
    absl::string_view authorization;
    bool has_authorization = false;
    for (size_t i = 0; i < num_md; ++i) {
      const absl::string_view key = View(md[i].key);
      if (key == ":path") path = View(md[i].value);
      if (key == kAuthorization) {
        authorization = View(md[i].value);
        has_authorization = true;
      }
    }
    for (const std::string& prefix : options.exempt_method_prefixes) {
      if (absl::StartsWith(path, prefix)) {
        cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
        return;
      }
    }
    if (has_authorization && BearerTokenMatches(authorization, options.token)) {
      cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
      return;
    }
    // gRPC copies the details string before the callback returns.
    const std::string details =
        has_authorization
            ? absl::StrCat("invalid bearer token for ", path)
            : absl::StrCat(path, " requires an 'authorization: Bearer <token>' header");
    cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED, details.c_str());
  }

  static void DestroyState(void* state) { delete static_cast<BearerTokenOptions*>(state); }

  grpc_server_credentials* creds_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> BearerTokenServerCredentials(
    const BearerTokenOptions& options) {
  return std::make_shared<BearerTokenCredentials>(options);
}

void AddBearerToken(grpc::ClientContext& ctx, absl::string_view token) {
  if (token.empty()) return;
  ctx.AddMetadata(std::string(kAuthorization), absl::StrCat(kBearerPrefix, token));
}

bool BearerTokenMatches(absl::string_view header_value, absl::string_view token) {
  if (!absl::StartsWith(header_value, kBearerPrefix)) return false;
  const absl::string_view given = header_value.substr(kBearerPrefix.size());
  if (given.size() != token.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < token.size(); ++i) diff |= given[i] ^ token[i];
  return diff == 0;
}

}  // namespace gka::rpc
