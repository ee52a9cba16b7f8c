// Fake prefill and decode workers for the router's integration test: real gRPC servers on
// 127.0.0.1:0 implementing gka.worker.v1 (PrefillService, DecodeService), registering and
// heartbeating with a router, and playing a scripted token sequence instead of running a
// model. The "transfer" is an in-process hand-off through FakeCluster: the fake prefill
// marks the ticket's transfer complete, which releases the fake decode stream.
//
// Faults on demand: a prefill worker that answers UNAVAILABLE or dies (its server shuts
// down) when asked to prefill, a decode worker that dies after N tokens, a full decode worker
// (RESOURCE_EXHAUSTED), a worker that stops heartbeating. A fake decode worker may also
// register as colocated (it then plays the prefill itself).
//
//   FakeCluster cluster;
//   cluster.SetScript({.tokens = {1, 2, 3}});
//   auto decode = FakeDecodeWorker::Start(cluster, {.id = "decode-a"}, router_address);
//   auto prefill = FakePrefillWorker::Start(cluster, {.id = "prefill-a"}, router_address);
//
// Thread-safety: all methods are thread-safe. The sync gRPC API is used on purpose: these
// are test doubles, and blocking handlers keep them short.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/rpc/server.h"
#include "gka/serving/v1/serving.pb.h"
#include "gka/worker/v1/worker.grpc.pb.h"

namespace gka::router::testing {

// What every fake decode stream plays.
struct Script {
  // The whole generation: tokens[0] is the first token (sampled by "prefill").
  std::vector<int32_t> tokens;
  // Reported in DecodeDone when the script runs out before max_new_tokens.
  serving::v1::FinishReason finish = serving::v1::FINISH_REASON_STOP;
  std::optional<int32_t> matched_stop_token_id;
  absl::Duration token_interval = absl::Milliseconds(2);
};

// State shared by the fakes of one test: the script and the transfers completed.
class FakeCluster {
 public:
  void SetScript(Script script);
  Script script() const;

  void CompleteTransfer(uint64_t transfer_id, int32_t first_token);
  // True once `transfer_id` completed (first token in *first_token); false at `deadline`
  // or when `stop` returns true.
  bool WaitTransfer(uint64_t transfer_id, absl::Time deadline, const std::function<bool()>& stop,
                    int32_t* first_token) const;

 private:
  mutable absl::Mutex mu_;
  Script script_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, int32_t> transfers_ ABSL_GUARDED_BY(mu_);
};

// Registration + heartbeats with the router, shared by both fakes.
class FakeWorkerBase {
 public:
  virtual ~FakeWorkerBase();
  // The id the router confirmed. Locked: the router may send work to this worker as soon as
  // it has processed Register, before Init() stores the id from the response, and the
  // handlers read it on gRPC threads (ThreadSanitizer found the race).
  std::string id() const {
    absl::MutexLock lock(&id_mu_);
    return id_;
  }
  const std::string& address() const { return server_->address(); }
  // Stops heartbeating (the router should mark the worker unhealthy).
  void StopHeartbeats();
  // Shuts the server down at once (in-flight calls are cancelled) and stops heartbeating:
  // the in-process stand-in for kill -9.
  void Die();
  bool dead() const { return dead_.load(); }

 protected:
  FakeWorkerBase() = default;
  // Starts the server with `service`, registers with the router and starts heartbeating.
  void Init(grpc::Service* service, worker::v1::WorkerRole role, const std::string& id,
            const std::string& router_address, worker::v1::WorkerCapacity capacity,
            uint64_t compat_hash);
  virtual worker::v1::LoadReport Load() = 0;
  // Die() and wait until the server is down; derived destructors call it first, so no
  // handler runs on a half-destroyed service.
  void ShutdownNow();

 private:
  void HeartbeatLoop();

