#include "router/worker_registry.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/base/logging.h"

namespace gka::router {
namespace {

namespace w = ::gka::worker::v1;

absl::string_view RolePrefix(w::WorkerRole role) {
  switch (role) {
    case w::WORKER_ROLE_PREFILL:
      return "prefill";
    case w::WORKER_ROLE_COLOCATED:
      return "colocated";
    default:
      return "decode";
  }
}

// Workers that decode (and hold room): hand-off targets and those that prefill themselves.
bool Decodes(w::WorkerRole role) {
  return role == w::WORKER_ROLE_DECODE || role == w::WORKER_ROLE_COLOCATED;
}

bool HasPort(absl::string_view address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  return colon != absl::string_view::npos && colon > 0 &&
         absl::SimpleAtoi(address.substr(colon + 1), &port) && port > 0 && port < 65536;
}

}  // namespace

WorkerRegistry::WorkerRegistry(const RegistryOptions& options) : options_(options) {}

std::string WorkerRegistry::FreshIdLocked(w::WorkerRole role) {
  for (int n = 0;; ++n) {
    std::string id = absl::StrCat(RolePrefix(role), "-", n);
    if (workers_.count(id) == 0) return id;
  }
}

absl::StatusOr<w::RegisterResponse> WorkerRegistry::Register(const w::RegisterRequest& request,
                                                             absl::Time now) {
  if (request.role() != w::WORKER_ROLE_PREFILL && !Decodes(request.role())) {
    return absl::InvalidArgumentError(
        "role: must be WORKER_ROLE_PREFILL, WORKER_ROLE_DECODE or WORKER_ROLE_COLOCATED");
  }
  if (!HasPort(request.grpc_address())) {
    return absl::InvalidArgumentError(absl::StrCat("grpc_address: '", request.grpc_address(),
                                                   "' is not host:port of the worker's server"));
  }
  absl::MutexLock lock(&mu_);
  std::string id = request.worker_id();
  if (!id.empty()) {
    auto it = workers_.find(id);
    // Another live worker holds the suggested id: give this one a fresh id instead.
    if (it != workers_.end() && it->second.info.grpc_address != request.grpc_address() &&
        it->second.info.healthy) {
      GKA_LOG(WARNING) << "worker id " << id << " is taken by " << it->second.info.grpc_address
                       << "; assigning a fresh id to " << request.grpc_address();
      id.clear();
    }
  }
  if (id.empty()) id = FreshIdLocked(request.role());

  Entry entry;
  WorkerInfo& info = entry.info;
  info.id = id;
  info.role = request.role();
  info.grpc_address = request.grpc_address();
  info.model = request.model();
  info.compat_hash = request.compat_hash();
  info.capacity = request.capacity();
  info.vocab_size = request.vocab_size();
  info.eos_token_ids.assign(request.eos_token_ids().begin(), request.eos_token_ids().end());
  // Until the first heartbeat, the whole capacity is free.
  info.load.set_total_kv_pages(request.capacity().total_kv_pages());
  info.load.set_free_kv_pages(request.capacity().total_kv_pages());
  info.load.set_total_state_slots(request.capacity().total_state_slots());
  info.load.set_free_state_slots(request.capacity().total_state_slots());
  info.healthy = true;
  entry.last_seen = now;
  for (const auto& [other_id, other] : workers_) {
    if (other_id != id && other.info.compat_hash != 0 && info.compat_hash != 0 &&
        other.info.compat_hash != info.compat_hash) {
      GKA_LOG(WARNING) << "worker " << id << " has compat hash " << info.compat_hash << ", "
                       << other_id << " has " << other.info.compat_hash
                       << ": they will not be paired";
    }
  }
  workers_[id] = std::move(entry);
  GKA_LOG(INFO) << "registered " << id << " at " << request.grpc_address() << " (model '"
                << request.model() << "', tp " << request.tp_size() << ")";

  w::RegisterResponse response;
  response.set_worker_id(id);
  response.set_heartbeat_interval_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.heartbeat_interval)));
  return response;
}

w::HeartbeatResponse WorkerRegistry::Heartbeat(const w::HeartbeatRequest& request, absl::Time now) {
  w::HeartbeatResponse response;
  response.set_heartbeat_interval_ms(
      static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.heartbeat_interval)));
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(request.worker_id());
  if (it == workers_.end()) {
    response.set_reregister(true);
    return response;
  }
  Entry& e = it->second;
  if (!e.info.healthy && !e.info.draining && !request.draining()) {
    GKA_LOG(INFO) << "worker " << e.info.id << " is heartbeating again";
  }
  e.last_seen = now;
  e.info.load = request.load();
  e.info.draining = e.info.draining || request.draining();
  e.info.healthy = !e.info.draining;
  // When the report was taken (the worker's clock; a heartbeat without one may have been
  // taken up to an interval ago). Reservations and releases the worker made before it,
  // give or take report_grace, are in it.
  const absl::Time taken = request.unix_ms() > 0 ? absl::FromUnixMillis(request.unix_ms())
                                                 : now - options_.heartbeat_interval;
  for (auto& [id, hold] : holds_) {
    if (hold.worker_id == e.info.id && hold.confirmed.has_value() &&
        *hold.confirmed + options_.report_grace <= taken) {
      hold.unreported = false;
    }
  }
  std::erase_if(e.credits, [&](const Credit& c) { return c.at + options_.report_grace <= taken; });
  return response;
}

