// A throwaway certificate authority for one local cluster: an ECDSA P-256 CA and one
// certificate + key per process, written as PEM files, made in-process with OpenSSL's libcrypto
// (no `openssl` binary needed, which a minimal image may lack).
//
// Owns nothing after the call: the CA's private key lives only in memory during
// WriteThrowawayPki and is never written, so nobody can issue further certificates under it.
// Depends on OpenSSL (inside pki.cc only) and Abseil.
//
//   GKA_ASSIGN_OR_RETURN(Pki pki, WriteThrowawayPki({.dir = "/tmp/run/tls",
//                                                    .names = {"router", "prefill-0"}}));
//   GKA_ASSIGN_OR_RETURN(TlsConfig tls, ReadTlsFiles(pki.Files("router")));
//
// Every certificate is good for both ends of a call (extended key usage serverAuth and
// clientAuth): a process serves with it and dials its peers with it.
// Thread-safety: plain functions and values.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/tls.h"

namespace gka::rpc {

struct PkiOptions {
  // Written into; created (mode 0700) if missing.
  std::string dir;
  // One certificate per name: <dir>/<name>.pem and <dir>/<name>.key (mode 0600).
  std::vector<std::string> names;
  // Subject alternative names of every certificate (what peers verify the address against).
  std::vector<std::string> dns_names = {"localhost"};
  std::vector<std::string> ip_addresses = {"127.0.0.1"};
  // Short on purpose: the material is for one run. Starts 5 minutes back (clock skew).
  absl::Duration validity = absl::Hours(24 * 7);
  // Common name of the CA (shows in handshake errors).
  std::string ca_name = "gkaserve throwaway CA";
};

struct Pki {
  std::string dir;
  std::string ca_path;  // <dir>/ca.pem
  // The three files of `name` (one of PkiOptions::names). Inline: `gka local` names them in
  // builds without gRPC too (which cannot make a PKI, so it is never called there).
  TlsFiles Files(const std::string& name) const {
    return {.ca = ca_path, .cert = dir + "/" + name + ".pem", .key = dir + "/" + name + ".key"};
  }
};

// INVALID_ARGUMENT for no names, a name that is not a plain file name, or an IP address that
// does not parse; INTERNAL when OpenSSL fails; PERMISSION_DENIED / NOT_FOUND when the
// directory or a file cannot be written.
absl::StatusOr<Pki> WriteThrowawayPki(const PkiOptions& options);

}  // namespace gka::rpc
