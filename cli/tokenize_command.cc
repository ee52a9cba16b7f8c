// gka tokenize --tokenizer FILE|DIR (--text S | --text-file PATH): prints a JSON array of ids.
// The file's exact bytes are encoded (trailing newlines included); no special tokens added.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "common/base/status.h"
#include "common/text/tokenizer.h"

namespace gka::cli {
namespace {

struct TokenizeFlags {
  std::string tokenizer;
  std::optional<std::string> text;
  std::string text_file;
};

absl::Status RunTokenize(const TokenizeFlags& f) {
  std::string input;
  if (f.text) {
    input = *f.text;
  } else {
    std::ifstream in(f.text_file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read --text-file ", f.text_file));
    std::ostringstream ss;
    ss << in.rdbuf();
    input = ss.str();
  }
  GKA_ASSIGN_OR_RETURN(auto tok, text::Tokenizer::FromFile(f.tokenizer));
  GKA_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->Encode(input));
  std::cout << "[" << absl::StrJoin(ids, ",") << "]" << std::endl;
  return absl::OkStatus();
}

}  // namespace

void RegisterTokenize(CLI::App& app, Action& run) {
  auto f = std::make_shared<TokenizeFlags>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("--tokenizer", f->tokenizer, "tokenizer.json or a directory holding it")
      ->required();
  auto* t = cmd->add_option("--text", f->text, "the text");
  auto* tf = cmd->add_option("--text-file", f->text_file, "a file whose exact bytes to encode");
  t->excludes(tf);
  cmd->callback([f, &run] {
    run = [f] {
      if (!f->text && f->text_file.empty()) {
        return absl::InvalidArgumentError("give --text S or --text-file PATH");
      }
      return RunTokenize(*f);
    };
  });
}

}  // namespace gka::cli