absl::Status WorkerRegistry::Deregister(absl::string_view worker_id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(std::string(worker_id));
  if (it == workers_.end()) {
    return absl::NotFoundError(absl::StrCat("worker_id: '", worker_id, "' is not registered"));
  }
  it->second.info.draining = true;
  it->second.info.healthy = false;
  GKA_LOG(INFO) << "worker " << worker_id << " deregistered (draining)";
  return absl::OkStatus();
}

std::vector<std::string> WorkerRegistry::Sweep(absl::Time now) {
  std::vector<std::string> lost;
  const absl::Duration timeout = options_.heartbeat_interval * options_.missed_heartbeats;
  absl::MutexLock lock(&mu_);
  for (auto it = workers_.begin(); it != workers_.end();) {
    Entry& e = it->second;
    const absl::Duration silent = now - e.last_seen;
    if (silent > options_.forget_after) {
      GKA_LOG(INFO) << "forgetting worker " << e.info.id << " (silent for "
                    << absl::FormatDuration(silent) << ")";
      it = workers_.erase(it);
      continue;
    }
    if (silent > timeout && e.info.healthy) {
      e.info.healthy = false;
      GKA_LOG(WARNING) << "worker " << e.info.id << " at " << e.info.grpc_address
                       << " missed heartbeats for " << absl::FormatDuration(silent)
                       << ": unhealthy";
      lost.push_back(e.info.id);
    }
    ++it;
  }
  return lost;
}

uint32_t WorkerRegistry::PagesFor(const Entry& e, uint32_t tokens) const {
  const uint32_t page =
      e.info.capacity.page_size() > 0 ? e.info.capacity.page_size() : options_.default_page_size;
  return (tokens + page - 1) / page;
}

std::pair<uint32_t, uint32_t> WorkerRegistry::TotalsOf(const Entry& e) {
  const w::WorkerCapacity& c = e.info.capacity;
  const w::LoadReport& load = e.info.load;
  return {c.total_kv_pages() > 0 ? c.total_kv_pages() : load.total_kv_pages(),
          c.total_state_slots() > 0 ? c.total_state_slots() : load.total_state_slots()};
}

WorkerRegistry::DecodeHold WorkerRegistry::MakeHold(const Entry& e,
                                                    const DecodeDemand& demand) const {
  DecodeHold hold;
  hold.worker_id = e.info.id;
  hold.now_pages = PagesFor(e, demand.prompt_tokens + 1);
  hold.life_pages =
      PagesFor(e, demand.prompt_tokens + std::max<uint32_t>(1, demand.max_new_tokens));
  return hold;
}

WorkerRegistry::Room WorkerRegistry::RoomLocked(const Entry& e, absl::string_view skip) const {
  const w::LoadReport& load = e.info.load;
  const auto [total_pages, total_slots] = TotalsOf(e);
  Room room{.free_pages = load.free_kv_pages(),
            .free_slots = load.free_state_slots(),
            .spare_pages = total_pages,
            .spare_slots = total_slots};
  for (const Credit& c : e.credits) {
    room.free_pages += c.pages;
    room.free_slots += 1;
  }
  for (const auto& [id, hold] : holds_) {
    if (hold.worker_id != e.info.id || id == skip) continue;
    if (hold.unreported) {
      room.free_pages -= hold.now_pages;
      room.free_slots -= 1;
    }
    room.spare_pages -= hold.life_pages;
    room.spare_slots -= 1;
  }
  // Credits never lift a worker above its total.
  room.free_pages = std::min<int64_t>(room.free_pages, total_pages);
  room.free_slots = std::min<int64_t>(room.free_slots, total_slots);
  return room;
}

bool WorkerRegistry::HasRoomLocked(const Entry& e, const Room& room,
                                   const DecodeDemand& demand) const {
  const auto [total_pages, total_slots] = TotalsOf(e);
  if (total_pages == 0 && total_slots == 0) return true;
  const DecodeHold need = MakeHold(e, demand);
  return room.free_pages >= need.now_pages && room.free_slots >= 1 &&
         room.spare_pages >= need.life_pages && room.spare_slots >= 1;
}

