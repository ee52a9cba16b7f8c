#include "router/generation.h"

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/rpc/deadline.h"
#include "common/rpc/status.h"
#include "router/admission.h"
#include "router/router_core.h"

namespace gka::router {
namespace {

namespace v1 = ::gka::serving::v1;
namespace w = ::gka::worker::v1;

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

bool RetryableCode(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kResourceExhausted;
}

}  // namespace

// One placement of the request: a reservation on `decode`, a prefill on `prefill`, a decode
// stream; or, on a colocated worker, only the decode stream (it carries the prompt). Owned by the
// Generation (so its client contexts outlive every call made with them: each call's completion
// holds a reference to the Generation).
struct Generation::Attempt {
  int number = 0;
  // The id the workers see: the request id, with "#<n>" from the second attempt on so that a
  // worker still tearing down attempt n-1 never confuses the two.
  std::string worker_request_id;
  WorkerInfo decode;
  WorkerInfo prefill;
  WorkerStubs* decode_stubs = nullptr;
  WorkerStubs* prefill_stubs = nullptr;
  // `decode` is a colocated worker: no Reserve, no Prefill; StartDecode carries the prompt.
  bool colocated = false;

  grpc::ClientContext reserve_ctx;
  w::ReserveRequest reserve_request;
  w::TransferTicket ticket;
  bool reserving = false;
  bool reserved = false;

  grpc::ClientContext prefill_ctx;
  w::PrefillRequest prefill_request;
  w::PrefillResult prefill_result;
  bool prefilling = false;
  // Counted in the registry's in-flight prefill load until the prefill ends or is dropped.
  bool prefill_counted = false;
  bool prefill_ok = false;
  bool prefill_failed = false;
  absl::Time prefill_sent;

  grpc::ClientContext decode_ctx;
  w::StartDecodeRequest decode_request;
  bool decode_open = false;
  bool decode_started = false;
  int32_t started_first_token = -1;
  bool decode_done = false;

  // Cleaned up: nothing more is started for it, late results are released.
  bool abandoned = false;

  // Every token this attempt's stream carried, in order; a move's target starts with the
  // tokens generated before the move (its StartDecodeRequest.resumed_tokens).
  std::vector<int32_t> tokens;
  // Drain. Source: asked to move, the Migrate outcome pending; its one Migrate call (a
  // ticket, or none: resume). Target: its messages wait in `parked` (and its stream's end in
  // `closed`) until the move is done and it becomes current_.
  bool migrating = false;
  bool migration_target = false;
  bool migrate_sent = false;
  std::vector<w::DecodeStreamResponse> parked;
  std::optional<absl::Status> closed;
  grpc::ClientContext migrate_ctx;
  w::MigrateRequest migrate_request;
  w::MigrateResponse migrate_response;
};

// Reads the StartDecode stream; deletes itself when the call is done, after handing the
// status to its Generation (which it keeps alive until then).
class Generation::DecodeReader : public grpc::ClientReadReactor<w::DecodeStreamResponse> {
 public:
  DecodeReader(std::shared_ptr<Generation> owner, Attempt* attempt)
      : owner_(std::move(owner)), attempt_(attempt) {}