  mutable absl::Mutex id_mu_;
  std::string id_ ABSL_GUARDED_BY(id_mu_);
  std::unique_ptr<rpc::GrpcServer> server_;
  std::unique_ptr<worker::v1::WorkerRegistry::Stub> registry_;
  absl::Notification stop_heartbeats_;
  std::thread heartbeat_thread_;
  std::atomic<bool> dead_{false};
  std::atomic<bool> heartbeats_stopped_{false};
  absl::Mutex die_mu_;
  std::thread die_thread_ ABSL_GUARDED_BY(die_mu_);
  absl::Duration interval_ = absl::Milliseconds(100);
};

struct DecodeOptions {
  std::string id = "decode-a";
  uint32_t total_kv_pages = 1000;
  uint32_t total_state_slots = 16;
  uint32_t max_context_tokens = 4096;
  // Die (server shut down) after streaming this many tokens after the first; -1: never.
  int die_after_tokens = -1;
  // Reserve answers this code when not OK (colocated: StartDecode, its placement, does).
  grpc::StatusCode reserve_error = grpc::StatusCode::OK;
  // Registers as WORKER_ROLE_COLOCATED: StartDecode carries the prompt and "prefills" it
  // (DecodeStarted with the script's first token) without waiting for a transfer.
  bool colocated = false;
};

class FakeDecodeWorker final : public FakeWorkerBase, public worker::v1::DecodeService::Service {
 public:
  static std::unique_ptr<FakeDecodeWorker> Start(FakeCluster& cluster, DecodeOptions options,
                                                 const std::string& router_address);
  ~FakeDecodeWorker() override;

  grpc::Status Reserve(grpc::ServerContext* ctx, const worker::v1::ReserveRequest* request,
                       worker::v1::TransferTicket* ticket) override;
  grpc::Status Release(grpc::ServerContext* ctx, const worker::v1::ReleaseRequest* request,
                       worker::v1::ReleaseResponse* response) override;
  grpc::Status StartDecode(grpc::ServerContext* ctx, const worker::v1::StartDecodeRequest* request,
                           grpc::ServerWriter<worker::v1::DecodeStreamResponse>* writer) override;
  grpc::Status Abort(grpc::ServerContext* ctx, const serving::v1::AbortRequest* request,
                     serving::v1::AbortResponse* response) override;

  std::vector<worker::v1::ReserveRequest> reserves() const;
  std::vector<worker::v1::ReleaseRequest> releases() const;
  std::vector<worker::v1::StartDecodeRequest> decodes() const;
  std::vector<std::string> aborts() const;
  // Streams in progress (StartDecode handlers not yet returned).
  int open_streams() const;
  // Waits until Abort for `request_id` arrived; false at `deadline`.
  bool WaitAbort(const std::string& request_id, absl::Time deadline) const;

 private:
  FakeDecodeWorker(FakeCluster& cluster, DecodeOptions options)
      : cluster_(cluster), options_(std::move(options)) {}
  worker::v1::LoadReport Load() override;

  FakeCluster& cluster_;
  const DecodeOptions options_;
  mutable absl::Mutex mu_;
  uint64_t next_transfer_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<worker::v1::ReserveRequest> reserves_ ABSL_GUARDED_BY(mu_);
  std::vector<worker::v1::ReleaseRequest> releases_ ABSL_GUARDED_BY(mu_);
  std::vector<worker::v1::StartDecodeRequest> decodes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> aborts_ ABSL_GUARDED_BY(mu_);
  int open_streams_ ABSL_GUARDED_BY(mu_) = 0;
};

struct PrefillOptions {
  std::string id = "prefill-a";
  // Every Prefill answers this code (OK: succeeds).
  grpc::StatusCode error = grpc::StatusCode::OK;
  // The server shuts down while the first Prefill is in progress (the channel breaks).
  bool die_on_prefill = false;
  absl::Duration delay = absl::ZeroDuration();
  uint64_t compat_hash = 0;
};

class FakePrefillWorker final : public FakeWorkerBase, public worker::v1::PrefillService::Service {
 public:
  static std::unique_ptr<FakePrefillWorker> Start(FakeCluster& cluster, PrefillOptions options,
                                                  const std::string& router_address);
  ~FakePrefillWorker() override;

  grpc::Status Prefill(grpc::ServerContext* ctx, const worker::v1::PrefillRequest* request,
                       worker::v1::PrefillResult* result) override;

  std::vector<worker::v1::PrefillRequest> prefills() const;

 private:
  FakePrefillWorker(FakeCluster& cluster, PrefillOptions options)
      : cluster_(cluster), options_(std::move(options)) {}
  worker::v1::LoadReport Load() override;

  FakeCluster& cluster_;
  const PrefillOptions options_;
  mutable absl::Mutex mu_;
  std::vector<worker::v1::PrefillRequest> prefills_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gka::router::testing