std::vector<WorkerInfo> WorkerRegistry::RankDecode(absl::string_view request_id,
                                                   const DecodeDemand& demand,
                                                   const std::set<std::string>& exclude) const {
  struct Candidate {
    bool held;
    bool room;
    int64_t free_pages;
    uint32_t running;
    const Entry* entry;
  };
  std::vector<Candidate> candidates;
  absl::MutexLock lock(&mu_);
  auto own = holds_.find(request_id);
  for (const auto& [id, e] : workers_) {
    if (!Decodes(e.info.role) || !e.info.healthy || exclude.count(id) > 0) continue;
    const Room room = RoomLocked(e, request_id);
    candidates.push_back({own != holds_.end() && own->second.worker_id == id,
                          HasRoomLocked(e, room, demand), room.free_pages,
                          e.info.load.running_sequences(), &e});
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    return std::make_tuple(!a.held, !a.room, -a.free_pages, a.running, a.entry->info.id) <
           std::make_tuple(!b.held, !b.room, -b.free_pages, b.running, b.entry->info.id);
  });
  std::vector<WorkerInfo> ranked;
  ranked.reserve(candidates.size());
  for (const Candidate& c : candidates) ranked.push_back(c.entry->info);
  return ranked;
}

bool WorkerRegistry::Hold(absl::string_view request_id, const DecodeDemand& demand) {
  absl::MutexLock lock(&mu_);
  if (holds_.contains(request_id)) return true;
  const Entry* best = nullptr;
  int64_t best_free = 0;
  for (const auto& [id, e] : workers_) {
    if (!Decodes(e.info.role) || !e.info.healthy) continue;
    const Room room = RoomLocked(e, "");
    if (!HasRoomLocked(e, room, demand)) continue;
    if (best == nullptr || room.free_pages > best_free) {
      best = &e;
      best_free = room.free_pages;
    }
  }
  if (best == nullptr) return false;
  holds_.emplace(std::string(request_id), MakeHold(*best, demand));
  return true;
}

absl::Status WorkerRegistry::CanEverHold(const DecodeDemand& demand) const {
  const uint32_t tokens = demand.prompt_tokens + std::max<uint32_t>(1, demand.max_new_tokens);
  absl::MutexLock lock(&mu_);
  int decoders = 0;
  uint32_t most_pages = 0, most_context = 0, need_pages = 0;
  for (const auto& [id, e] : workers_) {
    if (!Decodes(e.info.role) || !e.info.healthy) continue;
    const auto [total_pages, total_slots] = TotalsOf(e);
    if (total_pages == 0 && total_slots == 0) return absl::OkStatus();  // the worker judges
    ++decoders;
    need_pages = MakeHold(e, demand).life_pages;
    const uint32_t context = e.info.capacity.max_context_tokens();
    if (total_pages >= need_pages && total_slots >= 1 && (context == 0 || tokens <= context)) {
      return absl::OkStatus();
    }
    most_pages = std::max(most_pages, total_pages);
    most_context = std::max(most_context, context);
  }
  if (decoders == 0) return absl::OkStatus();
  if (most_context > 0 && tokens > most_context) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", demand.prompt_tokens, " tokens) + max_tokens (",
                     demand.max_new_tokens, ") exceed every decode worker's context (at most ",
                     most_context, " tokens); shorten the prompt or lower max_tokens"));
  }
  // INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: waiting cannot help, the request as given must
  // change (clients and the SDKs retry RESOURCE_EXHAUSTED; HTTP maps it to 429).
  return absl::InvalidArgumentError(absl::StrCat(
      "prompt (", demand.prompt_tokens, " tokens) + max_tokens (", demand.max_new_tokens, ") need ",
      need_pages, " KV pages; the largest healthy decode worker has ", most_pages,
      " in all, so the request can never be placed; lower max_tokens or shorten the prompt"));
}

void WorkerRegistry::PlaceHold(absl::string_view request_id, absl::string_view decode_id,
                               const DecodeDemand& demand) {
  absl::MutexLock lock(&mu_);
  auto w = workers_.find(std::string(decode_id));
  if (w == workers_.end()) return;
  auto it = holds_.find(request_id);
  if (it == holds_.end()) {
    holds_.emplace(std::string(request_id), MakeHold(w->second, demand));
    return;
  }
  // A new attempt: held elsewhere (or here before a failed Reserve), placed here now.
  it->second = MakeHold(w->second, demand);
}

void WorkerRegistry::ConfirmHold(absl::string_view request_id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = holds_.find(request_id);
  if (it != holds_.end()) it->second.confirmed = now;
}

void WorkerRegistry::ReleaseHold(absl::string_view request_id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = holds_.find(request_id);
  if (it == holds_.end()) return;
  const DecodeHold& hold = it->second;
  auto w = workers_.find(hold.worker_id);
  // In the worker's report: it stays counted there until a report shows it freed. Until
  // then the router credits back what the reservation took at least (prompt + 1 token;
  // decoding took more, which the next report returns).
  if (w != workers_.end() && !hold.unreported) w->second.credits.push_back({hold.now_pages, now});
  holds_.erase(it);
}