  void Start() {
    attempt_->decode_stubs->decode->async()->StartDecode(&attempt_->decode_ctx,
                                                         &attempt_->decode_request, this);
    StartRead(&message_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    owner_->OnDecodeMessage(attempt_, message_);
    message_.Clear();
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    std::shared_ptr<Generation> owner = std::move(owner_);
    Attempt* attempt = attempt_;
    delete this;
    owner->OnDecodeClosed(attempt, status);
  }

 private:
  std::shared_ptr<Generation> owner_;
  Attempt* attempt_;
  w::DecodeStreamResponse message_;
};

Generation::Generation(RouterCore& core, std::string request_id, ResolvedRequest plan,
                       OutputText output, GenerationSink* sink, absl::Time arrival,
                       absl::Time admitting, absl::Time deadline)
    : core_(core),
      request_id_(std::move(request_id)),
      plan_(std::move(plan)),
      arrival_(arrival),
      admitting_(admitting),
      deadline_(deadline),
      sink_(sink),
      output_(std::move(output)),
      prefill_num_iter_(plan_.prefill_num_iter),
      decode_num_iter_(plan_.decode_num_iter),
      max_tokens_(plan_.max_tokens),
      router_time_(admitting - arrival) {
  core_.TrackGeneration(+1);
}

Generation::~Generation() { core_.TrackGeneration(-1); }

void Generation::Run(const std::function<void(Actions&)>& body) {
  // Keeps this alive through the actions and the delivery, whoever else lets go meanwhile.
  std::shared_ptr<Generation> self = shared_from_this();
  const absl::Time began = absl::Now();
  Actions actions;
  bool before_first_token;
  {
    absl::MutexLock lock(&mu_);
    before_first_token = !first_token_sent_;
    body(actions);
  }
  for (auto& action : actions) action();
  Deliver();
  if (!before_first_token) return;
  // Router overhead: every handler run before the first token left (the workers' time and
  // the admission queue fall between runs, so they are not in it).
  absl::MutexLock lock(&mu_);
  router_time_ += absl::Now() - began;
  if (first_token_sent_) {
    timings_.set_router_ms(Ms(router_time_));
    core_.metrics()
        .ForTier(plan_.tier->name)
        .router_overhead.Observe(absl::ToDoubleSeconds(router_time_));
  }
}

void Generation::Deliver() {
  {
    absl::MutexLock lock(&mu_);
    if (delivering_) return;  // the thread delivering now will pick ours up
    delivering_ = true;
  }
  while (true) {
    Outgoing next;
    {
      absl::MutexLock lock(&mu_);
      if (outbox_.empty()) {
        delivering_ = false;
        return;
      }
      next = std::move(outbox_.front());
      outbox_.pop_front();
    }
    if (next.response.has_value()) sink_->OnResponse(std::move(*next.response));
    if (next.finish.has_value()) sink_->OnFinish(*next.finish);
  }
}

void Generation::Enqueue(v1::GenerateResponse response) {
  response.set_request_id(request_id_);
  outbox_.push_back({.response = std::move(response)});
}

void Generation::Start(int rung) {
  const absl::Time now = absl::Now();
  Run([&](Actions& actions) {
    if (finished_) return;  // cancelled while the start was on its way
    started_ = true;
    timings_.set_admission_ms(Ms(now - admitting_));
    rung_ = rung;
    if (rung > 0 && rung <= static_cast<int>(plan_.tier->degrade_ladder.size())) {
      const Tier::Rung& r = plan_.tier->degrade_ladder[rung - 1];
      decode_num_iter_ = std::min(decode_num_iter_, r.decode_num_iter);
      if (r.prefill_num_iter >= 0)
        prefill_num_iter_ = std::min(prefill_num_iter_, r.prefill_num_iter);
      if (r.max_tokens > 0) max_tokens_ = std::min(max_tokens_, r.max_tokens);
    }
    RouterMetrics::TierSeries& m = core_.metrics().ForTier(plan_.tier->name);
    m.running.Increment();
    m.prompt_tokens.Increment(static_cast<double>(plan_.prompt.token_ids.size()));
    StartAttemptLocked(actions);
  });
}

bool Generation::WaitForFullDecodeLocked(Actions& actions) {
  // Admission placed this request because a slot was free by the router's count; a worker
  // frees a finished sequence's slot a moment after the router has seen it end (and other
  // routers share the workers), so "full" from every worker is worth a short wait first.
  constexpr int kMaxFullWaits = 6;  // 10 + 20 + 40 + 80 + 160 + 200 ms at most
  if (!core_.options().admission.enabled || full_decode_.empty() || full_waits_ >= kMaxFullWaits) {
    return false;
  }
  const absl::Duration wait =
      std::min(absl::Milliseconds(10) * (1 << full_waits_), absl::Milliseconds(200));
  const absl::Time wake = absl::Now() + wait;
  if (wake >= deadline_) return false;
  ++full_waits_;
  for (const std::string& id : full_decode_) excluded_decode_.erase(id);
  full_decode_.clear();
  auto alarm = std::make_shared<grpc::Alarm>();
  alarm_ = alarm;
  actions.push_back([alarm, wake, self = shared_from_this()] {
    alarm->Set(rpc::ToChrono(wake), [self](bool fired) {
      if (!fired) return;
      self->Run([&](Actions& next) { self->StartAttemptLocked(next); });
    });
  });
  return true;
}

void Generation::Shed(const absl::Status& status) {
  Run([&](Actions& actions) { FailLocked(status, /*retryable=*/true, actions); });
}

void Generation::StartAttemptLocked(Actions& actions) {
  if (finished_) return;
  if (static_cast<int>(attempts_.size()) >= core_.options().max_attempts + full_waits_) {
    const absl::StatusCode code =
        last_error_.ok() ? absl::StatusCode::kUnavailable : last_error_.code();
    FailLocked(absl::Status(code, absl::StrCat("gave up after ", attempts_.size(),
                                               " attempts; last: ", last_error_.message())),
               RetryableCode(code), actions);
    return;
  }
  const uint32_t prompt_tokens = static_cast<uint32_t>(plan_.prompt.token_ids.size());
  WorkerRegistry& registry = core_.registry();
  const DecodeDemand demand{.prompt_tokens = prompt_tokens,
                            .max_new_tokens = static_cast<uint32_t>(max_tokens_)};
  const std::vector<WorkerInfo> decoders =
      registry.RankDecode(request_id_, demand, excluded_decode_);
  if (decoders.empty() && WaitForFullDecodeLocked(actions)) return;
  if (decoders.empty()) {
    absl::Status why = last_error_.ok()
                           ? absl::UnavailableError("no healthy decode worker is registered")
                           : last_error_;
    if (!last_error_.ok() && !excluded_decode_.empty()) {
      why = absl::Status(last_error_.code(), absl::StrCat("no other decode worker to try; last: ",
                                                          last_error_.message()));
    }
    FailLocked(why, RetryableCode(why.code()), actions);
    return;
  }
  // The best decode worker that can serve: a colocated one alone, a decode one with a
  // prefill worker of the same compatibility hash.
  const WorkerInfo* decode = nullptr;
  absl::StatusOr<WorkerInfo> prefill = absl::UnavailableError("no decode worker");
  for (const WorkerInfo& d : decoders) {
    if (d.role == w::WORKER_ROLE_COLOCATED) {
      decode = &d;
      break;
    }
    prefill = registry.PickPrefill(d.compat_hash, excluded_prefill_);
    if (prefill.ok()) {
      decode = &d;
      break;
    }
  }
  if (decode == nullptr) {
    FailLocked(prefill.status(), true, actions);
    return;
  }

  auto attempt = std::make_unique<Attempt>();
  Attempt* a = attempt.get();
  a->number = static_cast<int>(attempts_.size()) + 1;
  a->worker_request_id = a->number == 1 ? request_id_ : absl::StrCat(request_id_, "#", a->number);
  a->decode = *decode;
  a->colocated = decode->role == w::WORKER_ROLE_COLOCATED;
  a->decode_stubs = &core_.StubsFor(a->decode.grpc_address);
  attempts_.push_back(std::move(attempt));
  current_ = a;
  // Counted now, not when the calls return, so that a burst of requests spreads over the
  // workers instead of all landing on the one that looked emptiest.
  registry.PlaceHold(request_id_, a->decode.id, demand);
  if (a->colocated) {
    // One call: the worker prefills the prompt in its own batch, then streams as usual.
    PrepareDecodeLocked(a);
    w::StartDecodeRequest& d = a->decode_request;
    d.mutable_prompt_token_ids()->Add(plan_.prompt.token_ids.begin(), plan_.prompt.token_ids.end());
    d.set_prefill_num_iter(prefill_num_iter_);
    a->prefill_sent = absl::Now();
    actions.push_back([a, self = shared_from_this()] { (new DecodeReader(self, a))->Start(); });
    return;
  }
  a->prefill = std::move(*prefill);
  a->prefill_stubs = &core_.StubsFor(a->prefill.grpc_address);
  registry.NotePrefillStarted(a->prefill.id, prompt_tokens);
  a->prefill_counted = true;

  PrepareReserveLocked(a, prompt_tokens, static_cast<uint32_t>(max_tokens_));
  actions.push_back([this, a, self = shared_from_this()] {
    a->decode_stubs->decode->async()->Reserve(
        &a->reserve_ctx, &a->reserve_request, &a->ticket,
        [self, a](grpc::Status status) { self->OnReserved(a, status); });
  });
}

void Generation::PrepareReserveLocked(Attempt* a, uint32_t prompt_tokens, uint32_t max_new_tokens) {
  w::ReserveRequest& r = a->reserve_request;
  r.set_request_id(a->worker_request_id);
  r.set_prompt_tokens(prompt_tokens);
  r.set_max_new_tokens(max_new_tokens);
  r.set_tier(plan_.tier->name);
  r.set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(core_.options().lease)));
  r.set_priority(plan_.tier->priority);
  rpc::SetDeadline(a->reserve_ctx,
                   std::min(deadline_, absl::Now() + core_.options().reserve_timeout));
  a->reserving = true;
}

