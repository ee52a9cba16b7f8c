#include "common/text/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "common/text/utf8.h"

namespace gka::text::internal {
namespace {

std::string Pcre2ErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return absl::StrCat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
};
struct MatchContextDeleter {
  void operator()(pcre2_match_context* p) const { pcre2_match_context_free(p); }
};
struct JitStackDeleter {
  void operator()(pcre2_jit_stack* p) const { pcre2_jit_stack_free(p); }
};

// JIT stack for one FindAll: PCRE2's default 32 KiB is too small for long runs that
// backtrack (a lookahead after thousands of spaces); 8 MiB is reserved, 64 KiB committed.
constexpr size_t kJitStackStart = 64 << 10;
constexpr size_t kJitStackMax = 8 << 20;

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(std::unique_ptr<Code> code) : code_(std::move(code)) {}
Regex::~Regex() = default;

std::string OnigurumaToPcre2(absl::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[i + 1];
      if (next == 's') {
        out.append("\\p{White_Space}");
      } else if (next == 'S') {
        out.append("\\P{White_Space}");
      } else {
        out.push_back('\\');
        out.push_back(next);
      }
      ++i;  // an escaped character never starts another escape
      continue;
    }
    out.push_back(pattern[i]);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(absl::string_view pattern, bool literal) {
  const std::string translated = literal ? std::string(pattern) : OnigurumaToPcre2(pattern);
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  if (literal) options |= PCRE2_LITERAL;
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  auto code = std::make_unique<Code>();
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                             options, &error_code, &error_offset, nullptr);
  if (code->code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pre-tokenizer regex does not compile at offset ", error_offset, ": ",
        Pcre2ErrorMessage(error_code), " (pattern as given to PCRE2: ", translated, ")"));
  }
  // Without JIT (PCRE2 built without it) the interpreter gives the same answers, slower.
  code->jit = pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<Regex>(new Regex(std::move(code)));
}

absl::Status Regex::FindAll(absl::string_view text, std::vector<Match>* matches) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(
      pcre2_match_data_create_from_pattern(code_->code, nullptr));
  std::unique_ptr<pcre2_match_context, MatchContextDeleter> context(
      pcre2_match_context_create(nullptr));
  std::unique_ptr<pcre2_jit_stack, JitStackDeleter> jit_stack;
  if (data == nullptr || context == nullptr) {
    return absl::ResourceExhaustedError("out of memory allocating PCRE2 match state");
  }
  if (code_->jit) {
    jit_stack.reset(pcre2_jit_stack_create(kJitStackStart, kJitStackMax, nullptr));
    if (jit_stack == nullptr) return absl::ResourceExhaustedError("out of memory for PCRE2 JIT");
    pcre2_jit_stack_assign(context.get(), nullptr, jit_stack.get());
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    // The caller validated UTF-8 once for the whole input; PCRE2 need not re-check each call.
    const int rc = pcre2_match(code_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                               data.get(), context.get());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::InternalError(
          absl::StrCat("pre-tokenizer regex failed at byte ", start, ": ", Pcre2ErrorMessage(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end > begin) {
      matches->push_back({begin, end});
      start = end;
    } else {
      // An empty match: step over one character, as Oniguruma's find_iter does.
      const size_t n = ValidSequenceLength(text, begin);
      start = begin + (n == 0 ? 1 : n);
    }
  }
  return absl::OkStatus();
}

}  // namespace gka::text::internal
