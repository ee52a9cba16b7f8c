// One admitted request, run across the workers: Reserve on a decode worker -> Prefill (with
// the transfer ticket) on a prefill worker, concurrently StartDecode on the decode worker ->
// relay tokens as text to a GenerationSink. On a colocated worker (WORKER_ROLE_COLOCATED) the
// attempt is StartDecode alone, carrying the prompt; its DecodeStarted brings the first token.
//
// Owns: the request's attempts (each a reservation, a prefill call and a decode stream,
// with their gRPC client contexts), its output text (detokenizer + stop strings), usage and
// timings. Retries on another worker while nothing has reached the client: a prefill worker
// that fails before handing off (UNAVAILABLE, RESOURCE_EXHAUSTED, or heartbeats lost), a
// decode worker that is full or dies before the first token. A draining decode worker's
// running sequence moves to another decode worker (MigrationNeeded on its stream -> Reserve
// prompt' on the target -> Migrate on the source with that ticket, StartDecode on the target
// with the tokens so far): the client's stream goes on from the target with no gap and no
// duplicate, and any failure leaves the sequence where it was. Every way out — final message,
// stop string, public Abort, client cancellation, deadline, worker failure — aborts or
// releases what the workers still hold (fail closed: Release and Abort are idempotent on
// the workers). A decode worker dying after tokens were sent ends the request with a
// retryable UNAVAILABLE, never a hang.
// Must not depend on the gRPC server side: the sink is the only way out, so the gRPC
// service and the future HTTP gateway share it.
//
//   class MySink : public GenerationSink { ... };      // OnResponse..., then OnFinish
//   std::shared_ptr<Generation> g = core.StartGeneration(request, &sink, deadline);
//   ... on client disconnect: g->Cancel();
//
// Thread-safety: all public methods are thread-safe. Events (worker replies, cancellation)
// are serialized by one mutex per Generation; gRPC calls are made outside it (gRPC may run
// a completion inline). Sink calls are made in order, one at a time, never under that mutex.
#pragma once

#include <grpcpp/alarm.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gka/serving/v1/serving.pb.h"
#include "gka/worker/v1/worker.grpc.pb.h"
#include "router/output_text.h"
#include "router/request_validation.h"
#include "router/worker_registry.h"

namespace gka::router {

class RouterCore;

// Where a request's responses go. Calls arrive in order and never concurrently: zero or
// more OnResponse (Chunk..., then one Final or one Error), then exactly one OnFinish (OK
// after a Final; the error's status after an Error; CANCELLED / DEADLINE_EXCEEDED after a
// cancellation, with no Error before it). Nothing is called after OnFinish.
class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  virtual void OnResponse(serving::v1::GenerateResponse response) = 0;
  virtual void OnFinish(const absl::Status& status) = 0;
};

class Generation : public std::enable_shared_from_this<Generation> {
 public:
  // Use RouterCore::StartGeneration.
  // `arrival`: when the call reached the router; `admitting`: when it was handed to
  // admission control (the router's work in between counts as its overhead).
  Generation(RouterCore& core, std::string request_id, ResolvedRequest plan, OutputText output,
             GenerationSink* sink, absl::Time arrival, absl::Time admitting, absl::Time deadline);
  ~Generation();

  // Places the request (once, when admission control lets it: router/admission.h) on
  // `rung` of its tier's degrade ladder (0: as configured).
  void Start(int rung);
  // Admission control refused the request while it was queued: ends it with `status`
  // (RESOURCE_EXHAUSTED carrying a retry-after hint).
  void Shed(const absl::Status& status);
  // The client is gone (call cancelled or deadline passed): abort on the workers, finish
  // the sink with CANCELLED (DEADLINE_EXCEEDED when the deadline has passed).
  void Cancel();
  // Public Abort: a Final with finish_reason ABORT, then abort on the workers.
  void Abort();
  // `worker_id` stopped heartbeating: retry or fail if this request depends on it.
  void OnWorkerLost(const std::string& worker_id);

  const std::string& request_id() const { return request_id_; }

 private:
  struct Attempt;
  class DecodeReader;
  using Actions = std::vector<std::function<void()>>;
  // One item for the sink: a response, or the final status (then nothing more).
  struct Outgoing {
    std::optional<serving::v1::GenerateResponse> response;
    std::optional<absl::Status> finish;
  };

  // Runs `body` under the mutex, then the gRPC actions it queued, then delivers to the sink.
  void Run(const std::function<void(Actions&)>& body);
  void Deliver();

