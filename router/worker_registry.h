// The router's view of its workers: registration, heartbeats with load reports, health by
// heartbeat age, and placement (which decode worker has room, which prefill worker has the
// least queued work).
//
// Owns: one entry per registered worker (id, role, address, capacity, last load report,
// last heartbeat, draining flag) plus the router's own accounting of work it placed since
// the last report, so a burst of requests between two heartbeats spreads instead of piling
// onto the worker that looked emptiest. Passive: no threads, no gRPC transport (the
// WorkerRegistry gRPC service and the sweeper thread call into it); time is passed in, so
// tests drive it with a fake clock.
//
//   WorkerRegistry registry({.heartbeat_interval = absl::Seconds(1)});
//   GKA_ASSIGN_OR_RETURN(auto resp, registry.Register(register_request, absl::Now()));
//   registry.Heartbeat(heartbeat_request, absl::Now());
//   std::vector<std::string> lost = registry.Sweep(absl::Now());   // newly unhealthy ids
//   std::vector<WorkerInfo> decode = registry.RankDecode(prompt_tokens, {});
//   GKA_ASSIGN_OR_RETURN(WorkerInfo prefill, registry.PickPrefill(decode[0].compat_hash, {}));
//
// Health: a worker is healthy while its last heartbeat (or registration) is younger than
// missed_heartbeats * heartbeat_interval and it is not draining (Deregister or a heartbeat
// with draining=true). Only healthy workers are placed. An unhealthy worker that heartbeats
// again recovers; one silent for `forget_after` is removed (its next heartbeat is told to
// register again).
//
// Thread-safety: every method is thread-safe (one internal mutex); returned WorkerInfo are
// copies.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gka/worker/v1/worker.pb.h"

namespace gka::router {

struct RegistryOptions {
  // Told to workers at registration; they heartbeat at this period.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // A worker silent for this many intervals is unhealthy (worker.proto says 3).
  int missed_heartbeats = 3;
  // A worker silent this long is forgotten (absent from metrics; must register again).
  absl::Duration forget_after = absl::Minutes(2);
  // Tokens per KV page assumed when a worker reports none.
  uint32_t default_page_size = 16;
};

// A copy of one worker's registration and latest state.
struct WorkerInfo {
  std::string id;
  worker::v1::WorkerRole role = worker::v1::WORKER_ROLE_UNSPECIFIED;
  std::string grpc_address;
  std::string model;
  uint64_t compat_hash = 0;
  worker::v1::WorkerCapacity capacity;
  uint32_t vocab_size = 0;
  std::vector<int32_t> eos_token_ids;
  worker::v1::LoadReport load;
  bool healthy = false;
  bool draining = false;
};

struct WorkerCounts {
  int prefill_healthy = 0;
  int prefill_unhealthy = 0;
  int decode_healthy = 0;
  int decode_unhealthy = 0;
};

class WorkerRegistry {
 public:
  explicit WorkerRegistry(const RegistryOptions& options);

  // Assigns an id: the suggested one when free (or held by the same address, i.e. the same
  // worker registering again, or by a dead worker), else "<role>-<n>". INVALID_ARGUMENT
  // naming the field for a missing role or grpc_address.
  absl::StatusOr<worker::v1::RegisterResponse> Register(const worker::v1::RegisterRequest& request,
                                                        absl::Time now);

  // Records the load report. reregister=true for an unknown id.
  worker::v1::HeartbeatResponse Heartbeat(const worker::v1::HeartbeatRequest& request,
                                          absl::Time now);

  // Stops placing work on the worker (graceful drain); its heartbeats are still accepted.
  // NOT_FOUND for an unknown id.
  absl::Status Deregister(absl::string_view worker_id);

  // Marks workers silent for too long unhealthy and forgets long-dead ones. Returns the ids
  // that turned unhealthy in this sweep (their in-flight requests should be failed).
  std::vector<std::string> Sweep(absl::Time now);

  // Healthy decode workers not in `exclude`, best first: those whose free KV pages and
  // state slots (reported, minus what this router placed since the report) fit the prompt,
  // ordered by free pages, then the rest (reports may be stale; the worker is the judge).
  std::vector<WorkerInfo> RankDecode(uint32_t prompt_tokens,
                                     const std::set<std::string>& exclude) const;

  // The healthy prefill worker not in `exclude` with the least queued prompt tokens (the
  // larger of its report and this router's requests in flight there) whose compatibility
  // hash matches `compat_hash` (0 on either side matches anything). UNAVAILABLE when none.
  absl::StatusOr<WorkerInfo> PickPrefill(uint64_t compat_hash,
                                         const std::set<std::string>& exclude) const;

  // The router's own accounting between load reports.
  void NoteReserved(absl::string_view decode_id, uint32_t prompt_tokens);
  void NotePrefillStarted(absl::string_view prefill_id, uint32_t prompt_tokens);
  void NotePrefillFinished(absl::string_view prefill_id, uint32_t prompt_tokens);

  WorkerCounts Counts() const;
  // State slots of the healthy decode workers together (from their registered capacity,
  // else their last load report): how many sequences the cluster decodes at once.
  int HealthyDecodeSlots() const;
  // Smallest max_context_tokens among registered, healthy workers (0 when none reports).
  int32_t MaxContextTokens() const;
  // The first healthy worker's vocab_size / eos ids (0 / empty when none reports).
  uint32_t VocabSize() const;
  std::vector<int32_t> EosTokenIds() const;
  // The model name of the first healthy worker that reports one.
  std::string ModelName() const;
  std::vector<WorkerInfo> Snapshot() const;
  bool IsHealthy(absl::string_view worker_id) const;

  const RegistryOptions& options() const { return options_; }

 private:
  struct Entry {
    WorkerInfo info;
    absl::Time last_seen;
    // Placed by this router since the last load report.
    uint32_t placed_pages = 0;
    uint32_t placed_slots = 0;
    // Prefill requests in flight from this router.
    uint64_t inflight_tokens = 0;
    uint32_t inflight_requests = 0;
  };

  std::string FreshIdLocked(worker::v1::WorkerRole role) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t PagesFor(const Entry& e, uint32_t tokens) const;

  const RegistryOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gka::router
