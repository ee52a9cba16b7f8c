#include "common/rpc/auth.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace gka::rpc {
namespace {

constexpr absl::string_view kAuthorization = "authorization";
constexpr absl::string_view kBearerPrefix = "Bearer ";

absl::string_view View(const grpc_slice& slice) {
  return absl::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)),
                           GRPC_SLICE_LENGTH(slice));
}

constexpr absl::string_view kSha256Prefix = "sha256:";
constexpr size_t kSaltBytes = 16;

std::string Sha256(absl::string_view salt, absl::string_view key) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx, salt.data(), salt.size());
  EVP_DigestUpdate(ctx, key.data(), key.size());
  EVP_DigestFinal_ex(ctx, digest, &size);
  EVP_MD_CTX_free(ctx);
  return std::string(reinterpret_cast<const char*>(digest), size);
}

// Debian's Abseil has no checked hex decoder (HexStringToBytes accepts anything).
bool FromHex(absl::string_view hex, std::string& out) {
  if (hex.size() % 2 != 0) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  out = absl::HexStringToBytes(hex);
  return true;
}

// The server side's key check: the token in clear (kept only as a digest) and hashed keys.
struct KeyCheck {
  ApiKeys keys;
  std::vector<std::string> exempt_method_prefixes;
};

// Plaintext or TLS credentials with gRPC core's auth-metadata processor attached.
//
// grpc::ServerCredentials has no public way to wrap core credentials, but its port-binding
// hook (AddPortToServer) is a virtual the server calls on whatever credentials it is given,
// so implementing it with grpc_server_add_http2_port on our own core credentials is enough.
class BearerTokenCredentials final : public grpc::ServerCredentials {
 public:
  BearerTokenCredentials(const BearerTokenOptions& options, const TlsConfig& tls)
      : creds_(CoreCredentials(tls)) {
    ApiKeys keys = ApiKeys::FromPlain(options.token);
    keys.Add(options.keys);
    if (!keys.empty()) {
      // The processor state belongs to the core credentials, which the server's listeners
      // keep referenced after this wrapper (held by the ServerBuilder) is gone.
      grpc_server_credentials_set_auth_metadata_processor(
          creds_, grpc_auth_metadata_processor{
                      &Process, &DestroyState,
                      new KeyCheck{std::move(keys), options.exempt_method_prefixes}});
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

  // Mutual TLS: the client must present a certificate that chains to the CA.
  static grpc_server_credentials* CoreCredentials(const TlsConfig& tls) {
    if (!tls.enabled()) return grpc_insecure_server_credentials_create();
    grpc_ssl_pem_key_cert_pair pair{tls.key_pem.c_str(), tls.cert_pem.c_str()};
    return grpc_ssl_server_credentials_create_ex(
        tls.ca_pem.c_str(), &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY,
        nullptr);
  }

  static void Process(void* state, grpc_auth_context* context, const grpc_metadata* md,
                      size_t num_md, grpc_process_auth_metadata_done_cb cb, void* user_data) {
    const auto& options = *static_cast<const KeyCheck*>(state);
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
    const std::optional<absl::string_view> key = BearerKey(authorization);
    if (has_authorization && key.has_value()) {
      if (const std::optional<std::string> name = options.keys.Match(*key)) {
        // The handler learns which key called (per-key rate limits), never the key itself.
        grpc_auth_context_add_cstring_property(context, kApiKeyNameProperty, name->c_str());
        cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
        return;
      }
    }
    // gRPC copies the details string before the callback returns.
    const std::string details =
        has_authorization
            ? absl::StrCat("invalid bearer token for ", path)
            : absl::StrCat(path, " requires an 'authorization: Bearer <token>' header");
    cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_UNAUTHENTICATED, details.c_str());
  }

  static void DestroyState(void* state) { delete static_cast<KeyCheck*>(state); }

  grpc_server_credentials* creds_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> BearerTokenServerCredentials(
    const BearerTokenOptions& options) {
  return std::make_shared<BearerTokenCredentials>(options, TlsConfig{});
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const BearerTokenOptions& options,
                                                           const TlsConfig& tls) {
  return std::make_shared<BearerTokenCredentials>(options, tls);
}

absl::StatusOr<ApiKeys> ApiKeys::Parse(absl::string_view text) {
  ApiKeys keys;
  std::set<std::string> names;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "API key line ", line_number, ": ", why,
          " (expected '<name> sha256:<salt hex>:<digest hex>', see gka hash-api-key)"));
    };
    if (parts.size() != 2) return bad("two fields needed");
    absl::string_view stored = parts[1];
    if (!absl::ConsumePrefix(&stored, kSha256Prefix)) return bad("not a sha256: entry");
    std::vector<absl::string_view> hex = absl::StrSplit(stored, ':');
    std::string salt, digest;
    if (hex.size() != 2 || !FromHex(hex[0], salt) || !FromHex(hex[1], digest) ||
        digest.size() != 32 || salt.empty()) {
      return bad("salt and a 32-byte digest in hex needed");
    }
    if (!names.insert(std::string(parts[0])).second) return bad("repeated name");
    keys.entries_.push_back({std::string(parts[0]), std::move(salt), std::move(digest)});
  }
  return keys;
}

