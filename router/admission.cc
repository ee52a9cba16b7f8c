#include "router/admission.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"

namespace gka::router {
namespace {

// absl::Status payload key of the retry-after hint (microseconds, decimal).
constexpr absl::string_view kRetryAfterPayload = "gka.router/retry_after_us";

}  // namespace

std::optional<absl::Duration> RetryAfterOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kRetryAfterPayload);  // absl::optional<Cord>
  if (!payload.has_value()) return std::nullopt;
  int64_t us = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &us) || us < 0) return std::nullopt;
  return absl::Microseconds(us);
}

absl::Status ResourceExhaustedWithRetry(absl::string_view message, absl::Duration retry_after) {
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kRetryAfterPayload,
                    absl::Cord(absl::StrCat(absl::ToInt64Microseconds(retry_after))));
  return status;
}

Admission::Admission(AdmissionOptions options, const TierTable& tiers, WorkerRegistry* rooms)
    : options_(std::move(options)), rooms_(rooms) {
  absl::MutexLock lock(&mu_);
  for (const Tier& tier : tiers.tiers()) {
    auto state = std::make_unique<TierState>();
    state->tier = &tier;
    by_name_[tier.name] = state.get();
    tiers_.push_back(std::move(state));
  }
  // Dispatch order: higher priority first; stable, so equal priorities keep table order.
  std::stable_sort(tiers_.begin(), tiers_.end(),
                   [](const std::unique_ptr<TierState>& a, const std::unique_ptr<TierState>& b) {
                     return a->tier->priority > b->tier->priority;
                   });
}

Admission::~Admission() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
}

absl::Status Admission::Init(metrics::Registry& registry) {
  GKA_ASSIGN_OR_RETURN(auto* depth, registry.AddGauge("gka_admission_queue_depth",
                                                      "Requests waiting in the router's admission "
                                                      "queue for a decode slot",
                                                      {"tier"}));
  GKA_ASSIGN_OR_RETURN(
      auto* wait,
      registry.AddHistogram("gka_admission_wait_seconds",
                            "Time a request waited in the admission queue before placement "
                            "(0 when placed at once)",
                            {"tier"}, metrics::LatencyBuckets()));
  GKA_ASSIGN_OR_RETURN(auto* refused,
                       registry.AddCounter("gka_admission_refused_total",
                                           "Requests refused by admission control: "
                                           "RESOURCE_EXHAUSTED with a retry-after hint, or "
                                           "INVALID_ARGUMENT when no decode worker could hold "
                                           "them (never_fits)",
                                           {"tier", "reason"}));
  GKA_ASSIGN_OR_RETURN(
      auto* placed, registry.AddGauge("gka_admission_placed",
                                      "Requests this router has placed and not yet finished", {}));
  GKA_ASSIGN_OR_RETURN(
      auto* capacity,
      registry.AddGauge("gka_admission_capacity",
                        "Requests the router places at once (decode state slots)", {}));
  GKA_ASSIGN_OR_RETURN(auto* held,
                       registry.AddGauge("gka_admission_held_kv_pages",
                                         "KV pages this router holds on decode workers for the "
                                         "requests it started (prompt + max_tokens each)",
                                         {}));
  GKA_ASSIGN_OR_RETURN(
      auto* rung, registry.AddGauge("gka_degrade_rung",
                                    "The tier's degrade-ladder rung (0: as configured)", {"tier"}));
  GKA_ASSIGN_OR_RETURN(auto* steps, registry.AddCounter("gka_degrade_steps_total",
                                                        "Degrade-ladder moves, by direction",
                                                        {"tier", "direction"}));
  {
    absl::MutexLock lock(&mu_);
    for (auto& t : tiers_) {
      const metrics::Labels l = {{"tier", t->tier->name}};
      t->depth = depth->Labels(l);
      t->wait = wait->Labels(l);
      t->rung_gauge = rung->Labels(l);
      t->refused_full = refused->Labels({{"tier", t->tier->name}, {"reason", "queue_full"}});
      t->refused_timeout = refused->Labels({{"tier", t->tier->name}, {"reason", "queue_timeout"}});
      t->refused_rate = refused->Labels({{"tier", t->tier->name}, {"reason", "rate_limit"}});
      t->refused_never_fits = refused->Labels({{"tier", t->tier->name}, {"reason", "never_fits"}});
      t->step_down = steps->Labels({{"tier", t->tier->name}, {"direction", "down"}});
      t->step_up = steps->Labels({{"tier", t->tier->name}, {"direction", "up"}});
      t->rung_gauge->Set(t->rung);
      SetDepthLocked(*t);
    }
    running_gauge_ = placed->Labels({});
    running_gauge_->Set(static_cast<double>(running_ids_.size()));
    capacity_gauge_ = capacity->Labels({});
    capacity_gauge_->Set(CapacityLocked());
    held_pages_gauge_ = held->Labels({});
    SetHeldLocked();
  }
  if (options_.tick > absl::ZeroDuration() && !ticker_.joinable()) {
    ticker_ = std::thread([this] { TickerLoop(); });
  }
  return absl::OkStatus();
}