void Generation::PrepareDecodeLocked(Attempt* a) {
  w::StartDecodeRequest& d = a->decode_request;
  d.set_request_id(a->worker_request_id);
  d.set_transfer_id(a->ticket.transfer_id());
  *d.mutable_sampling() = plan_.sampling;
  // Counted from the first generated token, a moved sequence's included.
  d.set_max_new_tokens(static_cast<uint32_t>(max_tokens_));
  d.set_decode_num_iter(decode_num_iter_);
  d.set_priority(plan_.tier->priority);
  d.set_tier(plan_.tier->name);
  // A colocated worker's sequences finish where they run when it drains (moves go between
  // decode workers: the hand-off's target must take Reserve).
  d.set_accepts_migration(!a->colocated);
  if (a->migration_target) d.mutable_resumed_tokens()->Add(a->tokens.begin(), a->tokens.end());
  rpc::SetDeadline(a->decode_ctx, deadline_);
  a->decode_open = true;
}

void Generation::OnReserved(Attempt* a, const grpc::Status& grpc_status) {
  Run([&](Actions& actions) {
    a->reserving = false;
    const absl::Status status = rpc::FromGrpcStatus(
        grpc_status,
        absl::StrCat("Reserve on decode worker ", a->decode.id, " (", a->decode.grpc_address, ")"));
    if (status.ok()) a->reserved = true;
    if (finished_ || a->abandoned) {
      // Cleaned up while the reservation was in flight: give it back.
      if (status.ok()) {
        a->abandoned = false;
        CleanupLocked(a, "request ended while reserving", actions);
      }
      return;
    }
    if (!status.ok()) {
      if (RetryableCode(status.code())) {
        DecodeRefusedLocked(a, status, actions);
      } else {
        FailLocked(status, false, actions);
      }
      return;
    }
    // The worker holds it now: its reports from here on count it.
    core_.registry().ConfirmHold(request_id_, absl::Now());

    // Reserved: prefill with the ticket and, concurrently, open the decode stream (it waits
    // for the transfer), so the first decode step follows the transfer without a round trip.
    w::PrefillRequest& p = a->prefill_request;
    p.set_request_id(a->worker_request_id);
    p.mutable_token_ids()->Add(plan_.prompt.token_ids.begin(), plan_.prompt.token_ids.end());
    *p.mutable_sampling() = plan_.sampling;
    p.set_prefill_num_iter(prefill_num_iter_);
    *p.mutable_ticket() = a->ticket;
    p.set_priority(plan_.tier->priority);
    p.set_tier(plan_.tier->name);
    rpc::SetDeadline(a->prefill_ctx, deadline_);
    a->prefilling = true;
    a->prefill_sent = absl::Now();

    PrepareDecodeLocked(a);

    std::shared_ptr<Generation> self = shared_from_this();
    actions.push_back([a, self] {
      a->prefill_stubs->prefill->async()->Prefill(
          &a->prefill_ctx, &a->prefill_request, &a->prefill_result,
          [self, a](grpc::Status status) { self->OnPrefilled(a, status); });
    });
    actions.push_back([a, self] { (new DecodeReader(self, a))->Start(); });
  });
}

void Generation::DecodeRefusedLocked(Attempt* a, const absl::Status& status, Actions& actions) {
  excluded_decode_.insert(a->decode.id);
  const bool full = status.code() == absl::StatusCode::kResourceExhausted;
  if (full) full_decode_.insert(a->decode.id);
  last_error_ = status;
  core_.metrics().CountRetry(plan_.tier->name, full ? kRetryDecodeFull : kRetryDecodeUnavailable);
  a->abandoned = true;
  UncountPrefillLocked(a);
  StartAttemptLocked(actions);
}

void Generation::PrefillDoneLocked(Attempt* a, double worker_queue_ms, double prefill_ms,
                                   int32_t num_iter) {
  if (num_iter != 0) prefill_num_iter_ = num_iter;
  const double queue_ms = Ms(a->prefill_sent - arrival_) + worker_queue_ms;
  timings_.set_queue_ms(queue_ms);
  timings_.set_prefill_ms(prefill_ms);
  RouterMetrics::TierSeries& m = core_.metrics().ForTier(plan_.tier->name);
  m.queue.Observe(queue_ms / 1000.0);
  m.prefill_num_iter.Observe(prefill_num_iter_);
}

void Generation::OnPrefilled(Attempt* a, const grpc::Status& grpc_status) {
  Run([&](Actions& actions) {
    a->prefilling = false;
    UncountPrefillLocked(a);
    if (finished_ || a->abandoned) return;
    const absl::Status status =
        rpc::FromGrpcStatus(grpc_status, absl::StrCat("Prefill on prefill worker ", a->prefill.id,
                                                      " (", a->prefill.grpc_address, ")"));
    if (!status.ok()) {
      PrefillFailedLocked(a, status,
                          status.code() == absl::StatusCode::kResourceExhausted
                              ? kRetryPrefillExhausted
                              : kRetryPrefillUnavailable,
                          actions);
      return;
    }
    a->prefill_ok = true;
    const w::PrefillResult& r = a->prefill_result;
    prefill_worker_id_ = r.prefill_worker_id().empty() ? a->prefill.id : r.prefill_worker_id();
    PrefillDoneLocked(a, r.queue_ms(), r.prefill_ms(), r.prefill_num_iter());
    timings_.set_transfer_ms(r.transfer().transfer_ms());
    if (!first_token_sent_) {
      EmitFirstTokenLocked(a, r.first_token(), r.has_first_logprob() ? &r.first_logprob() : nullptr,
                           actions);
    }
  });
}

