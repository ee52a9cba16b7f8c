// TaskQueue: closures handed to one owner thread, the way gRPC handlers, transfer callbacks
// and helper threads talk to a worker's engine thread (architecture.md: one engine thread
// owns the model; others only enqueue).
//
// Owns the queued closures.
//
//   TaskQueue q;
//   q.Post([&] { core.Reserve(...); });                 // any thread
//   for (auto& task : q.Wait(absl::Now() + absl::Milliseconds(5))) task();  // owner thread
//
// Thread-safety: Post, Close and closed are thread-safe; Wait is for the owner thread.
#pragma once

#include <deque>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gka::worker_common {

class TaskQueue {
 public:
  using Task = absl::AnyInvocable<void()>;

  // False, and the task is dropped unrun, once Close() was called: the caller answers for it
  // (e.g. UNAVAILABLE).
  bool Post(Task task);

  // The tasks queued so far, waiting until there is one, `deadline` passes or the queue is
  // closed. Tasks posted before Close() are still returned.
  std::vector<Task> Wait(absl::Time deadline);

  // One task, for pools of consumer threads: waits like Wait; nullopt on timeout, or once the
  // queue is closed and empty.
  std::optional<Task> WaitOne(absl::Time deadline);

  void Close();
  bool closed() const;

 private:
  mutable absl::Mutex mu_;
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace gka::worker_common