int Admission::CapacityLocked() const {
  return options_.max_running > 0 ? options_.max_running : capacity_;
}

bool Admission::TryStartLocked(const Waiter& waiter) {
  const int capacity = CapacityLocked();
  // No capacity known (no decode worker reported yet): placement answers for itself.
  if (!options_.enabled || capacity == 0) return true;
  if (static_cast<int>(running_ids_.size()) >= capacity) return false;
  return rooms_ == nullptr || rooms_->Hold(waiter.id, waiter.demand);
}

void Admission::StartLocked(TierState& t, Waiter waiter, absl::Duration waited,
                            std::vector<Action>& actions) {
  running_ids_[waiter.id] = &t;
  if (running_gauge_) running_gauge_->Set(static_cast<double>(running_ids_.size()));
  if (t.wait) t.wait->Observe(absl::ToDoubleSeconds(waited));
  SetHeldLocked();
  actions.push_back([start = std::move(waiter.start), rung = t.rung] { start(rung); });
}

void Admission::SetHeldLocked() {
  if (held_pages_gauge_ && rooms_ != nullptr) {
    held_pages_gauge_->Set(static_cast<double>(rooms_->Held().kv_pages));
  }
}

absl::Status Admission::Admit(const Tier& tier, Waiter waiter, absl::Time now) {
  std::vector<Action> actions;
  absl::Status result;
  {
    absl::MutexLock lock(&mu_);
    auto it = by_name_.find(tier.name);
    TierState& t = *it->second;  // the table's own tiers only
    const int capacity = CapacityLocked();
    bool any_queued = false;
    for (const auto& other : tiers_) any_queued |= !other->queue.empty();
    absl::Status fits = options_.enabled && rooms_ != nullptr ? rooms_->CanEverHold(waiter.demand)
                                                              : absl::OkStatus();
    if (!fits.ok()) {
      // Waiting would not help: no retry-after hint.
      if (t.refused_never_fits) t.refused_never_fits->Increment();
      result = std::move(fits);
    } else if (!any_queued && TryStartLocked(waiter)) {
      StartLocked(t, std::move(waiter), absl::ZeroDuration(), actions);
    } else if (static_cast<int>(t.queue.size()) >= tier.queue_limit) {
      if (t.refused_full) t.refused_full->Increment();
      const absl::Duration retry = RetryAfterLocked(t, now);
      result = ResourceExhaustedWithRetry(
          absl::StrCat(
              "the cluster is at capacity (", running_ids_.size(), " requests placed on ", capacity,
              " decode slots",
              rooms_ != nullptr ? absl::StrCat(", ", rooms_->Held().kv_pages, " KV pages held")
                                : "",
              ") and tier '", tier.name, "' has ", t.queue.size(), " requests queued (queue_limit ",
              tier.queue_limit, "); retry after ", absl::ToInt64Milliseconds(retry), " ms"),
          retry);
    } else {
      t.queue.push_back({.waiter = std::move(waiter), .since = now});
      SetDepthLocked(t);
      // Room may have freed between the last dispatch and now.
      DispatchLocked(now, actions);
    }
  }
  RunActions(std::move(actions));
  return result;
}