void Generation::PrefillFailedLocked(Attempt* a, const absl::Status& status,
                                     absl::string_view reason, Actions& actions) {
  a->prefill_failed = true;
  if (a->decode_started) {
    // The transfer was verified before the failure: decoding goes on without the result.
    GKA_LOG(WARNING) << request_id_ << ": " << status << " (after the hand-off; decoding on)";
    if (!first_token_sent_) EmitFirstTokenLocked(a, a->started_first_token, nullptr, actions);
    return;
  }
  if (RetryableCode(status.code())) {
    excluded_prefill_.insert(a->prefill.id);
    if (RetryLocked(a, status, reason, actions)) return;
  }
  if (RetryDataLossLocked(a, status, actions)) return;
  const bool retryable = RetryableCode(status.code());
  FailLocked(status, retryable, actions);
}

bool Generation::RetryDataLossLocked(Attempt* a, const absl::Status& status, Actions& actions) {
  // The decode worker refused the transferred state (its checksum, seen through the Prefill
  // call or the decode stream, whichever came first): a corrupting path, not the request's
  // fault. Place it once more, on other workers; a second DATA_LOSS ends it.
  if (status.code() != absl::StatusCode::kDataLoss || data_loss_retried_) return false;
  data_loss_retried_ = true;
  excluded_prefill_.insert(a->prefill.id);
  excluded_decode_.insert(a->decode.id);
  return RetryLocked(a, status, kRetryTransferDataLoss, actions);
}

bool Generation::RetryLocked(Attempt* a, const absl::Status& why, absl::string_view reason,
                             Actions& actions) {
  if (first_token_sent_ || completion_tokens_ > 0) return false;
  GKA_LOG(WARNING) << request_id_ << ": attempt " << a->number << " failed (" << why
                   << "); placing it again";
  last_error_ = why;
  core_.metrics().CountRetry(plan_.tier->name, reason);
  CleanupLocked(a, absl::StrCat("retrying elsewhere: ", why.message()), actions);
  held_.clear();
  StartAttemptLocked(actions);
  return true;
}

void Generation::OnDecodeMessage(Attempt* a, const w::DecodeStreamResponse& message) {
  Run([&](Actions& actions) {
    if (finished_ || a->abandoned) return;
    if (message.kind_case() == w::DecodeStreamResponse::kStarted && !a->migration_target) {
      a->tokens.push_back(message.started().first_token());
    } else if (message.kind_case() == w::DecodeStreamResponse::kTokens) {
      a->tokens.insert(a->tokens.end(), message.tokens().token_ids().begin(),
                       message.tokens().token_ids().end());
    }
    if (a != current_) {
      if (a == moving_) a->parked.push_back(message);  // relayed once the move is done
      return;
    }
    switch (message.kind_case()) {
      case w::DecodeStreamResponse::kMigrationNeeded:
        StartMigrationLocked(a, message.migration_needed(), actions);
        return;
      case w::DecodeStreamResponse::kMigrated:
        return;  // the source's last message; the Migrate reply switches
      default:
        ProcessDecodeLocked(a, message, actions);
    }
  });
}

// --- drain: moving a running sequence ----------------------------------------------------

void Generation::StartMigrationLocked(Attempt* a, const w::MigrationNeeded& need,
                                      Actions& actions) {
  const uint32_t prompt = static_cast<uint32_t>(plan_.prompt.token_ids.size());
  const uint32_t g = need.generated_tokens();
  absl::Status why;
  if (moving_ != nullptr || a->migrating || a->migrate_sent) {
    why = absl::FailedPreconditionError("a move is already under way");
  } else if (!first_token_sent_ || !held_.empty()) {
    why = absl::FailedPreconditionError("its first token has not reached the client yet");
  } else if (g < 1 || a->tokens.size() != g || need.fed_tokens() != prompt + g - 1 ||
             completion_tokens_ != g) {
    // Moving it would resume from another step than the client has seen: never.
    why = absl::FailedPreconditionError(absl::StrCat(
        "the worker has generated ", g, " tokens (", need.fed_tokens(), " fed), the stream carried ",
        a->tokens.size(), " and the client got ", completion_tokens_));
  } else if (g >= static_cast<uint32_t>(max_tokens_)) {
    why = absl::FailedPreconditionError("it has no tokens left to generate");
  }
  const WorkerInfo* target = nullptr;
  std::vector<WorkerInfo> decoders;
  if (why.ok()) {
    std::set<std::string> exclude = excluded_decode_;
    exclude.insert(a->decode.id);
    const DecodeDemand demand{.prompt_tokens = need.fed_tokens(),
                              .max_new_tokens = static_cast<uint32_t>(max_tokens_) - (g - 1)};
    decoders = core_.registry().RankDecode(request_id_, demand, exclude);
    for (const WorkerInfo& d : decoders) {
      // The source writes its state in its own layout: the target must read the same format.
      if (d.role == w::WORKER_ROLE_DECODE && d.compat_hash == a->decode.compat_hash) {
        target = &d;
        break;
      }
    }
    if (target == nullptr) why = absl::UnavailableError("no other compatible decode worker");
  }
  if (!why.ok()) {
    MigrationFailedLocked(a, nullptr, why, actions);
    return;
  }
  auto attempt = std::make_unique<Attempt>();
  Attempt* m = attempt.get();
  m->number = static_cast<int>(attempts_.size()) + 1;
  m->worker_request_id = absl::StrCat(request_id_, "#", m->number);
  m->decode = *target;
  m->prefill = a->prefill;
  m->decode_stubs = &core_.StubsFor(m->decode.grpc_address);
  m->prefill_stubs = a->prefill_stubs;
  m->tokens = a->tokens;
  m->migration_target = true;
  m->prefill_ok = true;
  attempts_.push_back(std::move(attempt));
  moving_ = m;
  a->migrating = true;
  GKA_LOG(INFO) << request_id_ << ": decode worker " << a->decode.id << " drains; moving the "
                << "sequence after " << g << " tokens to " << m->decode.id;

  PrepareReserveLocked(m, need.fed_tokens(), static_cast<uint32_t>(max_tokens_) - (g - 1));
  actions.push_back([this, a, m, self = shared_from_this()] {
    m->decode_stubs->decode->async()->Reserve(
        &m->reserve_ctx, &m->reserve_request, &m->ticket,
        [self, a, m](grpc::Status status) { self->OnMigrationReserved(a, m, status); });
  });
}

