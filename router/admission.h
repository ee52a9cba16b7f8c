// Admission control and the degrade ladder (issue 9 §2, §3): a bounded queue per tier in
// front of placement, drained in priority order as decode slots free up, and per tier a
// rung of its degrade ladder chosen from load signals with hysteresis.
//
// Owns: the count of requests this router has placed and not yet finished ("running"), the
// cluster's decode capacity (its healthy decode workers' state slots, or a fixed limit),
// with a WorkerRegistry: room on one decode worker held for every request it starts (KV
// pages and a state slot, counting what was placed since the worker's last report; see
// worker_registry.h), so a request starts only when some decode worker can hold it,
// one FIFO queue per tier, a sliding window of completion times (the measured drain rate
// behind every retry-after hint), and each tier's ladder state. Knows nothing of gRPC or of
// Generation: callers hand in two callbacks per request. Beyond a tier's queue_limit a
// request is refused at once; a queued request that waited max_queue_ms is refused later
// (shed). Both get RESOURCE_EXHAUSTED carrying a retry-after hint (RetryAfterOf(status)).
// A request no decode worker could hold even when empty is refused at once with
// INVALID_ARGUMENT (no hint: waiting cannot help).
//
//   Admission admission(options, tiers, &worker_registry);
//   GKA_RETURN_IF_ERROR(admission.InitMetrics(registry));
//   absl::Status s = admission.Admit(*tier, {.id = "req-1", .demand = {90, 64},
//                                            .start = [](int rung) { ...place it... },
//                                            .shed = [](absl::Status refused) { ... }},
//                                    absl::Now());
//   if (!s.ok()) ...refuse with s (RESOURCE_EXHAUSTED, retry-after in its payload)...
//   ... when the request ends, however it ends (queued or running):
//   admission.Finished("req-1", absl::Now());        // releases its room too
//
// Load signals (per tier with a ladder): the queue delay — the age of the oldest request in
// any admission queue (slots are shared, so a starved low tier is pressure for every tier)
// — over the tier's degrade_queue_ms, or the tier's mean inter-token latency over the last
// signal window over degrade_itl_ms. Pressure for `degrade_after` steps one rung down;
// calm for `recover_after` steps one rung up (one rung per period, so the ladder neither
// flaps nor jumps).
//
// Thread-safety: every method is thread-safe. Callbacks run on the calling thread (or the
// ticker thread) outside the internal mutex, one dispatch loop at a time. Lock order: this
// class's mutex, then the registry's (the registry never calls back).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "router/tiers.h"
#include "router/worker_registry.h"

namespace gka::router {

struct AdmissionOptions {
  // false: every request goes straight to placement (the behaviour before issue 9; kept for
  // the with/without benchmark).
  bool enabled = true;
  // Requests placed at once; 0: the healthy decode workers' total state slots.
  int max_running = 0;
  absl::Duration min_retry_after = absl::Milliseconds(50);
  absl::Duration max_retry_after = absl::Seconds(30);
  // Completions counted for the drain rate.
  absl::Duration drain_window = absl::Seconds(10);
  // Ladder hysteresis and the ITL signal's averaging window.
  absl::Duration degrade_after = absl::Milliseconds(500);
  absl::Duration recover_after = absl::Seconds(2);
  absl::Duration signal_window = absl::Seconds(1);
  // How often the ticker re-evaluates the ladder and sheds requests past max_queue_ms;
  // zero: no ticker thread (tests call Tick).
  absl::Duration tick = absl::Milliseconds(100);
};

// The retry-after hint a refusal carries, if any.
std::optional<absl::Duration> RetryAfterOf(const absl::Status& status);
// RESOURCE_EXHAUSTED with `message` and the hint attached.
absl::Status ResourceExhaustedWithRetry(absl::string_view message, absl::Duration retry_after);

class Admission {
 public:
  struct Waiter {
    std::string id;
    // Room it needs on a decode worker (with a registry).
    DecodeDemand demand;
    // Called once when the request may be placed, with the tier's current ladder rung.
    std::function<void(int rung)> start;
    // Called once when a queued request is refused (RESOURCE_EXHAUSTED with the hint).
    std::function<void(absl::Status)> shed;
  };

  // `rooms` (may be null: slot counting only; not owned, must outlive this) holds decode
  // room for every request started.
  Admission(AdmissionOptions options, const TierTable& tiers, WorkerRegistry* rooms = nullptr);
  ~Admission();  // stops the ticker
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  // Registers the gka_admission_* and gka_degrade_* families; INVALID_ARGUMENT on a clash.
  // Starts the ticker (when options.tick > 0).
  absl::Status Init(metrics::Registry& registry);

