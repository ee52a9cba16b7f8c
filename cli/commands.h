// The `gka` tool's subcommands. Each registers its flags on a CLI11 subcommand and runs
// through an absl::Status-returning function, so errors reach the user as one clear line.
// The CLI is the top of the house: it may depend on anything.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"

namespace CLI {
class App;
}

namespace gka::cli {

// Registers a subcommand; `run` is set to the action to perform if the subcommand is chosen.
using Action = std::function<absl::Status()>;

void RegisterEval(CLI::App& app, Action& run);
void RegisterGenerate(CLI::App& app, Action& run);
void RegisterChat(CLI::App& app, Action& run);
void RegisterTokenize(CLI::App& app, Action& run);
void RegisterMakeTinyModel(CLI::App& app, Action& run);
void RegisterMakeRandomModel(CLI::App& app, Action& run);
void RegisterCompare(CLI::App& app, Action& run);
void RegisterLocal(CLI::App& app, Action& run);
void RegisterHealth(CLI::App& app, Action& run);
void RegisterHashApiKey(CLI::App& app, Action& run);
void RegisterBench(CLI::App& app, Action& run);
void RegisterMakeCerts(CLI::App& app, Action& run);

// PEM file paths of the commands that dial a router or a worker: --tls-ca (verify the server;
// setting it turns TLS on), --tls-cert + --tls-key (present a client certificate, for mutual
// TLS). Defaults: $GKA_TLS_CA, $GKA_TLS_CERT, $GKA_TLS_KEY (the SDKs read the same).
struct TlsFlags {
  std::string ca;
  std::string cert;
  std::string key;
};
void AddTlsFlags(CLI::App& cmd, TlsFlags& flags);

}  // namespace gka::cli
