// Test-only helpers of gka::router's tests: the real Qwen3 tokenizer `make deps` installs
// (git-ignored) and the chat template beside it. GKA_QWEN3_TOKENIZER_DIR comes from the
// build, so the tests run from any directory.
//
//   const RouterTestText& text = RouterTestText::Get();   // ASSERT_NE(text.tokenizer, nullptr)
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "common/text/chat_template.h"
#include "common/text/tokenizer.h"

namespace gka::router {

struct RouterTestText {
  static constexpr const char* kDir = GKA_QWEN3_TOKENIZER_DIR;
  std::unique_ptr<text::Tokenizer> tokenizer;  // null when `make deps` has not run
  std::optional<text::ChatTemplate> chat_template;
  std::string error;

  // Loaded once per process.
  static const RouterTestText& Get() {
    static const RouterTestText* text = [] {
      auto* t = new RouterTestText;
      auto tok = text::Tokenizer::FromFile(kDir);
      if (!tok.ok()) {
        t->error = std::string(tok.status().message()) + " (run `make deps`)";
        return t;
      }
      t->tokenizer = std::move(*tok);
      auto tmpl = text::ChatTemplate::FromTokenizerConfig(kDir);
      if (tmpl.ok()) t->chat_template = std::move(*tmpl);
      return t;
    }();
    return *text;
  }
};

}  // namespace gka::router
