// TLS material for gRPC servers and channels: one CA, this process's certificate chain and
// key, PEM text read from files. Servers built with it require and verify a client
// certificate signed by the CA (mutual TLS); channels present theirs and verify the server's.
//
// Owns only strings. Depends on Abseil.
//
//   GKA_ASSIGN_OR_RETURN(TlsConfig tls, ReadTlsFiles({.ca = "ca.pem", .cert = "router.pem",
//                                                      .key = "router.key"}));
//   GrpcServer::Create({.address = "0.0.0.0:50051", .tls = tls}, services);
//   CreateChannel("worker:7001", {.tls = tls});
//
// Why one CA for both directions: every party of a cluster (router, workers, the clients the
// operator hands certificates to) is issued by the cluster's CA, so the same CA file verifies
// a peer whichever side of the call it is on.
// Thread-safety: plain values.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::rpc {

struct TlsFiles {
  std::string ca;    // PEM CA certificate(s) peers must chain to
  std::string cert;  // PEM certificate chain presented by this process
  std::string key;   // PEM private key of `cert`
  // True when any file is named; then all three must be.
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

struct TlsConfig {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
  bool enabled() const { return !ca_pem.empty(); }
};

// The PEM text of `path`: NOT_FOUND naming the file when it cannot be read, INVALID_ARGUMENT
// when it holds no PEM block. `what` names the file in messages ("CA", "certificate").
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what);

// Reads the three files. INVALID_ARGUMENT when only some are named or a file holds no PEM
// block; NOT_FOUND naming the file when one cannot be read. An empty TlsFiles gives an empty
// (disabled) config.
absl::StatusOr<TlsConfig> ReadTlsFiles(const TlsFiles& files);

// The rule for internal ports (router <-> workers: registration, reservations, transfer
// tickets): mutual TLS, or plaintext only when the operator says `insecure`. Reads the files;
// INVALID_ARGUMENT naming both ways out (`--tls-ca/--tls-cert/--tls-key`, which `gka local`
// makes by itself, or `--insecure`) when neither is given, and when both are (which one was
// meant is unclear).
absl::StatusOr<TlsConfig> InternalTls(const TlsFiles& files, bool insecure);

}  // namespace gka::rpc
