// The router's view of its workers: registration, heartbeats with load reports, health by
// heartbeat age, and placement (which decode worker has room, which prefill worker has the
// least queued work).
//
// Owns: one entry per registered worker (id, role, address, capacity, last load report,
// last heartbeat, draining flag) plus the router's own ledger of decode room: one hold per
// admitted request on the decode worker it goes to (issue 9: admission by KV pages and state
// slots). A hold counts twice over:
//   - against the worker's last report until a report taken after the worker made the
//     reservation arrives (its prompt pages + 1 token and one slot: decode_core's Reserve
//     rule), so a burst between two heartbeats cannot over-commit what the worker has free;
//     a released hold is credited back the same way until the report shows it freed;
//   - against the worker's total pages for the request's whole life (prompt + max_new_tokens,
//     page-rounded), so the sequences this router placed can all grow to their limit without
//     the worker swapping one out (TensorRT-LLM's GUARANTEED_NO_EVICT policy, by pages).
// Holds spread a burst instead of piling it onto the worker that looked emptiest. Passive: no
// threads, no gRPC transport (the WorkerRegistry gRPC service and the sweeper thread call into it);
// time is passed in, so tests drive it with a fake clock.
//
//   WorkerRegistry registry({.heartbeat_interval = absl::Seconds(1)});
//   GKA_ASSIGN_OR_RETURN(auto resp, registry.Register(register_request, absl::Now()));
//   registry.Heartbeat(heartbeat_request, absl::Now());
//   std::vector<std::string> lost = registry.Sweep(absl::Now());   // newly unhealthy ids
//   if (registry.Hold("req-1", {.prompt_tokens = 90, .max_new_tokens = 64})) ...
//   std::vector<WorkerInfo> decode = registry.RankDecode("req-1", demand, {});
//   registry.PlaceHold("req-1", decode[0].id, demand); ... registry.ConfirmHold("req-1", now);
//   registry.ReleaseHold("req-1", absl::Now());       // the request ended
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
#include <optional>
#include <set>
#include <string>
#include <utility>
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
  // A reservation (or a release) counts as seen by a load report taken this long after the
  // router learnt of it. The decode worker publishes its stats before it answers Reserve, so
  // this covers the clocks of two hosts differing (the report's time is the worker's).
  absl::Duration report_grace = absl::Milliseconds(50);
};

// What one request needs of a decode worker.
struct DecodeDemand {
  uint32_t prompt_tokens = 0;
  uint32_t max_new_tokens = 0;
};

// The router's holds on decode workers, for gka_admission_held_* metrics.
struct HeldTotals {
  int64_t requests = 0;
  int64_t kv_pages = 0;  // whole-life footprint (prompt + max_new_tokens)
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
  int colocated_healthy = 0;
  int colocated_unhealthy = 0;
  // A request can be served: by a colocated worker alone, or by a prefill and a decode one.
  bool CanServe() const {
    return colocated_healthy > 0 || (prefill_healthy > 0 && decode_healthy > 0);
  }
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

  // Healthy decode workers not in `exclude`, best first: the one `request_id` holds room on,
  // then those with room for `demand` (HasRoom below, not counting the request's own hold),
  // by free pages, then the rest (reports may be stale; the worker is the judge). "Decode
  // workers" here and below include colocated ones (WORKER_ROLE_COLOCATED: they hold room
  // the same way); only WORKER_ROLE_DECODE ones take a prefill worker's hand-off, a
  // colocated one is given the prompt itself.
  std::vector<WorkerInfo> RankDecode(absl::string_view request_id, const DecodeDemand& demand,
                                     const std::set<std::string>& exclude) const;

  // Holds room for `request_id` on the healthy decode worker with the most free pages that
  // has room for `demand` now; false (and no hold) when none has. A request already holding
  // room keeps it (true).
  bool Hold(absl::string_view request_id, const DecodeDemand& demand);
  // OK when some healthy decode worker could hold `demand` once empty; else INVALID_ARGUMENT
  // naming the numbers (no worker has that many KV pages in all, or the context). OK when no
  // decode worker reports capacity (placement answers for itself).
  absl::Status CanEverHold(const DecodeDemand& demand) const;
  // The request is placed on `decode_id` (its hold moves there, or is made when admission
  // did not hold one). Counted against the worker's report until ConfirmHold + a report.
  void PlaceHold(absl::string_view request_id, absl::string_view decode_id,
                 const DecodeDemand& demand);
  // The worker accepted the reservation at `now`: a report taken after now + report_grace
  // includes it.
  void ConfirmHold(absl::string_view request_id, absl::Time now);
  // The request ended (or gave its room up); unknown ids are ignored.
  void ReleaseHold(absl::string_view request_id, absl::Time now);
  HeldTotals Held() const;

  // The healthy prefill worker not in `exclude` with the least queued prompt tokens (the
  // larger of its report and this router's requests in flight there) whose compatibility
  // hash matches `compat_hash` (0 on either side matches anything). UNAVAILABLE when none.
  absl::StatusOr<WorkerInfo> PickPrefill(uint64_t compat_hash,
                                         const std::set<std::string>& exclude) const;

  // The router's own accounting of prefill work between load reports.
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
  // Released holds the worker's report does not show freed yet.
  struct Credit {
    uint32_t pages = 0;
    absl::Time at;
  };
  struct Entry {
    WorkerInfo info;
    absl::Time last_seen;
    std::vector<Credit> credits;
    // Prefill requests in flight from this router.
    uint64_t inflight_tokens = 0;
    uint32_t inflight_requests = 0;
  };
  struct DecodeHold {
    std::string worker_id;
    uint32_t now_pages = 0;   // what Reserve takes: prompt + 1 token
    uint32_t life_pages = 0;  // prompt + max_new_tokens
    // When the worker accepted the reservation; unset: not yet (Reserve not sent or in flight).
    std::optional<absl::Time> confirmed;
    // Not yet in the worker's report (counted against it).
    bool unreported = true;
  };
  // A decode worker's room as the router sees it.
  struct Room {
    int64_t free_pages = 0;  // reported free - unreported holds + credits
    int64_t free_slots = 0;
    int64_t spare_pages = 0;  // total - whole-life footprints of this router's holds
    int64_t spare_slots = 0;
  };

  std::string FreshIdLocked(worker::v1::WorkerRole role) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t PagesFor(const Entry& e, uint32_t tokens) const;
  // Total KV pages and state slots: registered capacity, else the last report.
  static std::pair<uint32_t, uint32_t> TotalsOf(const Entry& e);
  // `skip`: a request whose own hold is not counted.
  Room RoomLocked(const Entry& e, absl::string_view skip) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A worker reporting no capacity at all is taken at its word (always room).
  bool HasRoomLocked(const Entry& e, const Room& room, const DecodeDemand& demand) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  DecodeHold MakeHold(const Entry& e, const DecodeDemand& demand) const;

  const RegistryOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> workers_ ABSL_GUARDED_BY(mu_);
  // request id -> its hold.
  std::map<std::string, DecodeHold, std::less<>> holds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gka::router
