#include "common/rpc/tls.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace gka::rpc {
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the TLS ", what, " file ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (!absl::StrContains(text.str(), "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat("the TLS ", what, " file ", path, " holds no PEM block"));
  }
  return text.str();
}

absl::StatusOr<TlsConfig> ReadTlsFiles(const TlsFiles& files) {
  if (!files.enabled()) return TlsConfig{};
  if (files.ca.empty() || files.cert.empty() || files.key.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs all three of the CA, certificate and key files (mutual TLS)");
  }
  TlsConfig tls;
  absl::StatusOr<std::string> ca = ReadPemFile(files.ca, "CA");
  if (!ca.ok()) return ca.status();
  absl::StatusOr<std::string> cert = ReadPemFile(files.cert, "certificate");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile(files.key, "key");
  if (!key.ok()) return key.status();
  tls.ca_pem = *std::move(ca);
  tls.cert_pem = *std::move(cert);
  tls.key_pem = *std::move(key);
  return tls;
}

absl::StatusOr<TlsConfig> InternalTls(const TlsFiles& files, bool insecure) {
  if (insecure && files.enabled()) {
    return absl::InvalidArgumentError(
        "--insecure contradicts --tls-ca/--tls-cert/--tls-key: give one or the other");
  }
  if (!insecure && !files.enabled()) {
    return absl::InvalidArgumentError(
        "the internal gRPC port (router <-> workers) needs mutual TLS: pass --tls-ca, --tls-cert "
        "and --tls-key (`gka local` makes a throwaway CA and certificates itself), or --insecure "
        "to serve it in plaintext on a network you trust");
  }
  return ReadTlsFiles(files);
}

}  // namespace gka::rpc