HeldTotals WorkerRegistry::Held() const {
  absl::MutexLock lock(&mu_);
  HeldTotals totals;
  for (const auto& [id, hold] : holds_) {
    ++totals.requests;
    totals.kv_pages += hold.life_pages;
  }
  return totals;
}

absl::StatusOr<WorkerInfo> WorkerRegistry::PickPrefill(uint64_t compat_hash,
                                                       const std::set<std::string>& exclude) const {
  absl::MutexLock lock(&mu_);
  const Entry* best = nullptr;
  std::tuple<uint64_t, uint32_t> best_key;
  int healthy = 0;
  for (const auto& [id, e] : workers_) {
    if (e.info.role != w::WORKER_ROLE_PREFILL || !e.info.healthy) continue;
    ++healthy;
    if (exclude.count(id) > 0) continue;
    if (compat_hash != 0 && e.info.compat_hash != 0 && e.info.compat_hash != compat_hash) continue;
    const std::tuple<uint64_t, uint32_t> key{
        std::max<uint64_t>(e.info.load.queued_prompt_tokens(), e.inflight_tokens),
        e.inflight_requests};
    if (best == nullptr || key < best_key) {
      best = &e;
      best_key = key;
    }
  }
  if (best == nullptr) {
    if (healthy == 0) return absl::UnavailableError("no healthy prefill worker is registered");
    return absl::UnavailableError(absl::StrCat(
        "no usable prefill worker: ", healthy, " healthy, ", exclude.size(),
        " already failed this request, none other with compatibility hash ", compat_hash));
  }
  return best->info;
}

void WorkerRegistry::NotePrefillStarted(absl::string_view prefill_id, uint32_t prompt_tokens) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(std::string(prefill_id));
  if (it == workers_.end()) return;
  it->second.inflight_tokens += prompt_tokens;
  it->second.inflight_requests += 1;
}

void WorkerRegistry::NotePrefillFinished(absl::string_view prefill_id, uint32_t prompt_tokens) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(std::string(prefill_id));
  if (it == workers_.end()) return;
  Entry& e = it->second;
  e.inflight_tokens -= std::min<uint64_t>(e.inflight_tokens, prompt_tokens);
  e.inflight_requests -= std::min<uint32_t>(e.inflight_requests, 1);
}

WorkerCounts WorkerRegistry::Counts() const {
  WorkerCounts counts;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : workers_) {
    switch (e.info.role) {
      case w::WORKER_ROLE_PREFILL:
        ++(e.info.healthy ? counts.prefill_healthy : counts.prefill_unhealthy);
        break;
      case w::WORKER_ROLE_COLOCATED:
        ++(e.info.healthy ? counts.colocated_healthy : counts.colocated_unhealthy);
        break;
      default:
        ++(e.info.healthy ? counts.decode_healthy : counts.decode_unhealthy);
        break;
    }
  }
  return counts;
}

int WorkerRegistry::HealthyDecodeSlots() const {
  absl::MutexLock lock(&mu_);
  int slots = 0;
  for (const auto& [id, e] : workers_) {
    if (!Decodes(e.info.role) || !e.info.healthy) continue;
    slots += static_cast<int>(TotalsOf(e).second);
  }
  return slots;
}

int32_t WorkerRegistry::MaxContextTokens() const {
  absl::MutexLock lock(&mu_);
  int32_t smallest = 0;
  for (const auto& [id, e] : workers_) {
    const int32_t c = static_cast<int32_t>(e.info.capacity.max_context_tokens());
    if (!e.info.healthy || c <= 0) continue;
    if (smallest == 0 || c < smallest) smallest = c;
  }
  return smallest;
}

uint32_t WorkerRegistry::VocabSize() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : workers_) {
    if (e.info.healthy && e.info.vocab_size > 0) return e.info.vocab_size;
  }
  return 0;
}

std::vector<int32_t> WorkerRegistry::EosTokenIds() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : workers_) {
    if (e.info.healthy && !e.info.eos_token_ids.empty()) return e.info.eos_token_ids;
  }
  return {};
}

std::string WorkerRegistry::ModelName() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : workers_) {
    if (e.info.healthy && !e.info.model.empty()) return e.info.model;
  }
  return "";
}

std::vector<WorkerInfo> WorkerRegistry::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerInfo> out;
  for (const auto& [id, e] : workers_) out.push_back(e.info);
  return out;
}

bool WorkerRegistry::IsHealthy(absl::string_view worker_id) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(std::string(worker_id));
  return it != workers_.end() && it->second.info.healthy;
}

}  // namespace gka::router