void Generation::OnMigrationReserved(Attempt* a, Attempt* m, const grpc::Status& grpc_status) {
  Run([&](Actions& actions) {
    m->reserving = false;
    const absl::Status status = rpc::FromGrpcStatus(
        grpc_status,
        absl::StrCat("Reserve on decode worker ", m->decode.id, " (", m->decode.grpc_address, ")"));
    if (status.ok()) m->reserved = true;
    if (finished_ || m->abandoned) {
      if (status.ok()) {
        m->abandoned = false;
        CleanupLocked(m, "request ended while reserving", actions);
      }
      return;
    }
    if (!status.ok()) {
      MigrationFailedLocked(a, m, status, actions);
      return;
    }
    // The target's stream opens now (it waits for the state, like after a prefill); the
    // source sends the state.
    PrepareDecodeLocked(m);
    std::shared_ptr<Generation> self = shared_from_this();
    actions.push_back([m, self] { (new DecodeReader(self, m))->Start(); });
    PrepareMigrateLocked(a, &m->ticket);
    actions.push_back([this, a, m, self] { SendMigrate(a, m); });
  });
}

void Generation::PrepareMigrateLocked(Attempt* a, const w::TransferTicket* ticket) {
  a->migrate_sent = true;
  a->migrate_request.set_request_id(a->worker_request_id);
  a->migrate_request.set_transfer_id(a->ticket.transfer_id());
  if (ticket != nullptr) *a->migrate_request.mutable_ticket() = *ticket;
  // Bounded by the target's lease: the source cannot start writing after it.
  rpc::SetDeadline(a->migrate_ctx,
                   std::min(deadline_, absl::Now() + core_.options().lease + absl::Seconds(2)));
}

void Generation::SendMigrate(Attempt* a, Attempt* m) {
  a->decode_stubs->decode->async()->Migrate(
      &a->migrate_ctx, &a->migrate_request, &a->migrate_response,
      [a, m, self = shared_from_this()](grpc::Status status) {
        if (m != nullptr) {
          self->OnMigrated(a, m, status);
        } else if (!status.ok()) {
          GKA_LOG(DEBUG) << self->request_id_ << ": Migrate (resume) on " << a->decode.id << ": "
                         << status.error_message();
        }
      });
}

void Generation::OnMigrated(Attempt* a, Attempt* m, const grpc::Status& grpc_status) {
  Run([&](Actions& actions) {
    if (finished_) return;
    absl::Status status = rpc::FromGrpcStatus(
        grpc_status,
        absl::StrCat("Migrate on decode worker ", a->decode.id, " (", a->decode.grpc_address, ")"));
    if (status.ok() && m->abandoned) status = absl::AbortedError("the target was given up");
    if (!status.ok()) {
      MigrationFailedLocked(a, m, status, actions);
      return;
    }
    // The target holds the verified state and the source has let the sequence go.
    core_.metrics().CountMigration(plan_.tier->name, true);
    moving_ = nullptr;
    a->migrating = false;
    a->abandoned = true;  // nothing to free there; its stream ends by itself
    a->decode_done = true;
    migrated_from_.push_back(a->decode.id);
    current_ = m;
    // The request's room now lies on the target (prompt' and what is left to generate).
    const DecodeDemand demand{.prompt_tokens = m->reserve_request.prompt_tokens(),
                              .max_new_tokens = m->reserve_request.max_new_tokens()};
    core_.registry().PlaceHold(request_id_, m->decode.id, demand);
    core_.registry().ConfirmHold(request_id_, absl::Now());
    GKA_LOG(INFO) << request_id_ << ": moved from " << a->decode.id << " to " << m->decode.id;
    std::vector<w::DecodeStreamResponse> parked = std::move(m->parked);
    m->parked.clear();
    for (const w::DecodeStreamResponse& message : parked) {
      if (finished_ || current_ != m) return;
      if (message.kind_case() == w::DecodeStreamResponse::kMigrationNeeded) {
        StartMigrationLocked(m, message.migration_needed(), actions);
      } else if (message.kind_case() != w::DecodeStreamResponse::kMigrated) {
        ProcessDecodeLocked(m, message, actions);
      }
    }
    if (!finished_ && m->closed.has_value() && !m->decode_done && !m->migrating) {
      absl::Status closed = *m->closed;
      if (closed.ok()) closed = absl::UnavailableError("the stream ended without DecodeDone");
      DecodeFailedLocked(m, closed, actions);
    }
  });
}

void Generation::MigrationFailedLocked(Attempt* a, Attempt* m, const absl::Status& why,
                                       Actions& actions) {
  core_.metrics().CountMigration(plan_.tier->name, false);
  GKA_LOG(WARNING) << request_id_ << ": not moved from decode worker " << a->decode.id << " ("
                   << why << "); it finishes there";
  if (m != nullptr && moving_ == m) moving_ = nullptr;
  a->migrating = false;
  if (m != nullptr) CleanupLocked(m, "the move failed", actions);
  if (!a->migrate_sent) {
    // The source waits paused: resume it now rather than after its own timeout.
    PrepareMigrateLocked(a, nullptr);
    actions.push_back([this, a, self = shared_from_this()] { SendMigrate(a, nullptr); });
  }
  if (!a->decode_open && !a->decode_done && !a->abandoned && current_ == a) {
    DecodeFailedLocked(a, absl::UnavailableError("the stream ended while the sequence moved"),
                       actions);
  }
}

