// gka health --addr HOST:PORT [--timeout 5]
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#if GKA_WITH_GRPC
#include "cli/client_commands.h"
#endif

namespace gka::cli {

void RegisterHealth(CLI::App& app, Action& run) {
  auto addr = std::make_shared<std::string>();
  auto timeout = std::make_shared<double>(5.0);
  auto tls = std::make_shared<TlsFlags>();
  CLI::App* cmd = app.add_subcommand("health", "Exit 0 when the router and its workers serve");
  cmd->add_option("--addr", *addr, "router HOST:PORT")->required();
  cmd->add_option("--timeout", *timeout, "seconds")->capture_default_str();
  AddTlsFlags(*cmd, *tls);
  cmd->callback([addr, timeout, tls, &run] {
    run = [addr, timeout, tls] {
#if GKA_WITH_GRPC
      return RunHealth(*addr, *timeout, *tls);
#else
      return absl::UnimplementedError("this build has no gRPC client");
#endif
    };
  });
}

}  // namespace gka::cli
