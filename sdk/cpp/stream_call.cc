#include "sdk/cpp/stream_call.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "common/rpc/deadline.h"
#include "sdk/cpp/convert.h"

namespace gka::sdk::internal {

namespace pb = ::gka::serving::v1;

namespace {
thread_local bool in_grpc_reaction = false;
}  // namespace

bool InGrpcReaction() { return in_grpc_reaction; }
GrpcReactionScope::GrpcReactionScope() : outer_(in_grpc_reaction) { in_grpc_reaction = true; }
GrpcReactionScope::~GrpcReactionScope() { in_grpc_reaction = outer_; }

// One gRPC call of the Generate stream. Keeps itself alive (self_) until gRPC's OnDone.
class StreamCall::Attempt final : public grpc::ClientReadReactor<pb::GenerateResponse> {
 public:
  explicit Attempt(std::shared_ptr<StreamCall> call) : call_(std::move(call)) {}

  grpc::ClientContext& ctx() { return ctx_; }

  void Go(std::shared_ptr<Attempt> self) {
    self_ = std::move(self);
    call_->core_->stub().async()->Generate(&ctx_, &call_->request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    GrpcReactionScope scope;
    if (!ok) return;  // the stream ended; OnDone follows
    call_->OnResponse(response_);
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    GrpcReactionScope scope;                           // outlives `self`
    std::shared_ptr<Attempt> self = std::move(self_);  // may be the last reference
    call_->OnAttemptDone(this, status);
  }

 private:
  const std::shared_ptr<StreamCall> call_;
  grpc::ClientContext ctx_;
  pb::GenerateResponse response_;
  std::shared_ptr<Attempt> self_;
};

StreamCall::StreamCall(std::shared_ptr<Client::Core> core, pb::GenerateRequest request,
                       absl::Time deadline, const RetryPolicy& policy,
                       std::shared_ptr<CallObserver> observer)
    : core_(std::move(core)),
      request_(std::move(request)),
      deadline_(deadline),
      observer_(std::move(observer)),
      retrier_(policy, deadline) {
  result_.request_id = request_.request_id();
}

StreamCall::~StreamCall() = default;

void StreamCall::Start() { StartAttempt(); }

std::string StreamCall::request_id() const {
  absl::MutexLock lock(&mu_);
  return result_.request_id;
}

absl::Status StreamCall::CancelledLocked() const {
  return MakeError({.code = absl::StatusCode::kCancelled,
                    .message = "the call was cancelled by the client",
                    .attempts = retrier_.attempts()});
}

void StreamCall::StartAttempt() {
  std::shared_ptr<Attempt> attempt;
  {
    absl::MutexLock lock(&mu_);
    if (done_) return;
    if (cancelled_) {
      FinishLocked(CancelledLocked());
    } else {
      retrier_.BeginAttempt();
      attempt = std::make_shared<Attempt>(shared_from_this());
      core_->Prepare(attempt->ctx(), deadline_);
      current_ = attempt;
    }
  }
  // A Cancel from here on reaches the context through current_; TryCancel before the call
  // starts is remembered by gRPC and applied when it does.
  if (attempt != nullptr) attempt->Go(attempt);
  DeliverDone();
}

void StreamCall::OnResponse(const pb::GenerateResponse& response) {
  std::optional<Chunk> chunk;
  {
    absl::MutexLock lock(&mu_);
    if (!response.request_id().empty()) result_.request_id = response.request_id();
    switch (response.kind_case()) {
      case pb::GenerateResponse::kChunk: {
        Chunk c = AppendChunk(response.chunk(), &result_);
        delivered_ = true;
        if (!cancelled_) chunk = std::move(c);
        break;
      }
      case pb::GenerateResponse::kFinal:
        ApplyFinal(response.final(), &result_);
        got_final_ = true;
        break;
      case pb::GenerateResponse::kError:
        server_error_ = response.error();
        break;
      default:
        break;  // a newer server's message kind: ignore
    }
  }
  // Chunks of one attempt arrive one at a time (the next read starts after this returns).
  if (chunk) observer_->OnChunk(*chunk);
}

void StreamCall::OnAttemptDone(Attempt* attempt, const grpc::Status& status) {
  std::shared_ptr<grpc::Alarm> alarm;
  absl::Time wake;
  {
    absl::MutexLock lock(&mu_);
    if (current_.get() == attempt) current_.reset();
    if (got_final_) {
      // Complete, whatever the transport said after the Final.
      result_.attempts = retrier_.attempts();
      FinishLocked(result_);
    } else if (cancelled_) {
      FinishLocked(CancelledLocked());
    } else {
      ErrorDetails details =
          DetailsOf(status, server_error_ ? &*server_error_ : nullptr, attempt->ctx());
      const absl::Time now = absl::Now();
      std::optional<absl::Duration> wait = retrier_.NextWait(&details, delivered_, now);
      if (!wait) {
        FinishLocked(MakeError(details));
      } else {
        server_error_.reset();
        alarm_ = std::make_shared<grpc::Alarm>();
        alarm = alarm_;
        wake = now + *wait;
      }
    }
  }
  if (alarm != nullptr) {
    // Outside mu_: an alarm already due may run its callback inside Set.
    // A weak reference: the alarm (and its callback) belongs to this call, so a strong one
    // would be a cycle. Whoever waits for the outcome (Stream, CallHandle) holds the call.
    alarm->Set(rpc::ToChrono(wake), [weak = weak_from_this()](bool fired) {
      GrpcReactionScope scope;
      if (std::shared_ptr<StreamCall> self = weak.lock()) self->OnBackoffDone(fired);
    });
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      cancelled = cancelled_;
    }
    if (cancelled) alarm->Cancel();  // a Cancel that came before Set could not reach it
  }
  DeliverDone();
}

void StreamCall::OnBackoffDone(bool fired) {
  // `fired` is false only when Cancel cancelled the alarm; StartAttempt sees cancelled_.
  StartAttempt();
}

void StreamCall::Cancel() {
  std::shared_ptr<Attempt> attempt;
  std::shared_ptr<grpc::Alarm> alarm;
  {
    absl::MutexLock lock(&mu_);
    if (done_ || cancelled_) return;
    cancelled_ = true;
    attempt = current_;
    alarm = alarm_;
  }
  // Outside mu_: gRPC may complete the call inline.
  if (attempt != nullptr) {
    attempt->ctx().TryCancel();
  } else if (alarm != nullptr) {
    alarm->Cancel();
  }
}

void StreamCall::FinishLocked(absl::StatusOr<Result> outcome) {
  if (done_) return;
  done_ = true;
  outcome_ = std::move(outcome);
}

void StreamCall::DeliverDone() {
  std::optional<absl::StatusOr<Result>> outcome;
  {
    absl::MutexLock lock(&mu_);
    outcome.swap(outcome_);
  }
  if (outcome) observer_->OnDone(*std::move(outcome));
}

}  // namespace gka::sdk::internal
