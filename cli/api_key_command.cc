// gka hash-api-key --name NAME [--key KEY]
//
// Prints the line an API key file (gka-router --api-keys-file, the Helm chart's Secret) holds
// for a key: "NAME sha256:<salt hex>:<digest hex>". Without --key a fresh random key is made
// and printed once on stderr, for the operator to hand out; only the salted digest is kept.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"
#if GKA_WITH_GRPC
#include "common/rpc/auth.h"
#endif

namespace gka::cli {

void RegisterHashApiKey(CLI::App& app, Action& run) {
  auto name = std::make_shared<std::string>();
  auto key = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "hash-api-key", "Print an API key file line (salted SHA-256) for a key, or a new key");
  cmd->add_option("--name", *name, "the key's name (logs and metrics show it, never the key)")
      ->required();
  cmd->add_option("--key", *key, "the key (default: make a random one, printed on stderr)");
  cmd->callback([name, key, &run] {
    run = [name, key]() -> absl::Status {
#if GKA_WITH_GRPC
      if (name->empty() || name->find_first_of(" \t\n#") != std::string::npos) {
        return absl::InvalidArgumentError("--name must be non-empty, without spaces or '#'");
      }
      std::string k = *key;
      if (k.empty()) {
        k = rpc::ApiKeys::NewKey();
        std::cerr << k << std::endl;
      }
      std::cout << *name << " " << rpc::ApiKeys::Hash(k) << std::endl;
      return absl::OkStatus();
#else
      return absl::UnimplementedError("this build has no gRPC (common/rpc holds the key format)");
#endif
    };
  });
}

}  // namespace gka::cli