void Generation::ProcessDecodeLocked(Attempt* a, const w::DecodeStreamResponse& message,
                                     Actions& actions) {
  if (message.kind_case() == w::DecodeStreamResponse::kAccepted) {
    // A colocated worker queued the prompt: its reports from here on count it.
    core_.registry().ConfirmHold(request_id_, absl::Now());
    return;
  }
  if (message.kind_case() == w::DecodeStreamResponse::kStarted && a->colocated) {
    // The worker prefilled the prompt itself: DecodeStarted is the prefill's result.
    const w::DecodeStarted& s = message.started();
    a->decode_started = true;
    a->started_first_token = s.first_token();
    prefill_worker_id_ = a->decode.id;
    PrefillDoneLocked(a, s.queue_ms(), s.prefill_ms(), s.prefill_num_iter());
    if (!first_token_sent_) {
      EmitFirstTokenLocked(a, s.first_token(), s.has_first_logprob() ? &s.first_logprob() : nullptr,
                           actions);
    }
    return;
  }
  if (message.kind_case() == w::DecodeStreamResponse::kStarted) {
    a->decode_started = true;
    a->started_first_token = message.started().first_token();
    if (timings_.transfer_ms() == 0) timings_.set_transfer_ms(message.started().transfer_ms());
    // The prefill result normally brings the first token (with its logprob); without
    // logprobs there is no reason to wait for it.
    if (!first_token_sent_ && (a->prefill_failed || !plan_.sampling.logprobs())) {
      EmitFirstTokenLocked(a, a->started_first_token, nullptr, actions);
    }
    return;
  }
  if (!first_token_sent_) {
    // The decode worker is done even if the client has not seen it yet (the stream may close
    // before the prefill result arrives).
    if (message.kind_case() == w::DecodeStreamResponse::kDone) a->decode_done = true;
    held_.push_back(message);
    return;
  }
  if (message.kind_case() == w::DecodeStreamResponse::kTokens) {
    const w::TokenBatch& batch = message.tokens();
    std::vector<int32_t> ids(batch.token_ids().begin(), batch.token_ids().end());
    std::vector<const v1::TokenLogprob*> logprobs;
    for (const v1::TokenLogprob& lp : batch.logprobs()) logprobs.push_back(&lp);
    EmitTokensLocked(a, ids, logprobs, actions);
  } else if (message.kind_case() == w::DecodeStreamResponse::kDone) {
    DecodeDoneLocked(a, message.done(), actions);
  }
}

void Generation::OnDecodeClosed(Attempt* a, const grpc::Status& grpc_status) {
  Run([&](Actions& actions) {
    a->decode_open = false;
    if (finished_ || a->abandoned || a->decode_done) return;
    if (a->migrating) return;  // the Migrate outcome decides (MigrationFailedLocked)
    if (a == moving_) {
      a->closed = rpc::FromGrpcStatus(grpc_status);  // judged once the move is done
      return;
    }
    absl::Status status = rpc::FromGrpcStatus(grpc_status);
    if (status.ok()) status = absl::UnavailableError("the stream ended without DecodeDone");
    if (a->colocated && !a->decode_started &&
        status.code() == absl::StatusCode::kResourceExhausted) {
      // A colocated worker's StartDecode is its Reserve: full means try another one.
      DecodeRefusedLocked(a, status, actions);
      return;
    }
    DecodeFailedLocked(a, status, actions);
  });
}

void Generation::DecodeFailedLocked(Attempt* a, const absl::Status& status, Actions& actions) {
  const std::string where =
      absl::StrCat("decode worker ", a->decode.id, " (", a->decode.grpc_address, ")");
  if (status.code() == absl::StatusCode::kDeadlineExceeded && absl::Now() >= deadline_) {
    FailLocked(base::Annotate(status, where), false, actions);
    return;
  }
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    // The router sent something the worker refused: a bug here, not a reason to retry.
    FailLocked(absl::InternalError(absl::StrCat(where, " refused the request: ", status.message())),
               false, actions);
    return;
  }
  if (status.code() == absl::StatusCode::kDataLoss) {
    if (RetryDataLossLocked(a, status, actions)) return;
    FailLocked(base::Annotate(status, where), false, actions);
    return;
  }
  // A worker that died or gave up mid-stream: retry while the client has seen nothing,
  // otherwise a retryable UNAVAILABLE.
  const absl::Status failure = absl::UnavailableError(absl::StrCat(
      where, " failed: ", absl::StatusCodeToString(status.code()), ": ", status.message()));
  excluded_decode_.insert(a->decode.id);
  if (RetryLocked(a, failure, kRetryDecodeUnavailable, actions)) return;
  FailLocked(failure, true, actions);
}

void Generation::OnWorkerLost(const std::string& worker_id) {
  Run([&](Actions& actions) {
    Attempt* a = current_;
    if (finished_ || a == nullptr || a->abandoned) return;
    const absl::Status lost =
        absl::UnavailableError(absl::StrCat("worker ", worker_id, " stopped sending heartbeats"));
    if (a->decode.id == worker_id && (a->reserving || a->reserved || a->colocated) &&
        !a->decode_done) {
      DecodeFailedLocked(a, lost, actions);
    } else if (a->prefill.id == worker_id && a->prefilling && !a->decode_started) {
      excluded_prefill_.insert(worker_id);
      if (!RetryLocked(a, lost, kRetryPrefillLost, actions)) FailLocked(lost, true, actions);
    }
  });
}

void Generation::EmitFirstTokenLocked(Attempt* a, int32_t token, const v1::TokenLogprob* logprob,
                                      Actions& actions) {
  first_token_sent_ = true;
  const absl::Duration ttft = absl::Now() - arrival_;
  timings_.set_ttft_ms(Ms(ttft));
  core_.metrics().ForTier(plan_.tier->name).ttft.Observe(absl::ToDoubleSeconds(ttft));
  EmitTokensLocked(a, {token}, {logprob}, actions);
  // Replay what the decode stream sent meanwhile.
  std::vector<w::DecodeStreamResponse> held = std::move(held_);
  held_.clear();
  for (const w::DecodeStreamResponse& m : held) {
    if (finished_) break;
    ProcessDecodeLocked(a, m, actions);
  }
}

