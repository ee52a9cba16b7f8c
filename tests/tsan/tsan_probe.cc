// Probes for the TSan stage (tests/tsan/tsan_probe_test.sh runs each mode as its own process):
// the synchronised modes hand data between two threads only through absl::Mutex,
// absl::CondVar or absl::Notification and must report nothing; `racy` increments a plain int
// from two threads and must be reported, so a stage that cannot see a race fails.
//   tsan_probe MODE      MODE: mutex | condvar | notification | racy
#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace {

constexpr int kIterations = 20000;

// Two threads, one counter, every access under one absl::Mutex: no race.
int MutexCounter() {
  absl::Mutex mu;
  int counter = 0;
  auto work = [&] {
    for (int i = 0; i < kIterations; ++i) {
      absl::MutexLock lock(&mu);
      ++counter;
    }
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  return counter == 2 * kIterations ? 0 : 1;
}

// A value published under the mutex and awaited with CondVar::Wait: no race.
int CondVarHandoff() {
  absl::Mutex mu;
  absl::CondVar cv;
  bool ready = false;
  int payload = 0;  // written before `ready`, read after: ordered by mu
  std::thread producer([&] {
    payload = 42;
    absl::MutexLock lock(&mu);
    ready = true;
    cv.Signal();
  });
  int seen;
  {
    absl::MutexLock lock(&mu);
    while (!ready) cv.Wait(&mu);
  }
  seen = payload;
  producer.join();
  return seen == 42 ? 0 : 1;
}

// A plain value written before Notify(), read after WaitForNotification() and after the
// inline HasBeenNotified() fast path: no race either way.
int NotificationHandoff() {
  int payload_a = 0, payload_b = 0;
  absl::Notification a_done, b_done;
  std::thread producer([&] {
    payload_a = 1;
    a_done.Notify();
    payload_b = 2;
    b_done.Notify();
  });
  a_done.WaitForNotification();
  int seen = payload_a;
  while (!b_done.HasBeenNotified()) std::this_thread::yield();
  seen += payload_b;
  producer.join();
  return seen == 3 ? 0 : 1;
}

// A real data race: TSan must report it (and exit non-zero).
int racy_counter = 0;
__attribute__((noinline)) void RacyIncrement() {
  for (int i = 0; i < kIterations; ++i) ++racy_counter;
}
int Racy() {
  std::thread a(RacyIncrement), b(RacyIncrement);
  a.join();
  b.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  if (std::strcmp(mode, "mutex") == 0) return MutexCounter();
  if (std::strcmp(mode, "condvar") == 0) return CondVarHandoff();
  if (std::strcmp(mode, "notification") == 0) return NotificationHandoff();
  if (std::strcmp(mode, "racy") == 0) return Racy();
  std::fprintf(stderr, "usage: tsan_probe mutex|condvar|notification|racy\n");
  return 2;
}
