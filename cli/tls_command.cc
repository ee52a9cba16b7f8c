// TLS on the command line: the client commands' --tls-* flags (commands.h), and
//
//   gka make-certs --out DIR [--names router,worker,client] [--dns gkaserve-internal,localhost]
//                  [--ip 127.0.0.1] [--days 7]
//
// which writes a throwaway CA's certificate (DIR/ca.pem) and one certificate + key per name
// (DIR/<name>.pem, DIR/<name>.key; the CA's key is never written), for a cluster started by
// hand or the Helm chart's Secret (deploy/helm/gkaserve/values.yaml, `tls`). `gka local` makes
// its own.
#include <CLI/CLI.hpp>
#include <iostream>

#include "absl/strings/str_split.h"
#include "cli/commands.h"
#if GKA_WITH_GRPC
#include "common/rpc/pki.h"
#endif

namespace gka::cli {

void AddTlsFlags(CLI::App& cmd, TlsFlags& flags) {
  cmd.add_option("--tls-ca", flags.ca, "TLS: CA (PEM) the server's certificate must chain to")
      ->envname("GKA_TLS_CA");
  cmd.add_option("--tls-cert", flags.cert,
                 "mutual TLS: client certificate (PEM), e.g. gka local's <tls-dir>/client.pem")
      ->envname("GKA_TLS_CERT");
  cmd.add_option("--tls-key", flags.key, "mutual TLS: the client certificate's key (PEM)")
      ->envname("GKA_TLS_KEY");
}

namespace {

struct MakeCertsFlags {
  std::string out;
  std::string names = "router,worker,client";
  std::string dns = "localhost";
  std::string ip = "127.0.0.1";
  int days = 7;
};

#if GKA_WITH_GRPC
std::vector<std::string> List(const std::string& csv) {
  return absl::StrSplit(csv, ',', absl::SkipWhitespace());
}
#endif

}  // namespace

void RegisterMakeCerts(CLI::App& app, Action& run) {
  auto f = std::make_shared<MakeCertsFlags>();
  CLI::App* cmd = app.add_subcommand(
      "make-certs", "Write a throwaway CA and a certificate + key per name (mutual TLS)");
  cmd->add_option("--out", f->out, "directory to write into")->required();
  cmd->add_option("--names", f->names, "certificates to issue, comma-separated")
      ->capture_default_str();
  cmd->add_option("--dns", f->dns,
                  "DNS names every certificate carries (what peers check; the chart's "
                  "tls.serverName), comma-separated")
      ->capture_default_str();
  cmd->add_option("--ip", f->ip, "IP addresses every certificate carries, comma-separated")
      ->capture_default_str();
  cmd->add_option("--days", f->days, "validity")->capture_default_str()->check(CLI::Range(1, 825));
  cmd->callback([f, &run] {
    run = [f]() -> absl::Status {
#if GKA_WITH_GRPC
      absl::StatusOr<rpc::Pki> pki =
          rpc::WriteThrowawayPki({.dir = f->out,
                                  .names = List(f->names),
                                  .dns_names = List(f->dns),
                                  .ip_addresses = List(f->ip),
                                  .validity = absl::Hours(24) * f->days});
      if (!pki.ok()) return pki.status();
      std::cout << pki->ca_path << std::endl;
      for (const std::string& name : List(f->names)) {
        const rpc::TlsFiles files = pki->Files(name);
        std::cout << files.cert << " " << files.key << std::endl;
      }
      return absl::OkStatus();
#else
      return absl::UnimplementedError("this build has no gRPC (common/rpc holds the CA code)");
#endif
    };
  });
}

}  // namespace gka::cli
