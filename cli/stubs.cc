// Temporary: subcommands whose libraries are still landing.
#include <CLI/CLI.hpp>
#include "cli/commands.h"
namespace gka::cli {
void RegisterGenerate(CLI::App&, Action&) {}
void RegisterChat(CLI::App&, Action&) {}
void RegisterTokenize(CLI::App&, Action&) {}
}  // namespace gka::cli