  void StartAttemptLocked(Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The attempt's Reserve and StartDecode requests (a move's target: resumed_tokens too).
  void PrepareReserveLocked(Attempt* a, uint32_t prompt_tokens, uint32_t max_new_tokens)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PrepareDecodeLocked(Attempt* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnReserved(Attempt* a, const grpc::Status& status);
  // The decode worker refused the placement with a retryable code (a Reserve, or a colocated
  // StartDecode before its first token): excluded, and the request placed again.
  void DecodeRefusedLocked(Attempt* a, const absl::Status& status, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The prefill's timings and num_iter (from a prefill worker's result or a colocated
  // worker's DecodeStarted).
  void PrefillDoneLocked(Attempt* a, double worker_queue_ms, double prefill_ms, int32_t num_iter)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnPrefilled(Attempt* a, const grpc::Status& status);
  void OnDecodeMessage(Attempt* a, const worker::v1::DecodeStreamResponse& message);
  void OnDecodeClosed(Attempt* a, const grpc::Status& status);
  // Drain: the source attempt `a`'s worker asked to move its sequence.
  void StartMigrationLocked(Attempt* a, const worker::v1::MigrationNeeded& need, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnMigrationReserved(Attempt* source, Attempt* target, const grpc::Status& status);
  void OnMigrated(Attempt* source, Attempt* target, const grpc::Status& status);
  // Fills the source's one Migrate call: the target's ticket, or none (resume there).
  void PrepareMigrateLocked(Attempt* source, const worker::v1::TransferTicket* ticket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends it; the reply goes to OnMigrated when there is a target.
  void SendMigrate(Attempt* source, Attempt* target);
  // The move ended without switching: the sequence goes on at `source`.
  void MigrationFailedLocked(Attempt* source, Attempt* target, const absl::Status& why,
                             Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void PrefillFailedLocked(Attempt* a, const absl::Status& status, absl::string_view reason,
                           Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DecodeFailedLocked(Attempt* a, const absl::Status& status, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every decode worker refused or is excluded and some said "full": waits a short backoff
  // (a grpc::Alarm) and places the request again; false when it should fail instead.
  bool WaitForFullDecodeLocked(Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Another attempt if nothing reached the client and attempts remain; false otherwise.
  bool RetryLocked(Attempt* a, const absl::Status& why, absl::string_view reason, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // DATA_LOSS (the decode worker refused the transferred state): one more placement on other
  // workers; false when it is not DATA_LOSS or the retry was spent.
  bool RetryDataLossLocked(Attempt* a, const absl::Status& status, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ProcessDecodeLocked(Attempt* a, const worker::v1::DecodeStreamResponse& message,
                           Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EmitFirstTokenLocked(Attempt* a, int32_t token, const serving::v1::TokenLogprob* logprob,
                            Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EmitTokensLocked(Attempt* a, const std::vector<int32_t>& ids,
                        const std::vector<const serving::v1::TokenLogprob*>& logprobs,
                        Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DecodeDoneLocked(Attempt* a, const worker::v1::DecodeDone& done, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishFinalLocked(serving::v1::FinishReason reason, const std::string& matched_stop,
                         std::optional<int32_t> matched_stop_token_id, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailLocked(const absl::Status& status, bool retryable, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndLocked(absl::StatusCode code, Actions& actions) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees whatever `a` holds on the workers (cancel calls, Abort, Release).
  void CleanupLocked(Attempt* a, absl::string_view reason, Actions& actions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UncountPrefillLocked(Attempt* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendAbort(Attempt* a);
  void SendRelease(Attempt* a, std::string reason);
  void Enqueue(serving::v1::GenerateResponse response) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  RouterCore& core_;
  const std::string request_id_;
  const ResolvedRequest plan_;
  const absl::Time arrival_;
  const absl::Time admitting_;
  const absl::Time deadline_;
  GenerationSink* const sink_;

  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Attempt>> attempts_ ABSL_GUARDED_BY(mu_);
  Attempt* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Drain: the target of a move in progress (current_ is its source until the move is done),
  // and the decode workers the sequence left.
  Attempt* moving_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<std::string> migrated_from_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> excluded_decode_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> excluded_prefill_ ABSL_GUARDED_BY(mu_);
  // Decode workers that answered RESOURCE_EXHAUSTED since the last wait, the waits so far
  // (each also allows one more attempt), and the pending wait's alarm.
  std::set<std::string> full_decode_ ABSL_GUARDED_BY(mu_);
  int full_waits_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<grpc::Alarm> alarm_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  bool data_loss_retried_ ABSL_GUARDED_BY(mu_) = false;

  OutputText output_ ABSL_GUARDED_BY(mu_);
  bool first_token_sent_ ABSL_GUARDED_BY(mu_) = false;
  // Decode messages that arrived before the first token could be sent.
  std::vector<worker::v1::DecodeStreamResponse> held_ ABSL_GUARDED_BY(mu_);
  uint32_t completion_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<absl::Time> last_token_time_ ABSL_GUARDED_BY(mu_);
  serving::v1::Timings timings_ ABSL_GUARDED_BY(mu_);
  int32_t prefill_num_iter_ ABSL_GUARDED_BY(mu_);
  int32_t decode_num_iter_ ABSL_GUARDED_BY(mu_);
  std::string prefill_worker_id_ ABSL_GUARDED_BY(mu_);
  // Set by Start: placed (counted in gka_requests_running), its ladder rung and the caps it
  // brought.
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  int rung_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t max_tokens_ ABSL_GUARDED_BY(mu_);
  // The router's own time on this request before its first token (Timings.router_ms).
  absl::Duration router_time_ ABSL_GUARDED_BY(mu_);

  std::deque<Outgoing> outbox_ ABSL_GUARDED_BY(mu_);
  bool delivering_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace gka::router
