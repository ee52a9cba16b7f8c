#include "tests/tsan/next_symbol.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

namespace gka::tsan {

void* NextSymbol(const char* name) {
  void* fn = dlsym(RTLD_NEXT, name);
  if (fn == nullptr) {
    std::fprintf(stderr, "gka tsan annotations: %s not found after this library: %s\n", name,
                 dlerror());
    std::abort();
  }
  return fn;
}

}  // namespace gka::tsan
