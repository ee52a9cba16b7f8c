// ThreadSanitizer annotations for Debian's (uninstrumented) Abseil synchronization library.
//
// Why: libabsl_synchronization.so from Debian is not built with -fsanitize=thread, so the
// ABSL_TSAN_MUTEX_* annotations Abseil compiles in under TSan are missing and TSan sees no
// happens-before edge through absl::Mutex: every absl-guarded structure (ours and gRPC's)
// would report false data races. This file defines the out-of-line entry points of
// absl::Mutex, absl::CondVar, absl::Notification and absl::BlockingCounter; linked into a
// TSan executable (tests/tsan/CMakeLists.txt), its definitions win symbol lookup over the
// shared library's for every caller (our code, gRPC, Abseil itself: its internal calls go
// through the PLT). Each wrapper adds the same __tsan_mutex_* calls Abseil's own TSan build
// makes (absl/synchronization/mutex.cc, ABSL_TSAN_MUTEX_*) and forwards to the real function
// found with dlsym(RTLD_NEXT). Between a pre_* and its post_* annotation TSan ignores memory
// accesses, exactly as in Abseil's TSan build, so the uninstrumented internals (and
// absl::Condition callbacks evaluated inside them) are not seen.
//
// Must not depend on anything but Abseil's headers, libdl and the TSan runtime. Linked only
// into builds with -fsanitize=thread. tests/tsan/tsan_probe_test.sh proves both directions: a
// counter guarded by absl::Mutex reports no race, an unguarded one still does.
//
// Thread-safety: every wrapper is as thread-safe as the function it wraps; the real function
// pointers are resolved once (function-local statics).
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "tests/tsan/next_symbol.h"

