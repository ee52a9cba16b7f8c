#include "tests/integration/router/fake_workers.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/check.h"
#include "common/base/logging.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"

namespace gka::router::testing {
namespace {

namespace v1 = ::gka::serving::v1;
namespace w = ::gka::worker::v1;

}  // namespace

void FakeCluster::SetScript(Script script) {
  absl::MutexLock lock(&mu_);
  script_ = std::move(script);
}

Script FakeCluster::script() const {
  absl::MutexLock lock(&mu_);
  return script_;
}

void FakeCluster::CompleteTransfer(uint64_t transfer_id, int32_t first_token) {
  absl::MutexLock lock(&mu_);
  transfers_[transfer_id] = first_token;
}

bool FakeCluster::WaitTransfer(uint64_t transfer_id, absl::Time deadline,
                               const std::function<bool()>& stop, int32_t* first_token) const {
  while (absl::Now() < deadline && !stop()) {
    {
      absl::MutexLock lock(&mu_);
      auto it = transfers_.find(transfer_id);
      if (it != transfers_.end()) {
        *first_token = it->second;
        return true;
      }
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  return false;
}

FakeWorkerBase::~FakeWorkerBase() {
  // Derived destructors have called ShutdownNow(): the services are gone by now.
  if (!stop_heartbeats_.HasBeenNotified()) stop_heartbeats_.Notify();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

void FakeWorkerBase::ShutdownNow() {
  Die();
  {
    absl::MutexLock lock(&die_mu_);
    if (die_thread_.joinable()) die_thread_.join();
  }
  // The heartbeat thread calls Load(), a virtual of the derived class being destroyed.
  if (!stop_heartbeats_.HasBeenNotified()) stop_heartbeats_.Notify();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
}

void FakeWorkerBase::Init(grpc::Service* service, w::WorkerRole role, const std::string& id,
                          const std::string& router_address, w::WorkerCapacity capacity,
                          uint64_t compat_hash) {
  auto server = rpc::GrpcServer::Create({.address = "127.0.0.1:0"}, {service});
  GKA_CHECK(server.ok()) << server.status();
  server_ = std::move(*server);
  registry_ = w::WorkerRegistry::NewStub(rpc::CreateChannel(router_address, {}));
  w::RegisterRequest request;
  request.set_worker_id(id);
  request.set_role(role);
  request.set_grpc_address(server_->address());
  request.set_model("qwen3-fake");
  request.set_compat_hash(compat_hash);
  request.set_tp_size(1);
  *request.mutable_capacity() = capacity;
  request.set_vocab_size(151936);
  grpc::ClientContext ctx;
  rpc::SetTimeout(ctx, absl::Seconds(5));
  w::RegisterResponse response;
  const grpc::Status s = registry_->Register(&ctx, request, &response);
  GKA_CHECK(s.ok()) << "register " << id << ": " << s.error_message();
  {
    absl::MutexLock lock(&id_mu_);
    id_ = response.worker_id();
  }
  interval_ = absl::Milliseconds(response.heartbeat_interval_ms());
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
}

void FakeWorkerBase::HeartbeatLoop() {
  while (!stop_heartbeats_.WaitForNotificationWithTimeout(interval_)) {
    if (heartbeats_stopped_.load()) continue;
    w::HeartbeatRequest request;
    request.set_worker_id(id());
    *request.mutable_load() = Load();
    grpc::ClientContext ctx;
    rpc::SetTimeout(ctx, absl::Seconds(1));
    w::HeartbeatResponse response;
    registry_->Heartbeat(&ctx, request, &response);
  }
}

void FakeWorkerBase::StopHeartbeats() { heartbeats_stopped_ = true; }

void FakeWorkerBase::Die() {
  if (dead_.exchange(true)) return;
  heartbeats_stopped_ = true;
  // From a thread of its own: a handler may be the one calling Die, and Shutdown waits for
  // handlers to return.
  absl::MutexLock lock(&die_mu_);
  die_thread_ = std::thread([server = server_.get()] { server->Shutdown(absl::ZeroDuration()); });
}

// ---------------------------------------------------------------------------------------

std::unique_ptr<FakeDecodeWorker> FakeDecodeWorker::Start(FakeCluster& cluster,
                                                          DecodeOptions options,
                                                          const std::string& router_address) {
  std::unique_ptr<FakeDecodeWorker> worker(new FakeDecodeWorker(cluster, options));
  w::WorkerCapacity capacity;
  capacity.set_total_kv_pages(options.total_kv_pages);
  capacity.set_total_state_slots(options.total_state_slots);
  capacity.set_page_size(16);
  capacity.set_max_context_tokens(options.max_context_tokens);
  worker->Init(worker.get(), options.colocated ? w::WORKER_ROLE_COLOCATED : w::WORKER_ROLE_DECODE,
               options.id, router_address, capacity, 0);
  return worker;
}

FakeDecodeWorker::~FakeDecodeWorker() { ShutdownNow(); }

w::LoadReport FakeDecodeWorker::Load() {
  w::LoadReport load;
  load.set_total_kv_pages(options_.total_kv_pages);
  load.set_free_kv_pages(options_.total_kv_pages);
  load.set_total_state_slots(options_.total_state_slots);
  absl::MutexLock lock(&mu_);
  load.set_free_state_slots(options_.total_state_slots -
                            std::min<uint32_t>(open_streams_, options_.total_state_slots));
  load.set_running_sequences(open_streams_);
  return load;
}

grpc::Status FakeDecodeWorker::Reserve(grpc::ServerContext*, const w::ReserveRequest* request,
                                       w::TransferTicket* ticket) {
  absl::MutexLock lock(&mu_);
  reserves_.push_back(*request);
  if (options_.reserve_error != grpc::StatusCode::OK) {
    return grpc::Status(options_.reserve_error, "fake decode worker refuses reservations");
  }
  ticket->set_request_id(request->request_id());
  // Distinct per worker, so a ticket cannot complete another worker's stream.
  ticket->set_transfer_id((std::hash<std::string>()(id()) << 16) + next_transfer_++);
  ticket->set_decode_worker_id(id());
  ticket->set_page_size(16);
  ticket->set_lease_deadline_unix_ms(absl::ToUnixMillis(absl::Now() + absl::Seconds(30)));
  ticket->set_tp_size(1);
  ticket->add_ranks()->set_rank(0);
  return grpc::Status::OK;
}

grpc::Status FakeDecodeWorker::Release(grpc::ServerContext*, const w::ReleaseRequest* request,
                                       w::ReleaseResponse* response) {
  absl::MutexLock lock(&mu_);
  releases_.push_back(*request);
  response->set_released(true);
  return grpc::Status::OK;
}

grpc::Status FakeDecodeWorker::Abort(grpc::ServerContext*, const v1::AbortRequest* request,
                                     v1::AbortResponse* response) {
  absl::MutexLock lock(&mu_);
  aborts_.push_back(request->request_id());
  response->set_found(true);
  return grpc::Status::OK;
}

grpc::Status FakeDecodeWorker::StartDecode(grpc::ServerContext* ctx,
                                           const w::StartDecodeRequest* request,
                                           grpc::ServerWriter<w::DecodeStreamResponse>* writer) {
  {
    absl::MutexLock lock(&mu_);
    decodes_.push_back(*request);
    ++open_streams_;
  }
  struct Closer {
    FakeDecodeWorker* self;
    ~Closer() {
      absl::MutexLock lock(&self->mu_);
      --self->open_streams_;
    }
  } closer{this};
  const std::string& id = request->request_id();
  const auto aborted = [&] {
    absl::MutexLock lock(&mu_);
    return std::find(aborts_.begin(), aborts_.end(), id) != aborts_.end();
  };
  const auto stop = [&] { return ctx->IsCancelled() || dead() || aborted(); };

  int32_t first = 0;
  w::DecodeStreamResponse started;
  started.set_request_id(id);
  if (options_.colocated) {
    // Its own prefill: refused like a Reserve would be, else the script's first token.
    if (options_.reserve_error != grpc::StatusCode::OK) {
      return grpc::Status(options_.reserve_error, "fake colocated worker refuses");
    }
    if (request->prompt_token_ids().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prompt_token_ids is empty");
    }
    w::DecodeStreamResponse accepted;
    accepted.set_request_id(id);
    accepted.mutable_accepted();
    if (!writer->Write(accepted)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
    const Script script = cluster_.script();
    first = script.tokens.empty() ? 0 : script.tokens[0];
    w::DecodeStarted* s = started.mutable_started();
    s->set_prefill_num_iter(request->prefill_num_iter());
    s->set_queue_ms(0.5);
    s->set_prefill_ms(2.5);
    if (request->sampling().logprobs()) {
      s->mutable_first_logprob()->set_token_id(first);
      s->mutable_first_logprob()->set_logprob(-0.25f);
    }
  } else if (!cluster_.WaitTransfer(request->transfer_id(), absl::Now() + absl::Seconds(30), stop,
                                    &first)) {
    if (dead()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker died");
    return grpc::Status(grpc::StatusCode::CANCELLED, "aborted before the transfer completed");
  } else {
    started.mutable_started()->set_transfer_ms(1.5);
  }
  started.mutable_started()->set_first_token(first);
  if (!writer->Write(started)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");

  const Script script = cluster_.script();
  uint32_t generated = 1;
  v1::FinishReason reason = script.finish;
  for (size_t i = 1; i < script.tokens.size(); ++i) {
    if (generated >= request->max_new_tokens()) {
      reason = v1::FINISH_REASON_LENGTH;
      break;
    }
    absl::SleepFor(script.token_interval);
    if (options_.die_after_tokens >= 0 && static_cast<int>(i) > options_.die_after_tokens) {
      Die();
    }
    if (stop()) {
      if (dead()) {
        // Hold the stream until the server's shutdown cancels it, like a dead process would.
        while (!ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(1));
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker died");
      }
      w::DecodeStreamResponse done;
      done.set_request_id(id);
      done.mutable_done()->set_finish_reason(v1::FINISH_REASON_ABORT);
      done.mutable_done()->set_generated_tokens(generated);
      writer->Write(done);
      return grpc::Status::OK;
    }
    w::DecodeStreamResponse batch;
    batch.set_request_id(id);
    batch.mutable_tokens()->add_token_ids(script.tokens[i]);
    if (request->sampling().logprobs()) {
      v1::TokenLogprob* lp = batch.mutable_tokens()->add_logprobs();
      lp->set_token_id(script.tokens[i]);
      lp->set_logprob(-0.5f);
    }
    if (!writer->Write(batch)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
    ++generated;
  }
  w::DecodeStreamResponse done;
  done.set_request_id(id);
  done.mutable_done()->set_finish_reason(reason);
  done.mutable_done()->set_generated_tokens(generated);
  done.mutable_done()->set_decode_ms(3.0);
  done.mutable_done()->set_decode_num_iter(request->decode_num_iter());
  if (reason == v1::FINISH_REASON_STOP && script.matched_stop_token_id.has_value()) {
    done.mutable_done()->set_matched_stop_token_id(*script.matched_stop_token_id);
  }
  writer->Write(done);
  return grpc::Status::OK;
}

std::vector<w::ReserveRequest> FakeDecodeWorker::reserves() const {
  absl::MutexLock lock(&mu_);
  return reserves_;
}
std::vector<w::ReleaseRequest> FakeDecodeWorker::releases() const {
  absl::MutexLock lock(&mu_);
  return releases_;
}
std::vector<w::StartDecodeRequest> FakeDecodeWorker::decodes() const {
  absl::MutexLock lock(&mu_);
  return decodes_;
}
std::vector<std::string> FakeDecodeWorker::aborts() const {
  absl::MutexLock lock(&mu_);
  return aborts_;
}
int FakeDecodeWorker::open_streams() const {
  absl::MutexLock lock(&mu_);
  return open_streams_;
}

bool FakeDecodeWorker::WaitAbort(const std::string& request_id, absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  struct Args {
    const std::vector<std::string>* aborts;
    const std::string* id;
  } args{&aborts_, &request_id};
  return mu_.AwaitWithDeadline(absl::Condition(
                                   +[](Args* a) {
                                     return std::find(a->aborts->begin(), a->aborts->end(),
                                                      *a->id) != a->aborts->end();
                                   },
                                   &args),
                               deadline);
}

// ---------------------------------------------------------------------------------------

std::unique_ptr<FakePrefillWorker> FakePrefillWorker::Start(FakeCluster& cluster,
                                                            PrefillOptions options,
                                                            const std::string& router_address) {
  std::unique_ptr<FakePrefillWorker> worker(new FakePrefillWorker(cluster, options));
  w::WorkerCapacity capacity;
  capacity.set_max_context_tokens(4096);
  capacity.set_max_batch_tokens(512);
  worker->Init(worker.get(), w::WORKER_ROLE_PREFILL, options.id, router_address, capacity,
               options.compat_hash);
  return worker;
}

FakePrefillWorker::~FakePrefillWorker() { ShutdownNow(); }

w::LoadReport FakePrefillWorker::Load() { return w::LoadReport(); }

grpc::Status FakePrefillWorker::Prefill(grpc::ServerContext* ctx, const w::PrefillRequest* request,
                                        w::PrefillResult* result) {
  {
    absl::MutexLock lock(&mu_);
    prefills_.push_back(*request);
  }
  if (options_.die_on_prefill) {
    Die();
    while (!ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(1));
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker died");
  }
  if (options_.error != grpc::StatusCode::OK) {
    return grpc::Status(options_.error, "fake prefill worker fails on purpose");
  }
  absl::SleepFor(options_.delay);
  if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  const Script script = cluster_.script();
  const int32_t first = script.tokens.empty() ? 0 : script.tokens[0];
  cluster_.CompleteTransfer(request->ticket().transfer_id(), first);
  result->set_first_token(first);
  if (request->sampling().logprobs()) {
    result->mutable_first_logprob()->set_token_id(first);
    result->mutable_first_logprob()->set_logprob(-0.25f);
  }
  result->mutable_transfer()->set_transfer_ms(1.0);
  result->mutable_transfer()->set_kv_bytes(4096);
  result->set_queue_ms(0.5);
  result->set_prefill_ms(2.0);
  result->set_prefill_num_iter(request->prefill_num_iter());
  result->set_prefill_worker_id(id());
  return grpc::Status::OK;
}

std::vector<w::PrefillRequest> FakePrefillWorker::prefills() const {
  absl::MutexLock lock(&mu_);
  return prefills_;
}

}  // namespace gka::router::testing
