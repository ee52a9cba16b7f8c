// Invariant checks for our own bugs (never for bad input: that is a Status).
//
//   GKA_CHECK(page < num_pages) << "page " << page;
//   GKA_CHECK_OK(pool.Init());
//
// A failed check prints file:line, the condition and the streamed message, then aborts.
#pragma once

#include <cstdlib>
#include <iostream>
#include <sstream>

#include "absl/status/status.h"

namespace gka::base::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* cond) {
    stream_ << file << ":" << line << ": CHECK failed: " << cond << " ";
  }
  [[noreturn]] ~CheckFailure() {
    std::cerr << stream_.str() << std::endl;
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets `GKA_CHECK(x) << msg` compile to nothing on success.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace gka::base::internal

#define GKA_CHECK(cond)                       \
  (cond) ? (void)0                            \
         : ::gka::base::internal::Voidify() & \
               ::gka::base::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define GKA_CHECK_OK(expr)                                             \
  do {                                                                 \
    ::absl::Status gka_check_status_ = (expr);                         \
    GKA_CHECK(gka_check_status_.ok()) << gka_check_status_.ToString(); \
  } while (false)
