// libFuzzer target: the safetensors header parser and tensor lookup on arbitrary bytes.
// Every input must yield a Status or a valid file; never a crash or an out-of-bounds read.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/gka_fuzz_" + std::to_string(getpid()) + ".safetensors";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto file = gka::model::SafetensorsFile::Open(path);
  if (file.ok()) {
    for (const std::string& name : (*file)->names()) {
      auto t = (*file)->Get(name);
      if (t.ok() && t->nbytes > 0) {
        volatile uint8_t sink = static_cast<const uint8_t*>(t->data)[t->nbytes - 1];
        (void)sink;
      }
    }
  }
  return 0;
}
