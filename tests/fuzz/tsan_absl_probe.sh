#!/usr/bin/env bash
# Why CI has no ThreadSanitizer stage: Debian's Abseil (and gRPC, which locks with it) is not
# built with -fsanitize=thread, so TSan cannot see absl::Mutex's happens-before edges and
# reports races on data every thread accesses under the same absl::Mutex. This probe shows it:
# two threads increment a counter under one absl::Mutex; TSan reports a data race.
#   tests/fuzz/tsan_absl_probe.sh    (prints TSan's verdict; exit 0 either way)
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/t.cc" <<'CC'
#include <thread>
#include "absl/synchronization/mutex.h"
absl::Mutex mu;
int counter = 0;
int main() {
  auto work = [] { for (int i = 0; i < 100000; ++i) { absl::MutexLock lock(&mu); ++counter; } };
  std::thread a(work), b(work);
  a.join();
  b.join();
  return counter == 200000 ? 0 : 1;
}
CC
clang++ -std=c++20 -O1 -g -fsanitize=thread "$dir/t.cc" -o "$dir/t" \
  $(pkg-config --libs absl_synchronization)
if "$dir/t" 2>"$dir/report"; then :; fi
if grep -q "WARNING: ThreadSanitizer: data race" "$dir/report"; then
  echo "TSan reports a race on a counter guarded by absl::Mutex: Debian's Abseil is uninstrumented"
else
  echo "TSan sees absl::Mutex: a TSan stage would be meaningful with this Abseil"
fi