  // Starts `waiter` now (start() is called before this returns unless another thread is
  // running callbacks, which then calls it), queues it, or refuses it:
  // RESOURCE_EXHAUSTED with a retry-after hint when the tier's queue is full;
  // INVALID_ARGUMENT when no decode worker could ever hold it (WorkerRegistry::CanEverHold).
  absl::Status Admit(const Tier& tier, Waiter waiter, absl::Time now);
  // The request `id` ended (running: its slot and held room free and the queue drains;
  // queued: it leaves its queue). Unknown ids are ignored, so calling it twice is harmless.
  void Finished(absl::string_view id, absl::Time now);

  // The cluster's decode state slots (ignored when options.max_running is set); also the
  // cue that a worker reported (room may have freed): the queues are drained again.
  void SetCapacity(int slots);
  // A request of `tier` refused by its API key's rate limit (router/rate_limit.h), counted
  // with the admission refusals (reason "rate_limit").
  void CountRateLimited(absl::string_view tier);
  // One inter-token gap of `tier` for the ITL signal.
  void ObserveItl(absl::string_view tier, absl::Duration gap);
  // Re-evaluates every ladder and sheds queued requests past their tier's max_queue_ms.
  void Tick(absl::Time now);

  // The current hint for a request of `tier` refused now.
  absl::Duration RetryAfter(const Tier& tier, absl::Time now);
  // The rung `tier` is on (0 when it has no ladder).
  int Rung(absl::string_view tier) const;
  // Decode num_iter caps of the tiers on a rung > 0 (tier -> cap), for the decode workers to
  // apply to sequences already running.
  std::map<std::string, int32_t> DecodeCaps() const;

  int running() const;
  int queued() const;
  int capacity() const;

 private:
  struct Queued {
    Waiter waiter;
    absl::Time since;
  };
  struct TierState {
    const Tier* tier = nullptr;
    std::deque<Queued> queue;
    int rung = 0;
    absl::Time last_change = absl::InfinitePast();
    std::optional<absl::Time> pressure_since;
    std::optional<absl::Time> calm_since;
    // ITL samples of the current window, and the mean of the last complete one.
    double itl_sum_s = 0;
    int64_t itl_count = 0;
    absl::Time itl_window_start = absl::InfinitePast();
    std::optional<double> itl_mean_s;
    // Metric handles (empty before Init).
    std::optional<metrics::Gauge> depth;
    std::optional<metrics::Gauge> rung_gauge;
    std::optional<metrics::Histogram> wait;
    std::optional<metrics::Counter> refused_full;
    std::optional<metrics::Counter> refused_timeout;
    std::optional<metrics::Counter> refused_rate;
    std::optional<metrics::Counter> refused_never_fits;
    std::optional<metrics::Counter> step_down;
    std::optional<metrics::Counter> step_up;
  };
  using Action = std::function<void()>;

  int CapacityLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `waiter` may start now by slots and (with a registry) by held decode room; holds
  // the room when it may.
  bool TryStartLocked(const Waiter& waiter) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks `waiter` running and queues its start.
  void StartLocked(TierState& t, Waiter waiter, absl::Duration waited,
                   std::vector<std::function<void()>>& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetHeldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Pops what may start now into `actions` (highest priority first, FIFO within a tier).
  void DispatchLocked(absl::Time now, std::vector<Action>& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration RetryAfterLocked(const TierState& t, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LadderLocked(TierState& t, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetDepthLocked(TierState& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `actions` and whatever other threads add meanwhile (outside mu_); one thread at a
  // time, so a chain of requests that end as they start cannot recurse through the queue.
  void RunActions(std::vector<Action> actions);
  void TickerLoop();

  const AdmissionOptions options_;
  WorkerRegistry* const rooms_;
  mutable absl::Mutex mu_;
  // In priority order (highest first), then table order.
  std::vector<std::unique_ptr<TierState>> tiers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, TierState*> by_name_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, TierState*> running_ids_ ABSL_GUARDED_BY(mu_);
  int capacity_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<absl::Time> completions_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<metrics::Gauge> running_gauge_ ABSL_GUARDED_BY(mu_);
  std::optional<metrics::Gauge> capacity_gauge_ ABSL_GUARDED_BY(mu_);
  std::optional<metrics::Gauge> held_pages_gauge_ ABSL_GUARDED_BY(mu_);
  // Callbacks waiting to run, and whether a thread is running them.
  std::vector<Action> pending_ ABSL_GUARDED_BY(mu_);
  bool running_actions_ ABSL_GUARDED_BY(mu_) = false;

  std::thread ticker_;
};

}  // namespace gka::router