void Admission::Finished(absl::string_view id, absl::Time now) {
  std::vector<Action> actions;
  {
    absl::MutexLock lock(&mu_);
    // Placement holds room for requests admission did not gate (disabled, no capacity
    // known) too; a queued request holds none.
    if (rooms_ != nullptr) rooms_->ReleaseHold(id, now);
    auto it = running_ids_.find(id);
    if (it != running_ids_.end()) {
      running_ids_.erase(it);
      if (running_gauge_) running_gauge_->Set(static_cast<double>(running_ids_.size()));
      SetHeldLocked();
      completions_.push_back(now);
      DispatchLocked(now, actions);
    } else {
      for (auto& t : tiers_) {
        auto q = std::find_if(t->queue.begin(), t->queue.end(),
                              [&](const Queued& e) { return e.waiter.id == id; });
        if (q != t->queue.end()) {
          t->queue.erase(q);
          SetDepthLocked(*t);
          break;
        }
      }
    }
  }
  RunActions(std::move(actions));
}

void Admission::SetCapacity(int slots) {
  std::vector<Action> actions;
  {
    absl::MutexLock lock(&mu_);
    if (capacity_ != slots) {
      capacity_ = slots;
      if (capacity_gauge_) capacity_gauge_->Set(CapacityLocked());
    }
    DispatchLocked(absl::Now(), actions);
  }
  RunActions(std::move(actions));
}

void Admission::DispatchLocked(absl::Time now, std::vector<Action>& actions) {
  while (true) {
    TierState* next = nullptr;
    for (auto& t : tiers_) {
      if (!t->queue.empty()) {
        next = t.get();
        break;
      }
    }
    // Strict priority order: when the head of the highest queue does not fit, nothing behind
    // it starts either (a long prompt is not starved by a stream of short ones).
    if (next == nullptr || !TryStartLocked(next->queue.front().waiter)) return;
    Queued q = std::move(next->queue.front());
    next->queue.pop_front();
    SetDepthLocked(*next);
    StartLocked(*next, std::move(q.waiter), now - q.since, actions);
  }
}

absl::Duration Admission::RetryAfterLocked(const TierState& t, absl::Time now) {
  while (!completions_.empty() && completions_.front() < now - options_.drain_window) {
    completions_.pop_front();
  }
  // Requests that will be placed before this one if it came back now: every queued request
  // of its priority or higher, and itself.
  int64_t ahead = 1;
  for (const auto& other : tiers_) {
    if (other->tier->priority >= t.tier->priority)
      ahead += static_cast<int64_t>(other->queue.size());
  }
  absl::Duration wait;
  if (completions_.empty()) {
    // Nothing finished in the window: no rate to go by; one window is the honest guess.
    wait = options_.drain_window;
  } else {
    const absl::Duration span = std::max(now - completions_.front(), absl::Milliseconds(100));
    const double per_second =
        static_cast<double>(completions_.size()) / absl::ToDoubleSeconds(span);
    wait = absl::Seconds(static_cast<double>(ahead) / per_second);
  }
  return std::clamp(wait, options_.min_retry_after, options_.max_retry_after);
}

absl::Duration Admission::RetryAfter(const Tier& tier, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(tier.name);
  if (it == by_name_.end()) return options_.min_retry_after;
  return RetryAfterLocked(*it->second, now);
}

void Admission::CountRateLimited(absl::string_view tier) {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(tier);
  if (it != by_name_.end() && it->second->refused_rate) it->second->refused_rate->Increment();
}

void Admission::ObserveItl(absl::string_view tier, absl::Duration gap) {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(tier);
  if (it == by_name_.end() || !it->second->tier->degrade_itl_ms.has_value()) return;
  it->second->itl_sum_s += absl::ToDoubleSeconds(gap);
  ++it->second->itl_count;
}

void Admission::Tick(absl::Time now) {
  std::vector<Action> actions;
  {
    absl::MutexLock lock(&mu_);
    for (auto& t : tiers_) {
      // Shed what waited past max_queue_ms (the queue is FIFO: the oldest are in front).
      const double max_ms = t->tier->max_queue_ms;
      while (max_ms > 0 && !t->queue.empty() &&
             now - t->queue.front().since >= absl::Milliseconds(max_ms)) {
        Queued q = std::move(t->queue.front());
        t->queue.pop_front();
        if (t->refused_timeout) t->refused_timeout->Increment();
        const absl::Duration retry = RetryAfterLocked(*t, now);
        absl::Status refused = ResourceExhaustedWithRetry(
            absl::StrCat("waited ", absl::ToInt64Milliseconds(now - q.since),
                         " ms for a decode slot (tier '", t->tier->name, "' max_queue_ms ", max_ms,
                         "); retry after ", absl::ToInt64Milliseconds(retry), " ms"),
            retry);
        actions.push_back(
            [shed = std::move(q.waiter.shed), refused = std::move(refused)] { shed(refused); });
      }
      SetDepthLocked(*t);
    }
    for (auto& t : tiers_) LadderLocked(*t, now);
    DispatchLocked(now, actions);
  }
  RunActions(std::move(actions));
}

