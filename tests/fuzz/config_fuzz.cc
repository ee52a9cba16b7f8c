// libFuzzer target: config.json and generation_config.json parsing on arbitrary text.
#include <string>

#include "common/model/config.h"
#include "common/model/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = gka::model::ModelConfig::FromJsonString(text);
  if (config.ok()) {
    // A config that parses must describe a model whose expected tensors can be listed.
    (void)gka::model::ExpectedWeightShapes(*config);
    (void)config->LayoutString();
  }
  (void)gka::model::GenerationDefaults::FromJsonString(text);
  return 0;
}