namespace gka::tsan {
namespace {

#define GKA_TSAN_STRINGIFY2(x) #x
#define GKA_TSAN_STRINGIFY(x) GKA_TSAN_STRINGIFY2(x)

// The real function named by `suffix`, the Itanium mangling after the "absl::<inline ns>::"
// prefix (e.g. "5Mutex4LockEv"); `is_const` marks a const member function (_ZNK).
template <typename Fn>
Fn Real(const char* suffix, bool is_const = false) {
#if ABSL_OPTION_USE_INLINE_NAMESPACE
  const char* ns = GKA_TSAN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  std::string name = std::string(is_const ? "_ZNK4absl" : "_ZN4absl") +
                     std::to_string(std::strlen(ns)) + ns + suffix;
#else
#error "tests/tsan/absl_annotations.cc assumes Abseil's inline namespace (Debian's build)"
#endif
  return Next<Fn>(name.c_str());
}

// absl::Mutex is one word (mu_); bit kMuWriter (0x8) says a writer holds it. Read to tell
// whether Await/CondVar::Wait release an exclusive or a shared hold, as Abseil does.
static_assert(sizeof(absl::Mutex) == sizeof(intptr_t));
constexpr intptr_t kMuWriter = 0x0008;

unsigned HeldFlags(absl::Mutex* mu) {
  intptr_t v = reinterpret_cast<std::atomic<intptr_t>*>(mu)->load(std::memory_order_relaxed);
  return (v & kMuWriter) != 0 ? 0u : __tsan_mutex_read_lock;
}

// Notification is {Mutex mutex_; std::atomic<bool> notified_yet_;}. HasBeenNotified() is
// inline (instrumented) and reads notified_yet_ with acquire: releasing that address in
// Notify() lets TSan pair the two, as an instrumented store would.
static_assert(sizeof(absl::Notification) == 2 * sizeof(intptr_t));
const void* NotifiedYetAddress(const absl::Notification* n) {
  return reinterpret_cast<const char*>(n) + sizeof(absl::Mutex);
}

// Abseil's public entry points call each other through the PLT (WaitWithTimeout calls
// WaitWithDeadline, Notify calls Mutex::Lock, ...), so they come back into this file: only
// the outermost call on a thread annotates, as in Abseil's TSan build, where the inner
// calls happen inside the outer one's ignore region.
thread_local bool inside_shim = false;

class ShimScope {
 public:
  ShimScope() { inside_shim = true; }
  ~ShimScope() { inside_shim = false; }
  ShimScope(const ShimScope&) = delete;
  ShimScope& operator=(const ShimScope&) = delete;
};

// Runs `call` (the real function) between `before()` and `after(result)` unless this
// thread is already inside a wrapper. `call` returns a value (0 for void functions).
template <typename Call, typename Before, typename After>
auto Annotated(Call call, Before before, After after) {
  if (inside_shim) return call();
  ShimScope scope;
  before();
  auto result = call();
  after(result);
  return result;
}

// A call that acquires `mu` (shared if `flags` says read) and holds it on return; the
// *When* calls hold it whatever the condition's value.
template <typename Call>
auto Acquire(absl::Mutex* mu, unsigned flags, Call call) {
  return Annotated(
      call, [&] { __tsan_mutex_pre_lock(mu, flags); },
      [&](auto) { __tsan_mutex_post_lock(mu, flags, 0); });
}

template <typename Call>
auto TryAcquire(absl::Mutex* mu, unsigned flags, Call call) {
  flags |= __tsan_mutex_try_lock;
  return Annotated(
      call, [&] { __tsan_mutex_pre_lock(mu, flags); },
      [&](bool ok) {
        __tsan_mutex_post_lock(mu, flags | (ok ? 0 : __tsan_mutex_try_lock_failed), 0);
      });
}

template <typename Call>
auto Release(absl::Mutex* mu, unsigned flags, Call call) {
  return Annotated(
      call, [&] { __tsan_mutex_pre_unlock(mu, flags); },
      [&](auto) { __tsan_mutex_post_unlock(mu, flags); });
}

// A blocking call that releases `mu` (held as the mutex word says) and holds it again on
// return: Await and CondVar::Wait. The accesses in between are ignored (as in Abseil).
template <typename Call>
auto ReleaseAndReacquire(absl::Mutex* mu, Call call) {
  unsigned flags = 0;
  return Annotated(
      call,
      [&] {
        flags = HeldFlags(mu);
        __tsan_mutex_pre_unlock(mu, flags);
        __tsan_mutex_post_unlock(mu, flags);
        __tsan_mutex_pre_lock(mu, flags);
      },
      [&](auto) { __tsan_mutex_post_lock(mu, flags, 0); });
}

// Release before / acquire after, on `addr`: the hand-offs Notification and BlockingCounter
// make through an atomic flag or counter that TSan cannot see in the uninstrumented library.
template <typename Call>
auto ReleaseBefore(const void* addr, Call call) {
  return Annotated(
      call, [&] { __tsan_release(const_cast<void*>(addr)); }, [](auto) {});
}

template <typename Call>
auto AcquireIf(const void* addr, Call call) {
  return Annotated(
      call, [] {},
      [&](auto done) {
        if (done) __tsan_acquire(const_cast<void*>(addr));
      });
}

}  // namespace
}  // namespace gka::tsan

