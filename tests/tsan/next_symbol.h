// NextSymbol: the definition of `name` that a wrapper in this library hides (dlsym
// RTLD_NEXT), for the TSan annotation wrappers of absl_annotations.cc and
// grpc_annotations.cc. Test-only; linked into -fsanitize=thread builds.
#ifndef GKA_TESTS_TSAN_NEXT_SYMBOL_H_
#define GKA_TESTS_TSAN_NEXT_SYMBOL_H_

namespace gka::tsan {

// The next definition of the symbol `name` (mangled for C++) after this library in lookup
// order. Aborts when there is none: a wrapper that cannot forward must stop the test at once
// (it has no Status to return from inside absl::Mutex::Lock or grpc_call_start_batch).
void* NextSymbol(const char* name);

template <typename Fn>
Fn Next(const char* name) {
  return reinterpret_cast<Fn>(NextSymbol(name));
}

}  // namespace gka::tsan

#endif  // GKA_TESTS_TSAN_NEXT_SYMBOL_H_
