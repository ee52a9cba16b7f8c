// libFuzzer target: the public API's request validation (router/request_validation) on
// arbitrary protobuf bytes. Bytes that parse as a gka.serving.v1.GenerateRequest go through
// ResolveRequest with the built-in tiers, the real Qwen3 tokenizer and chat template, a
// vocabulary and a context limit; the result must be a ResolvedRequest within those limits or
// an INVALID_ARGUMENT / FAILED_PRECONDITION / NOT_FOUND Status, never a crash.
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "common/text/chat_template.h"
#include "common/text/tokenizer.h"
#include "gka/serving/v1/serving.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "router/request_validation.h"
#include "router/tiers.h"

namespace {

struct World {
  gka::router::TierTable tiers = gka::router::TierTable::BuiltIn();
  std::unique_ptr<gka::text::Tokenizer> tokenizer;
  gka::text::ChatTemplate chat_template = gka::text::ChatTemplate::Qwen3();
  gka::router::RequestContext context;
};

World& TheWorld() {
  static World* world = new World();
  return *world;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in string fields is a parse failure, logged by protobuf on every input.
  google::protobuf::SetLogHandler(nullptr);
  World& w = TheWorld();
  auto tok = gka::text::Tokenizer::FromFile(GKA_QWEN3_TOKENIZER_DIR);
  if (!tok.ok()) std::abort();  // run `make deps` first
  w.tokenizer = std::move(*tok);
  w.context.tiers = &w.tiers;
  w.context.served_model = "gka-tiny";
  w.context.tokenizer = w.tokenizer.get();
  w.context.chat_template = &w.chat_template;
  w.context.vocab_size = 151936;
  w.context.max_context_tokens = 4096;
  w.context.eos_token_ids = {151645};
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gka::serving::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const gka::router::RequestContext& context = TheWorld().context;
  auto resolved = gka::router::ResolveRequest(request, context);
  if (!resolved.ok()) {
    const absl::StatusCode code = resolved.status().code();
    if (code != absl::StatusCode::kInvalidArgument &&
        code != absl::StatusCode::kFailedPrecondition && code != absl::StatusCode::kNotFound) {
      std::abort();
    }
    return 0;
  }
  // What validation accepted respects the limits it was given.
  if (resolved->tier == nullptr || resolved->max_tokens < 1) std::abort();
  if (resolved->prompt.token_ids.empty()) std::abort();
  if (static_cast<int64_t>(resolved->prompt.token_ids.size()) + resolved->max_tokens >
      context.max_context_tokens) {
    std::abort();
  }
  for (int32_t id : resolved->prompt.token_ids) {
    if (id < 0 || id >= context.vocab_size) std::abort();
  }
  return 0;
}
