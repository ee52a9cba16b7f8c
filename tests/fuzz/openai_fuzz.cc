// libFuzzer target: the OpenAI-compatible gateway's body parser (router/openai_protocol) on
// arbitrary bytes. The first byte picks the endpoint; the rest is the HTTP body. Any input
// must give a ParsedRequest or an INVALID_ARGUMENT Status (never a crash, never another
// code), and an accepted body must expand into requests the router can number.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "router/openai_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto endpoint = (data[0] & 1) != 0 ? gka::router::openai::Endpoint::kChatCompletions
                                           : gka::router::openai::Endpoint::kCompletions;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  auto parsed = gka::router::openai::ParseRequest(endpoint, body);
  if (!parsed.ok()) {
    if (parsed.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  // Expanding choices must stay within what was accepted (n and prompts are bounded).
  if (parsed->num_choices() <= 0 || parsed->num_choices() > 1 << 16) std::abort();
  for (int c = 0; c < parsed->num_choices() && c < 4; ++c) {
    (void)gka::router::openai::RequestForChoice(*parsed, "chatcmpl-fuzz", c);
  }
  return 0;
}
