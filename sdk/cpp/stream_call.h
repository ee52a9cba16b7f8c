// One Generate call with its retries, as a gRPC callback reactor per attempt. Both stream
// styles and the blocking Generate are built on it.
//
// Owns: the wire request, the accumulated Result, the current attempt (its ClientContext)
// and the backoff alarm between attempts. Reports to a CallObserver: OnChunk for every
// chunk, then OnDone exactly once. Internal to the SDK.
//
//   auto call = std::make_shared<StreamCall>(core, wire_request, deadline, policy, observer);
//   call->Start();
//   ... call->Cancel();            // any thread
//
// Thread-safety: Start once; Cancel from any thread. Observer calls come from gRPC threads,
// in order and never concurrently (one attempt or one alarm is active at a time), and never
// under the call's mutex.
#pragma once

#include <grpcpp/alarm.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gka/sdk/client.h"
#include "gka/serving/v1/serving.grpc.pb.h"
#include "sdk/cpp/client_core.h"
#include "sdk/cpp/retry.h"

namespace gka::sdk::internal {

class CallObserver {
 public:
  virtual ~CallObserver() = default;
  virtual void OnChunk(const Chunk& chunk) = 0;
  virtual void OnDone(absl::StatusOr<Result> result) = 0;
};

class StreamCall : public std::enable_shared_from_this<StreamCall> {
 public:
  // `observer` is co-owned by the call and the Stream / CallHandle that reads it.
  StreamCall(std::shared_ptr<Client::Core> core, serving::v1::GenerateRequest request,
             absl::Time deadline, const RetryPolicy& policy,
             std::shared_ptr<CallObserver> observer);
  ~StreamCall();

  void Start();
  void Cancel();
  std::string request_id() const;

 private:
  class Attempt;

  void StartAttempt();
  void OnResponse(const serving::v1::GenerateResponse& response);
  void OnAttemptDone(Attempt* attempt, const grpc::Status& status);
  void OnBackoffDone(bool fired);
  // Marks the call done and keeps `outcome` for DeliverDone; no-op when already done.
  void FinishLocked(absl::StatusOr<Result> outcome) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands a kept outcome to the observer (outside mu_).
  void DeliverDone();
  absl::Status CancelledLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<Client::Core> core_;
  const serving::v1::GenerateRequest request_;
  const absl::Time deadline_;
  const std::shared_ptr<CallObserver> observer_;

  mutable absl::Mutex mu_;
  Retrier retrier_ ABSL_GUARDED_BY(mu_);
  Result result_ ABSL_GUARDED_BY(mu_);
  bool delivered_ ABSL_GUARDED_BY(mu_) = false;  // a chunk reached the observer
  bool got_final_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<serving::v1::Error> server_error_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  // Set by FinishLocked, handed to the observer once outside the mutex.
  std::optional<absl::StatusOr<Result>> outcome_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Attempt> current_ ABSL_GUARDED_BY(mu_);
  // The backoff timer between attempts (shared so Cancel can use it outside mu_).
  std::shared_ptr<grpc::Alarm> alarm_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gka::sdk::internal