void Generation::EmitTokensLocked(Attempt* a, const std::vector<int32_t>& ids,
                                  const std::vector<const v1::TokenLogprob*>& logprobs,
                                  Actions& actions) {
  if (finished_) return;
  v1::GenerateResponse response;
  v1::Chunk* chunk = response.mutable_chunk();
  std::string text;
  int stop_index = -1;
  const text::Tokenizer* tokenizer = core_.tokenizer();
  for (size_t i = 0; i < ids.size(); ++i) {
    // A worker past max_tokens is ignored rather than relayed.
    if (completion_tokens_ >= static_cast<uint32_t>(max_tokens_)) break;
    ++completion_tokens_;
    chunk->add_token_ids(ids[i]);
    if (plan_.sampling.logprobs()) {
      v1::TokenLogprob* lp = chunk->add_logprobs();
      if (i < logprobs.size() && logprobs[i] != nullptr) *lp = *logprobs[i];
      lp->set_token_id(ids[i]);
      if (tokenizer != nullptr) {
        for (v1::TopLogprob& top : *lp->mutable_top()) {
          absl::StatusOr<std::string> t = tokenizer->Decode({top.token_id()});
          if (t.ok()) top.set_text(*t);
        }
      }
    }
    OutputText::Piece piece = output_.Add(ids[i]);
    text += piece.text;
    if (piece.stopped) {
      stop_index = piece.stop_index;
      break;
    }
  }
  const int n = chunk->token_ids_size();
  if (n > 0 || !text.empty()) {
    chunk->set_text(std::move(text));
    chunk->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(plan_.prompt.token_ids.size()));
    chunk->mutable_usage()->set_completion_tokens(completion_tokens_);
    Enqueue(std::move(response));
    RouterMetrics::TierSeries& m = core_.metrics().ForTier(plan_.tier->name);
    m.generated_tokens.Increment(n);
    const absl::Time now = absl::Now();
    if (last_token_time_.has_value() && n > 0) {
      const double per_token = absl::ToDoubleSeconds(now - *last_token_time_) / n;
      for (int i = 0; i < n; ++i) m.itl.Observe(per_token);
      core_.admission().ObserveItl(plan_.tier->name, absl::Seconds(per_token));
    }
    if (n > 0) last_token_time_ = now;
  }
  if (stop_index >= 0) {
    FinishFinalLocked(v1::FINISH_REASON_STOP, output_.stop_strings()[stop_index], std::nullopt,
                      actions);
  }
}

void Generation::DecodeDoneLocked(Attempt* a, const w::DecodeDone& done, Actions& actions) {
  a->decode_done = true;
  timings_.set_decode_ms(done.decode_ms());
  const int32_t placed_num_iter = decode_num_iter_;
  if (done.decode_num_iter() != 0) decode_num_iter_ = done.decode_num_iter();
  // The worker lowered the running sequence further (the ladder stepped down meanwhile; the
  // worker reports the fewest iterations used): report the rung whose cap that was.
  const std::vector<Tier::Rung>& ladder = plan_.tier->degrade_ladder;
  if (decode_num_iter_ < placed_num_iter) {
    for (int k = rung_ + 1; k <= static_cast<int>(ladder.size()); ++k) {
      if (ladder[k - 1].decode_num_iter <= decode_num_iter_) {
        rung_ = k;
        break;
      }
    }
  }
  OutputText::Piece last = output_.Finish();
  if (!last.text.empty()) {
    v1::GenerateResponse response;
    v1::Chunk* chunk = response.mutable_chunk();
    chunk->set_text(std::move(last.text));
    chunk->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(plan_.prompt.token_ids.size()));
    chunk->mutable_usage()->set_completion_tokens(completion_tokens_);
    Enqueue(std::move(response));
  }
  if (last.stopped) {
    FinishFinalLocked(v1::FINISH_REASON_STOP, output_.stop_strings()[last.stop_index], std::nullopt,
                      actions);
    return;
  }
  switch (done.finish_reason()) {
    case v1::FINISH_REASON_STOP:
    case v1::FINISH_REASON_LENGTH:
      FinishFinalLocked(done.finish_reason(), "",
                        done.has_matched_stop_token_id()
                            ? std::optional<int32_t>(done.matched_stop_token_id())
                            : std::nullopt,
                        actions);
      return;
    case v1::FINISH_REASON_ABORT:
      FailLocked(
          absl::AbortedError(absl::StrCat("decode worker ", a->decode.id, " aborted the sequence")),
          true, actions);
      return;
    default:
      FailLocked(absl::InternalError(absl::StrCat("decode worker ", a->decode.id,
                                                  " reported an error for this request")),
                 false, actions);
      return;
  }
}

void Generation::FinishFinalLocked(v1::FinishReason reason, const std::string& matched_stop,
                                   std::optional<int32_t> matched_stop_token_id, Actions& actions) {
  if (finished_) return;
  if (current_ != nullptr && !current_->decode_done) {
    CleanupLocked(current_,
                  reason == v1::FINISH_REASON_ABORT ? "aborted by the client" : "stop string",
                  actions);
  }
  const absl::Duration total = absl::Now() - arrival_;
  timings_.set_total_ms(Ms(total));
  v1::GenerateResponse response;
  v1::Final* final = response.mutable_final();
  final->set_finish_reason(reason);
  final->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(plan_.prompt.token_ids.size()));
  final->mutable_usage()->set_completion_tokens(completion_tokens_);
  *final->mutable_timings() = timings_;
  v1::ServedBy* served = final->mutable_served_by();
  served->set_router_id(core_.options().router_id);
  if (current_ != nullptr) {
    served->set_prefill_worker_id(prefill_worker_id_.empty() ? current_->prefill.id
                                                             : prefill_worker_id_);
    served->set_decode_worker_id(current_->decode.id);
  }
  for (const std::string& id : migrated_from_) served->add_migrated_from(id);
  final->set_tier(plan_.tier->name);
  final->set_prefill_num_iter(prefill_num_iter_);
  final->set_decode_num_iter(decode_num_iter_);
  final->set_degrade_rung(rung_);
  if (!matched_stop.empty()) final->set_matched_stop(matched_stop);
  if (matched_stop_token_id.has_value()) final->set_matched_stop_token_id(*matched_stop_token_id);
  Enqueue(std::move(response));
  RouterMetrics::TierSeries& m = core_.metrics().ForTier(plan_.tier->name);
  m.e2e.Observe(absl::ToDoubleSeconds(total));
  m.decode_num_iter.Observe(decode_num_iter_);
  outbox_.push_back({.finish = absl::OkStatus()});
  EndLocked(absl::StatusCode::kOk, actions);
}

