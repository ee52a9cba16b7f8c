// gka: offline engine commands (eval, generate, chat, tokenize, make-tiny-model).
// stdout carries machine-readable results only; logs and errors go to stderr.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"gka: GKA hybrid serving tools"};
  app.require_subcommand(1);
  gka::cli::Action run;
  gka::cli::RegisterEval(app, run);
  gka::cli::RegisterGenerate(app, run);
  gka::cli::RegisterChat(app, run);
  gka::cli::RegisterTokenize(app, run);
  gka::cli::RegisterMakeTinyModel(app, run);
  gka::cli::RegisterMakeRandomModel(app, run);
  gka::cli::RegisterCompare(app, run);
  gka::cli::RegisterLocal(app, run);
  gka::cli::RegisterHealth(app, run);
  gka::cli::RegisterHashApiKey(app, run);
  gka::cli::RegisterBench(app, run);
  gka::cli::RegisterMakeCerts(app, run);
  CLI11_PARSE(app, argc, argv);
  if (!run) return 2;
  const absl::Status status = run();
  if (!status.ok()) {
    std::cerr << "gka: " << status.ToString() << std::endl;
    return 1;
  }
  return 0;
}