void Admission::LadderLocked(TierState& t, absl::Time now) {
  const Tier& tier = *t.tier;
  if (tier.degrade_ladder.empty()) return;
  if (tier.degrade_itl_ms.has_value()) {
    if (t.itl_window_start == absl::InfinitePast()) t.itl_window_start = now;
    if (now - t.itl_window_start >= options_.signal_window) {
      t.itl_mean_s =
          t.itl_count > 0 ? std::optional<double>(t.itl_sum_s / t.itl_count) : std::nullopt;
      t.itl_sum_s = 0;
      t.itl_count = 0;
      t.itl_window_start = now;
    }
  }
  bool pressure = false;
  if (tier.degrade_queue_ms.has_value()) {
    absl::Duration oldest = absl::ZeroDuration();
    for (const auto& other : tiers_) {
      if (!other->queue.empty()) oldest = std::max(oldest, now - other->queue.front().since);
    }
    pressure |= oldest > absl::Milliseconds(*tier.degrade_queue_ms);
  }
  if (tier.degrade_itl_ms.has_value() && t.itl_mean_s.has_value()) {
    pressure |= *t.itl_mean_s * 1000.0 > *tier.degrade_itl_ms;
  }
  const int before = t.rung;
  if (pressure) {
    t.calm_since.reset();
    if (!t.pressure_since.has_value()) t.pressure_since = now;
    if (t.rung < static_cast<int>(tier.degrade_ladder.size()) &&
        now - std::max(*t.pressure_since, t.last_change) >= options_.degrade_after) {
      ++t.rung;
      if (t.step_down) t.step_down->Increment();
    }
  } else {
    t.pressure_since.reset();
    if (!t.calm_since.has_value()) t.calm_since = now;
    if (t.rung > 0 && now - std::max(*t.calm_since, t.last_change) >= options_.recover_after) {
      --t.rung;
      if (t.step_up) t.step_up->Increment();
    }
  }
  if (t.rung != before) {
    t.last_change = now;
    if (t.rung_gauge) t.rung_gauge->Set(t.rung);
    GKA_LOG(INFO) << "tier " << tier.name << ": degrade rung " << before << " -> " << t.rung
                  << (t.rung > 0
                          ? absl::StrCat(" (decode num_iter <= ",
                                         tier.degrade_ladder[t.rung - 1].decode_num_iter, ")")
                          : std::string(" (as configured)"));
  }
}

void Admission::SetDepthLocked(TierState& t) {
  if (t.depth) t.depth->Set(static_cast<double>(t.queue.size()));
}

int Admission::Rung(absl::string_view tier) const {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(tier);
  return it == by_name_.end() ? 0 : it->second->rung;
}

std::map<std::string, int32_t> Admission::DecodeCaps() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, int32_t> caps;
  for (const auto& t : tiers_) {
    if (t->rung > 0) caps[t->tier->name] = t->tier->degrade_ladder[t->rung - 1].decode_num_iter;
  }
  return caps;
}

int Admission::running() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(running_ids_.size());
}

int Admission::queued() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& t : tiers_) n += static_cast<int>(t->queue.size());
  return n;
}

int Admission::capacity() const {
  absl::MutexLock lock(&mu_);
  return CapacityLocked();
}

void Admission::RunActions(std::vector<Action> actions) {
  {
    absl::MutexLock lock(&mu_);
    for (Action& a : actions) pending_.push_back(std::move(a));
    if (running_actions_ || pending_.empty()) return;
    running_actions_ = true;
  }
  while (true) {
    std::vector<Action> batch;
    {
      absl::MutexLock lock(&mu_);
      if (pending_.empty()) {
        running_actions_ = false;
        return;
      }
      batch.swap(pending_);
    }
    for (Action& a : batch) a();
  }
}

void Admission::TickerLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.tick)) return;
    }
    Tick(absl::Now());
  }
}

}  // namespace gka::router