absl::StatusOr<ApiKeys> ApiKeys::ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the API key file ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ApiKeys> keys = Parse(text.str());
  if (!keys.ok()) {
    return absl::Status(keys.status().code(), absl::StrCat(path, ": ", keys.status().message()));
  }
  return keys;
}

std::string ApiKeys::Hash(absl::string_view key, absl::string_view salt) {
  std::string fresh;
  if (salt.empty()) {
    fresh.resize(kSaltBytes);
    RAND_bytes(reinterpret_cast<unsigned char*>(fresh.data()), kSaltBytes);
    salt = fresh;
  }
  return absl::StrCat(kSha256Prefix, absl::BytesToHexString(salt), ":",
                      absl::BytesToHexString(Sha256(salt, key)));
}

std::string ApiKeys::NewKey() {
  std::string bytes(24, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  return absl::StrCat("gka-", absl::BytesToHexString(bytes));
}

ApiKeys ApiKeys::FromPlain(absl::string_view key, absl::string_view name) {
  if (key.empty()) return ApiKeys();
  absl::StatusOr<ApiKeys> keys = Parse(absl::StrCat(name, " ", Hash(key)));
  return keys.ok() ? *std::move(keys) : ApiKeys();
}

void ApiKeys::Add(const ApiKeys& other) {
  entries_.insert(entries_.end(), other.entries_.begin(), other.entries_.end());
}

std::optional<std::string> ApiKeys::Match(absl::string_view presented) const {
  const Entry* found = nullptr;
  for (const Entry& e : entries_) {
    // Every entry is hashed and compared; the result is picked without branching on it early.
    const bool equal = ConstantTimeEquals(Sha256(e.salt, presented), e.digest);
    if (equal && found == nullptr) found = &e;
  }
  if (found == nullptr) return std::nullopt;
  return found->name;
}

void AddBearerToken(grpc::ClientContext& ctx, absl::string_view token) {
  if (token.empty()) return;
  ctx.AddMetadata(std::string(kAuthorization), absl::StrCat(kBearerPrefix, token));
}

std::optional<absl::string_view> BearerKey(absl::string_view header_value) {
  if (!absl::StartsWith(header_value, kBearerPrefix)) return std::nullopt;
  return header_value.substr(kBearerPrefix.size());
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

bool BearerTokenMatches(absl::string_view header_value, absl::string_view token) {
  const std::optional<absl::string_view> given = BearerKey(header_value);
  return given.has_value() && ConstantTimeEquals(*given, token);
}

}  // namespace gka::rpc
