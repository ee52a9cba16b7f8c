// RankGroup: a worker's tensor-parallel ranks (model-spec §6) — one Engine per rank over its
// own weight slices and state, each with its own Communicator, all stepping the same batch in
// lockstep. Architecture.md: "a TP=N worker is one process with one thread per GPU rank and
// one communicator per rank".
//
// Owns the communicators, the engines and the rank threads. Must not depend on gRPC or the
// transfer layer. The communicators are injected (RankGroupOptions::communicators): the CPU
// in-process group by default, NCCL communicators on GPUs, so the runner is the same for both.
//
//   GKA_ASSIGN_OR_RETURN(auto ranks, RankGroup::Create({.tp_size = 2}, engine_options, config,
//                                                      checkpoint));
//   // Every rank does the same thing to its own engine (collectives inside Forward meet):
//   GKA_RETURN_IF_ERROR(ranks->RunOnAll([&](int rank, engine::Engine& e) {
//     return e.AddSequence(id);
//   }));
//   ranks->lead().free_pages();   // rank 0: scheduling facts and sampling
//
// On GPUs the communicators come from kernels/nccl (rank r on GPU device_ordinal + r):
//   RankGroupOptions o{.tp_size = 4, .communicators = [](int n) {
//     std::vector<int> gpus(n); std::iota(gpus.begin(), gpus.end(), 0);
//     return nccl::CreateNcclGroup(gpus); }};
//
// Rank 0 leads: the scheduler reads its pools (every rank's pools move in lockstep, so page
// and slot ids are the same on all ranks) and it samples. The engine's lm_head is
// vocab-parallel with the usual gather (model-spec §6): every rank ends a Forward with the
// same whole logits, so sampling on rank 0 needs no extra collective.
//
// Threads: with tp_size 1 there is no rank thread and RunOnAll runs on the caller (a TP=1
// worker behaves exactly as before). With tp_size > 1 every rank, rank 0 included, has its own
// thread, created with the group, on which its engine is created, run and destroyed (a GPU
// rank keeps its device current on its thread); RunOnAll hands the same function to all of
// them and waits.
//
// Thread-safety: RunOnAll is called by one thread at a time (the worker's engine thread). The
// const facts of an engine (dims, options, free counts, DescribeSequence's addresses) may be
// read by that thread between RunOnAll calls.
#pragma once

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/engine/engine.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "common/parallel/communicator.h"

namespace gka::worker_common {

// Makes the `tp_size` communicators of one group, rank order (collective construction, e.g.
// NCCL's, happens inside).
using CommunicatorFactory =
    std::function<absl::StatusOr<std::vector<std::unique_ptr<parallel::Communicator>>>(
        int tp_size)>;

// parallel::CreateInProcessGroup: host memory, for the CPU backend.
CommunicatorFactory InProcessCommunicators();

struct RankGroupOptions {
  int tp_size = 1;
  // Empty: InProcessCommunicators().
  CommunicatorFactory communicators;
};

class RankGroup {
 public:
  // Creates the ranks' engines in parallel, each from its slice of `checkpoint` with
  // `engine_options` (communicator set per rank; device_ordinal += rank). INVALID_ARGUMENT
  // when tp_size does not divide the model's heads or MLP width (the engine's message).
  static absl::StatusOr<std::unique_ptr<RankGroup>> Create(
      const RankGroupOptions& options, const engine::EngineOptions& engine_options,
      const model::ModelConfig& config, const model::Checkpoint& checkpoint);
  // Wraps one engine the caller owns (TP = 1, no threads): tests that build their own engine.
  static std::unique_ptr<RankGroup> Borrow(engine::Engine* engine);
  ~RankGroup();
  RankGroup(const RankGroup&) = delete;
  RankGroup& operator=(const RankGroup&) = delete;

  int size() const { return static_cast<int>(engines_.size()); }
  engine::Engine& lead() { return *engines_[0]; }
  const engine::Engine& lead() const { return *engines_[0]; }
  engine::Engine& rank(int r) { return *engines_[r]; }
  const engine::Engine& rank(int r) const { return *engines_[r]; }

  // Runs fn(rank, that rank's engine) on every rank at once and waits for all. Returns OK, or
  // the error of the lowest failing rank prefixed with its rank (with tp_size > 1).
  absl::Status RunOnAll(absl::FunctionRef<absl::Status(int, engine::Engine&)> fn);

 private:
  RankGroup() = default;
  void StartThreads(int n);
  // Runs fn(rank) on every rank thread (or inline without threads).
  absl::Status RunRaw(absl::FunctionRef<absl::Status(int)> fn);
  void RankLoop(int rank);

  std::vector<std::unique_ptr<parallel::Communicator>> communicators_;  // outlive the engines
  std::vector<std::unique_ptr<engine::Engine>> owned_;
  std::vector<engine::Engine*> engines_;
  std::vector<std::thread> threads_;

  absl::Mutex mu_;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;  // one per RunRaw
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  const absl::FunctionRef<absl::Status(int)>* task_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<absl::Status> results_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gka::worker_common
