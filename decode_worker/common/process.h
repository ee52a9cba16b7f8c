// Process-level helpers both worker binaries share: the ready line, tier names, waiting for
// SIGINT/SIGTERM.
//
// Owns nothing.
//
//   std::cout << ReadyLine("decode", server->address(), exposer->address()) << std::endl;
//
// Thread-safety: pure functions (ReadTierNames reads a file).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::worker_common {

// {"role":"decode","grpc":"127.0.0.1:4711","metrics":"127.0.0.1:4712","pid":123}: the one
// line a worker prints on stdout once it serves (launchers and tests parse it).
std::string ReadyLine(absl::string_view role, absl::string_view grpc_address,
                      absl::string_view metrics_address);

// The `name` of every tier in a tier file ({"tiers": [{"name": ...}, ...]}), so metric series
// labelled by tier exist from start. Other fields are the router's to validate.
// INVALID_ARGUMENT naming the file for unreadable JSON or a tier without a string name.
absl::StatusOr<std::vector<std::string>> ReadTierNames(absl::string_view path);

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts afterwards;
// call first thing in main, then WaitForTerminationSignal() once serving. Returns the signal.
void BlockTerminationSignals();
int WaitForTerminationSignal();

}  // namespace gka::worker_common