namespace absl {
namespace shim = ::gka::tsan;

// ---- Mutex ----

void Mutex::Lock() {
  static auto real = shim::Real<void (*)(Mutex*)>("5Mutex4LockEv");
  shim::Acquire(this, 0, [&] { return (real(this), 0); });
}

void Mutex::ReaderLock() {
  static auto real = shim::Real<void (*)(Mutex*)>("5Mutex10ReaderLockEv");
  shim::Acquire(this, __tsan_mutex_read_lock, [&] { return (real(this), 0); });
}

void Mutex::Unlock() {
  static auto real = shim::Real<void (*)(Mutex*)>("5Mutex6UnlockEv");
  shim::Release(this, 0, [&] { return (real(this), 0); });
}

void Mutex::ReaderUnlock() {
  static auto real = shim::Real<void (*)(Mutex*)>("5Mutex12ReaderUnlockEv");
  shim::Release(this, __tsan_mutex_read_lock, [&] { return (real(this), 0); });
}

bool Mutex::TryLock() {
  static auto real = shim::Real<bool (*)(Mutex*)>("5Mutex7TryLockEv");
  return shim::TryAcquire(this, 0, [&] { return real(this); });
}

bool Mutex::ReaderTryLock() {
  static auto real = shim::Real<bool (*)(Mutex*)>("5Mutex13ReaderTryLockEv");
  return shim::TryAcquire(this, __tsan_mutex_read_lock, [&] { return real(this); });
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real =
      shim::Real<void (*)(Mutex*, const Condition&)>("5Mutex8LockWhenERKNS0_9ConditionE");
  shim::Acquire(this, 0, [&] { return (real(this, cond), 0); });
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static auto real =
      shim::Real<void (*)(Mutex*, const Condition&)>("5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  shim::Acquire(this, __tsan_mutex_read_lock, [&] { return (real(this, cond), 0); });
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = shim::Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return shim::Acquire(this, 0, [&] { return real(this, cond, timeout); });
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = shim::Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return shim::Acquire(this, __tsan_mutex_read_lock, [&] { return real(this, cond, timeout); });
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static auto real = shim::Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return shim::Acquire(this, 0, [&] { return real(this, cond, deadline); });
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static auto real = shim::Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return shim::Acquire(this, __tsan_mutex_read_lock, [&] { return real(this, cond, deadline); });
}

void Mutex::Await(const Condition& cond) {
  static auto real =
      shim::Real<void (*)(Mutex*, const Condition&)>("5Mutex5AwaitERKNS0_9ConditionE");
  shim::ReleaseAndReacquire(this, [&] { return (real(this, cond), 0); });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static auto real = shim::Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return shim::ReleaseAndReacquire(this, [&] { return real(this, cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static auto real = shim::Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return shim::ReleaseAndReacquire(this, [&] { return real(this, cond, deadline); });
}

// TSan forgets the mutex's state, so memory reused for another Mutex starts clean.
Mutex::~Mutex() {
  static auto real = shim::Real<void (*)(Mutex*)>("5MutexD1Ev");
  real(this);
  __tsan_mutex_destroy(this, __tsan_mutex_not_static);
}

// ---- CondVar: Wait releases the mutex and holds it again on return ----

void CondVar::Wait(Mutex* mu) {
  static auto real = shim::Real<void (*)(CondVar*, Mutex*)>("7CondVar4WaitEPNS0_5MutexE");
  shim::ReleaseAndReacquire(mu, [&] { return (real(this, mu), 0); });
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static auto real = shim::Real<bool (*)(CondVar*, Mutex*, Duration)>(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return shim::ReleaseAndReacquire(mu, [&] { return real(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static auto real = shim::Real<bool (*)(CondVar*, Mutex*, Time)>(
      "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return shim::ReleaseAndReacquire(mu, [&] { return real(this, mu, deadline); });
}

// ---- Notification: the flag, not only mutex_, carries the hand-off ----

void Notification::Notify() {
  static auto real = shim::Real<void (*)(Notification*)>("12Notification6NotifyEv");
  shim::ReleaseBefore(shim::NotifiedYetAddress(this), [&] { return (real(this), 0); });
}

void Notification::WaitForNotification() const {
  static auto real =
      shim::Real<void (*)(const Notification*)>("12Notification19WaitForNotificationEv", true);
  shim::AcquireIf(shim::NotifiedYetAddress(this), [&] { return (real(this), true); });
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  static auto real = shim::Real<bool (*)(const Notification*, Duration)>(
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  return shim::AcquireIf(shim::NotifiedYetAddress(this), [&] { return real(this, timeout); });
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  static auto real = shim::Real<bool (*)(const Notification*, Time)>(
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE", true);
  return shim::AcquireIf(shim::NotifiedYetAddress(this), [&] { return real(this, deadline); });
}

// ---- BlockingCounter: all but the last DecrementCount only touch an atomic ----

bool BlockingCounter::DecrementCount() {
  static auto real = shim::Real<bool (*)(BlockingCounter*)>("15BlockingCounter14DecrementCountEv");
  return shim::ReleaseBefore(this, [&] { return real(this); });
}

void BlockingCounter::Wait() {
  static auto real = shim::Real<void (*)(BlockingCounter*)>("15BlockingCounter4WaitEv");
  shim::AcquireIf(this, [&] { return (real(this), true); });
}

}  // namespace absl
