// Internal to gka::text: the pre-tokenizer's split regex, run by PCRE2 (UTF + UCP, JIT).
//
// tokenizer.json patterns are written for Oniguruma, which Hugging Face tokenizers uses.
// PCRE2 reads the same syntax with one difference that matters for real patterns: with UCP,
// PCRE2's \s also matches U+180E MONGOLIAN VOWEL SEPARATOR (via \h), Oniguruma's does not
// (it is the Unicode White_Space property). Compile() therefore rewrites \s and \S to
// \p{White_Space} and \P{White_Space}. Other escapes keep PCRE2's meaning.
//
//   GKA_ASSIGN_OR_RETURN(auto re, Regex::Compile(pattern, /*literal=*/false));
//   std::vector<Regex::Match> matches;
//   GKA_RETURN_IF_ERROR(re->FindAll(text, &matches));
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::text::internal {

// Oniguruma pattern -> PCRE2 pattern (the \s rewrite described above).
std::string OnigurumaToPcre2(absl::string_view pattern);

// Thread-safe: the compiled pattern is immutable; each FindAll has its own match state.
class Regex {
 public:
  struct Match {
    size_t begin;  // byte offsets into the searched text
    size_t end;
  };

  // `literal`: match `pattern` as plain text (tokenizer.json's {"String": ...} patterns).
  // InvalidArgument with PCRE2's message and offset when the pattern does not compile.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(absl::string_view pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends every non-empty, non-overlapping match, left to right (Oniguruma's find_iter).
  // `text` must be valid UTF-8. Internal when PCRE2 gives up (match or JIT stack limits).
  absl::Status FindAll(absl::string_view text, std::vector<Match>* matches) const;

 private:
  struct Code;
  explicit Regex(std::unique_ptr<Code> code);
  std::unique_ptr<Code> code_;
};

}  // namespace gka::text::internal
