// metrics_test's stand-in for libcublasLt: a shared library linked at start-up, so glibc
// reserves its TLS statically in every thread's stack (256 KiB here, ~94 KiB in cuBLAS).
#include <cstddef>

// Exported, so the compiler keeps all of it.
extern "C" {
__attribute__((tls_model("initial-exec"))) thread_local char gka_test_big_tls[256 << 10];
}

extern "C" size_t GkaTestBigTlsBytes() {
  volatile char* tls = gka_test_big_tls;
  tls[sizeof(gka_test_big_tls) - 1] = 1;
  return sizeof(gka_test_big_tls);
}