void Generation::FailLocked(const absl::Status& status, bool retryable, Actions& actions) {
  if (finished_) return;
  if (current_ != nullptr) CleanupLocked(current_, status.message(), actions);
  GKA_LOG(INFO) << request_id_ << ": failed: " << status << (retryable ? " (retryable)" : "");
  v1::GenerateResponse response;
  v1::Error* error = response.mutable_error();
  error->set_code(static_cast<int32_t>(status.code()));
  error->set_message(std::string(status.message()));
  error->set_retryable(retryable);
  // Every RESOURCE_EXHAUSTED carries a hint: admission's own, or (decode workers full on
  // every attempt) the drain-rate estimate for this tier.
  std::optional<absl::Duration> retry_after = RetryAfterOf(status);
  if (!retry_after.has_value() && status.code() == absl::StatusCode::kResourceExhausted) {
    retry_after = core_.admission().RetryAfter(*plan_.tier, absl::Now());
  }
  if (retry_after.has_value()) {
    error->set_retry_after_ms(
        static_cast<uint32_t>(std::max<int64_t>(1, absl::ToInt64Milliseconds(*retry_after))));
  }
  Enqueue(std::move(response));
  outbox_.push_back({.finish = status});
  EndLocked(status.code(), actions);
}

void Generation::Cancel() {
  Run([&](Actions& actions) {
    if (finished_) return;
    const bool expired = absl::Now() >= deadline_;
    const absl::Status status = expired ? absl::DeadlineExceededError("the call's deadline passed")
                                        : absl::CancelledError("the client cancelled the call");
    if (current_ != nullptr) CleanupLocked(current_, status.message(), actions);
    outbox_.push_back({.finish = status});
    EndLocked(status.code(), actions);
  });
}

void Generation::Abort() {
  Run([&](Actions& actions) {
    FinishFinalLocked(v1::FINISH_REASON_ABORT, "", std::nullopt, actions);
  });
}

void Generation::EndLocked(absl::StatusCode code, Actions& actions) {
  finished_ = true;
  if (moving_ != nullptr) {
    // A move in progress: its target's reservation goes too.
    CleanupLocked(moving_, "the request ended while it moved", actions);
    moving_ = nullptr;
  }
  core_.metrics().CountFinished(plan_.tier->name, code);
  if (started_) core_.metrics().ForTier(plan_.tier->name).running.Decrement();
  actions.push_back([this, self = shared_from_this()] { core_.Forget(request_id_, this); });
}

void Generation::UncountPrefillLocked(Attempt* a) {
  if (!a->prefill_counted) return;
  a->prefill_counted = false;
  core_.registry().NotePrefillFinished(a->prefill.id,
                                       static_cast<uint32_t>(plan_.prompt.token_ids.size()));
}

void Generation::CleanupLocked(Attempt* a, absl::string_view reason, Actions& actions) {
  if (!a->prefilling) UncountPrefillLocked(a);  // else when the cancelled call returns
  if (a->abandoned) return;
  a->abandoned = true;
  std::shared_ptr<Generation> self = shared_from_this();
  if (a->reserving) actions.push_back([a, self] { a->reserve_ctx.TryCancel(); });
  if (a->prefilling) actions.push_back([a, self] { a->prefill_ctx.TryCancel(); });
  if ((a->reserved || (a->colocated && a->decode_open)) && !a->decode_done) {
    // Abort first (the worker ends the sequence cleanly), then cancel the stream.
    actions.push_back([this, a, self] { SendAbort(a); });
    if (a->reserved && !a->decode_started) {
      actions.push_back(
          [this, a, self, why = std::string(reason)] { SendRelease(a, std::move(why)); });
    }
  } else if (a->decode_open) {
    actions.push_back([a, self] { a->decode_ctx.TryCancel(); });
  }
}

void Generation::SendAbort(Attempt* a) {
  struct Call {
    grpc::ClientContext ctx;
    v1::AbortRequest request;
    v1::AbortResponse response;
  };
  auto* call = new Call;
  call->request.set_request_id(a->worker_request_id);
  rpc::SetTimeout(call->ctx, core_.options().cleanup_timeout);
  a->decode_stubs->decode->async()->Abort(
      &call->ctx, &call->request, &call->response,
      [call, a, self = shared_from_this()](grpc::Status status) {
        if (!status.ok()) {
          GKA_LOG(DEBUG) << self->request_id_ << ": Abort on " << a->decode.id << ": "
                         << status.error_message();
        }
        delete call;
        a->decode_ctx.TryCancel();  // the stream may still be open; no-op when it is not
      });
}

void Generation::SendRelease(Attempt* a, std::string reason) {
  struct Call {
    grpc::ClientContext ctx;
    w::ReleaseRequest request;
    w::ReleaseResponse response;
  };
  auto* call = new Call;
  call->request.set_request_id(a->worker_request_id);
  call->request.set_transfer_id(a->ticket.transfer_id());
  call->request.set_reason(std::move(reason));
  rpc::SetTimeout(call->ctx, core_.options().cleanup_timeout);
  a->decode_stubs->decode->async()->Release(
      &call->ctx, &call->request, &call->response,
      [call, a, self = shared_from_this()](grpc::Status status) {
        if (!status.ok()) {
          GKA_LOG(WARNING) << self->request_id_ << ": Release on " << a->decode.id << ": "
                           << status.error_message()
                           << " (the worker's lease expiry frees the reservation)";
        }
        delete call;
      });
}

}  // namespace gka::router
