#include "decode_worker/common/task_queue.h"

namespace gka::worker_common {

bool TaskQueue::Post(Task task) {
  absl::MutexLock lock(&mu_);
  if (closed_) return false;
  tasks_.push_back(std::move(task));
  return true;
}

std::vector<TaskQueue::Task> TaskQueue::Wait(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !tasks_.empty() || closed_; };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  std::vector<Task> out;
  out.reserve(tasks_.size());
  while (!tasks_.empty()) {
    out.push_back(std::move(tasks_.front()));
    tasks_.pop_front();
  }
  return out;
}

std::optional<TaskQueue::Task> TaskQueue::WaitOne(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !tasks_.empty() || closed_; };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (tasks_.empty()) return std::nullopt;
  Task task = std::move(tasks_.front());
  tasks_.pop_front();
  return task;
}

void TaskQueue::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

bool TaskQueue::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

}  // namespace gka::worker_common
