#include "gka/sdk/types.h"

#include <utility>

#include "gka/sdk/client.h"

#ifndef GKA_SDK_VERSION
#error "GKA_SDK_VERSION must be defined by the build (sdk/cpp/CMakeLists.txt)"
#endif

namespace gka::sdk {

absl::string_view Version() { return GKA_SDK_VERSION; }

Request Request::Text(std::string text, SamplingParams sampling) {
  Request request;
  request.input = std::move(text);
  request.sampling = std::move(sampling);
  return request;
}

Request Request::Tokens(TokenIds ids, SamplingParams sampling) {
  Request request;
  request.input = std::move(ids);
  request.sampling = std::move(sampling);
  return request;
}

Request ChatRequest(std::vector<ChatMessage> messages, SamplingParams sampling) {
  Request request;
  request.input = Chat{.messages = std::move(messages)};
  request.sampling = std::move(sampling);
  return request;
}

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
    case FinishReason::kUnspecified:
      break;
  }
  return "unspecified";
}

}  // namespace gka::sdk
