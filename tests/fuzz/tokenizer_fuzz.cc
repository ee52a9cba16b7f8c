// libFuzzer target: the real Qwen3 tokenizer on arbitrary bytes — encode (invalid UTF-8 must be
// a Status), decode of the ids, and the streaming detokenizer agreeing with Decode.
#include <cstdlib>
#include <memory>
#include <string>

#include "common/text/incremental_detokenizer.h"
#include "common/text/tokenizer.h"

namespace {
std::unique_ptr<gka::text::Tokenizer>& Tok() {
  static std::unique_ptr<gka::text::Tokenizer> tok;
  return tok;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto tok = gka::text::Tokenizer::FromFile(GKA_QWEN3_TOKENIZER_DIR);
  if (!tok.ok()) std::abort();  // run `make deps` first
  Tok() = std::move(*tok);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto ids = Tok()->Encode(text);
  if (!ids.ok()) return 0;
  auto decoded = Tok()->Decode(*ids);
  if (!decoded.ok()) std::abort();  // ids we produced must decode
  gka::text::IncrementalDetokenizer detok(*Tok());
  std::string streamed;
  for (int32_t id : *ids) {
    auto piece = detok.Add(id);
    if (!piece.ok()) std::abort();
    streamed += *piece;
  }
  streamed += detok.Finish();
  if (streamed != *decoded) std::abort();  // the streaming contract
  return 0;
}
