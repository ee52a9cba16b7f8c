#include "decode_worker/common/rank_group.h"

#include "absl/strings/str_cat.h"
#include "common/base/check.h"
#include "common/base/status.h"

namespace gka::worker_common {

CommunicatorFactory InProcessCommunicators() {
  return [](int tp_size) -> absl::StatusOr<std::vector<std::unique_ptr<parallel::Communicator>>> {
    if (tp_size < 1) return absl::InvalidArgumentError("--tp must be >= 1");
    return parallel::CreateInProcessGroup(tp_size);
  };
}

absl::StatusOr<std::unique_ptr<RankGroup>> RankGroup::Create(
    const RankGroupOptions& options, const engine::EngineOptions& engine_options,
    const model::ModelConfig& config, const model::Checkpoint& checkpoint) {
  if (options.tp_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--tp must be >= 1, not ", options.tp_size));
  }
  std::unique_ptr<RankGroup> group(new RankGroup);
  const int n = options.tp_size;
  if (n > 1) {
    const CommunicatorFactory& make =
        options.communicators ? options.communicators : InProcessCommunicators();
    GKA_ASSIGN_OR_RETURN(group->communicators_, make(n));
    if (static_cast<int>(group->communicators_.size()) != n) {
      return absl::InternalError(absl::StrCat("the communicator factory made ",
                                              group->communicators_.size(), " communicators for ",
                                              n, " ranks"));
    }
  }
  group->owned_.resize(n);
  group->engines_.assign(n, nullptr);
  group->StartThreads(n);
  // Each rank loads its own slices on its own thread (no rank reads the whole checkpoint).
  absl::Status s = group->RunRaw([&](int rank) -> absl::Status {
    engine::EngineOptions o = engine_options;
    if (n > 1) {
      o.communicator = group->communicators_[rank].get();
      o.device_ordinal = engine_options.device_ordinal + rank;
    }
    GKA_ASSIGN_OR_RETURN(group->owned_[rank], engine::Engine::Create(o, config, checkpoint));
    group->engines_[rank] = group->owned_[rank].get();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;  // the destructor frees what was made, each on its thread
  return group;
}

std::unique_ptr<RankGroup> RankGroup::Borrow(engine::Engine* engine) {
  std::unique_ptr<RankGroup> group(new RankGroup);
  group->engines_ = {engine};
  return group;
}

RankGroup::~RankGroup() {
  if (threads_.empty()) return;
  // Engines go on their own threads (device memory is freed where it was made), before the
  // communicators they use.
  (void)RunRaw([this](int rank) {
    owned_[rank].reset();
    return absl::OkStatus();
  });
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void RankGroup::StartThreads(int n) {
  if (n == 1) return;
  results_.assign(n, absl::OkStatus());
  for (int r = 0; r < n; ++r) threads_.emplace_back([this, r] { RankLoop(r); });
}

void RankGroup::RankLoop(int rank) {
  uint64_t seen = 0;
  while (true) {
    const absl::FunctionRef<absl::Status(int)>* task = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || epoch_ != seen; };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      seen = epoch_;
      task = task_;
    }
    absl::Status s = (*task)(rank);
    absl::MutexLock lock(&mu_);
    results_[rank] = std::move(s);
    --pending_;
  }
}

absl::Status RankGroup::RunRaw(absl::FunctionRef<absl::Status(int)> fn) {
  if (threads_.empty()) return fn(0);
  absl::MutexLock lock(&mu_);
  task_ = &fn;
  pending_ = static_cast<int>(threads_.size());
  for (absl::Status& s : results_) s = absl::OkStatus();
  ++epoch_;
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_ == 0; };
  mu_.Await(absl::Condition(&done));
  task_ = nullptr;
  for (size_t r = 0; r < results_.size(); ++r) {
    if (!results_[r].ok()) return base::Annotate(results_[r], absl::StrCat("TP rank ", r));
  }
  return absl::OkStatus();
}

absl::Status RankGroup::RunOnAll(absl::FunctionRef<absl::Status(int, engine::Engine&)> fn) {
  return RunRaw([&](int rank) { return fn(rank, *engines_[rank]); });
}

}  // namespace gka::worker_common
