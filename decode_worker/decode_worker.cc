#include "decode_worker/decode_worker.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/rpc/status.h"
#include "common/transfer/ucx/ucx_transfer_engine.h"
#include "decode_worker/common/process.h"
#include "decode_worker/common/runtime.h"
#include "gka/worker/v1/worker.grpc.pb.h"

namespace gka::decode_worker {

class DecodeServiceImpl;

struct DecodeWorker::Impl {
  DecodeWorkerOptions options;
  // Declaration order is teardown order reversed: the engine's memory outlives the transfer
  // engine (no write can land after it is gone), which outlives the registrations the core
  // holds; the queues outlive the transfer engine, whose callbacks post into them.
  worker_common::LoadedModel model;
  worker_common::TaskQueue fence_queue;
  // Drain: migrations' hand-offs run on the sender thread (they block on UCX); it stops
  // before the transfer engines go.
  worker_common::TaskQueue send_queue;
  worker_common::WorkerRuntime runtime;  // the engine thread and its queue, server, exposer
  // One per tensor-parallel rank (its own UCX worker address in the ticket): each rank
  // receives its heads' share of every hand-off on its own.
  std::vector<std::unique_ptr<transfer::ucx::UcxTransferEngine>> transfers;
  // GPU state: staging copiers and pinned pools per rank (outlive the core's landings).
  std::unique_ptr<worker_common::DeviceTransfer> device;
  std::shared_ptr<metrics::Registry> registry;
  std::unique_ptr<DecodeMetrics> metrics;
  std::unique_ptr<DecodeCore> core;
  std::unique_ptr<DecodeServiceImpl> service;
  std::thread fence_thread;
  std::thread sender_thread;
  std::atomic<uint64_t> next_stream_id{1};

  worker_common::Published<DecodeStats> stats;
  worker_common::RateMeter token_rate;  // the registry thread's

  worker_common::TaskQueue& engine_queue() { return runtime.engine_queue(); }
  void RunFencer();
  void Publish();
  wpb::LoadReport Load();
};

namespace {

// One StartDecode call: a queue of messages written one at a time. The core Sends and then
// Closes; writes that pile up while one is in flight are merged (token batches).
//
// Lifetime: gRPC deletes the reactor (OnDone) as soon as the last write and Finish completed.
// Send and Close run on the engine thread, outside any reaction, so nothing holds the
// reactor alive for them: each changes the state and decides its next step in one critical
// section and then touches only what that step owns (a write in flight or the Finish both
// keep the reactor alive until they complete). Re-locking after the unlock (as a separate
// Pump would) can find the reactor already deleted: an OnWriteDone on a gRPC thread may
// have seen `closed_` in between, finished the call, and OnDone run.
class StartDecodeReactor final : public grpc::ServerWriteReactor<wpb::DecodeStreamResponse>,
                                 public DecodeStream {
 public:
  // `close_delay`: a test's fault (decode_worker.h), zero otherwise.
  StartDecodeReactor(DecodeWorker::Impl* w, uint64_t id, absl::Duration close_delay)
      : w_(w), id_(id), close_delay_(close_delay) {}

  uint64_t id() const override { return id_; }

  void Send(wpb::DecodeStreamResponse message) override {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      if (closed_ || broken_) return;
      pending_.push_back(std::move(message));
      step = NextStepLocked();
    }
    Take(this, std::move(step));
  }

  void Close(const absl::Status& status) override {
    Step step;
    absl::Duration delay;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
      final_ = rpc::ToGrpcStatus(status);
      step = NextStepLocked();
      delay = close_delay_;  // read while the reactor is surely alive
    }
    if (delay > absl::ZeroDuration()) absl::SleepFor(delay);
    Take(this, std::move(step));
  }

  void OnWriteDone(bool ok) override {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;
        pending_.clear();
      }
      step = NextStepLocked();
    }
    Take(this, std::move(step));
  }

  void OnCancel() override {
    DecodeWorker::Impl* w = w_;
    const uint64_t id = id_;
    // The core answers with Close (Finish must still be called after a cancellation).
    if (!w->engine_queue().Post([w, id] { w->core->StreamCancelled(id); })) {
      Close(absl::CancelledError("cancelled while the worker shuts down"));
    }
  }

  void OnDone() override { delete this; }

 private:
  // What the caller does once the lock is released. kWrite: current_ holds the message.
  struct Step {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    grpc::Status finish;  // kFinish: the call's status
  };

  Step NextStepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Step step;
    if (writing_ || finished_) return step;
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      // Tokens that queued up behind a slow write go out as one batch.
      while (current_.has_tokens() && !pending_.empty() && pending_.front().has_tokens()) {
        current_.mutable_tokens()->MergeFrom(pending_.front().tokens());
        pending_.pop_front();
      }
      writing_ = true;
      step.action = Step::kWrite;
    } else if (closed_) {
      finished_ = true;
      step.action = Step::kFinish;
      step.finish = final_;
    }
    return step;
  }

  // Outside the lock: gRPC may run reactions inline. After Finish the reactor may be gone.
  // Static, and `r` touched only for a step with an action (a write in flight or the Finish
  // keeps the reactor alive until it completes): with none, another thread may already have
  // finished the call and gRPC deleted the reactor — even a member call on it would be UB.
  static void Take(StartDecodeReactor* r, Step step) {
    if (step.action == Step::kWrite) r->StartWrite(&r->current_);
    if (step.action == Step::kFinish) r->Finish(std::move(step.finish));
  }

  DecodeWorker::Impl* const w_;
  const uint64_t id_;
  const absl::Duration close_delay_;
  absl::Mutex mu_;
  std::deque<wpb::DecodeStreamResponse> pending_ ABSL_GUARDED_BY(mu_);
  wpb::DecodeStreamResponse current_;  // owned by the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
};

// One Migrate call: the core replies through Finish once the move ended; a cancelled call
// stops the transfer (the sequence then stays here).
class MigrateReactor final : public grpc::ServerUnaryReactor {
 public:
  MigrateReactor(DecodeWorker::Impl* w, std::string request_id)
      : w_(w), request_id_(std::move(request_id)) {}
  void OnCancel() override {
    DecodeWorker::Impl* w = w_;
    (void)w->engine_queue().Post([w, id = request_id_] { w->core->MigrateCancelled(id); });
  }
  void OnDone() override { delete this; }

 private:
  DecodeWorker::Impl* const w_;
  const std::string request_id_;
};

grpc::Status ShuttingDown() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the decode worker is shutting down");
}

// The "fault-slow-close" test fault (decode_worker.h); zero in other builds and requests.
absl::Duration CloseDelayFor([[maybe_unused]] const DecodeWorkerOptions& options,
                             [[maybe_unused]] const std::string& request_id) {
#ifdef GKA_FAULT_INJECTION
  if (options.fault_injection && absl::StrContains(request_id, "fault-slow-close")) {
    return absl::Milliseconds(100);
  }
#endif
  return absl::ZeroDuration();
}

}  // namespace

class DecodeServiceImpl final : public wpb::DecodeService::CallbackService {
 public:
  explicit DecodeServiceImpl(DecodeWorker::Impl* w) : w_(w) {}

  grpc::ServerUnaryReactor* Reserve(grpc::CallbackServerContext* ctx,
                                    const wpb::ReserveRequest* request,
                                    wpb::TransferTicket* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    DecodeWorker::Impl* w = w_;
    if (!w->engine_queue().Post([w, request, response, reactor] {
          w->core->Reserve(*request, [w, response, reactor](absl::StatusOr<wpb::TransferTicket> t) {
            if (t.ok()) *response = *std::move(t);
            // Published before the reply: a heartbeat sent after the router learns of the
            // reservation reports it (the router's admission counts on that).
            w->Publish();
            reactor->Finish(rpc::ToGrpcStatus(t.status()));
          });
        })) {
      reactor->Finish(ShuttingDown());
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx,
                                    const wpb::ReleaseRequest* request,
                                    wpb::ReleaseResponse* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    DecodeWorker::Impl* w = w_;
    if (!w->engine_queue().Post([w, request, response, reactor] {
          w->core->Release(*request, [response, reactor](wpb::ReleaseResponse r) {
            *response = std::move(r);
            reactor->Finish(grpc::Status::OK);
          });
        })) {
      reactor->Finish(ShuttingDown());
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx,
                                  const spb::AbortRequest* request,
                                  spb::AbortResponse* response) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    DecodeWorker::Impl* w = w_;
    if (!w->engine_queue().Post([w, request, response, reactor] {
          response->set_found(w->core->Abort(request->request_id()));
          reactor->Finish(grpc::Status::OK);
        })) {
      reactor->Finish(ShuttingDown());
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* Migrate(grpc::CallbackServerContext* ctx,
                                    const wpb::MigrateRequest* request,
                                    wpb::MigrateResponse* response) override {
    DecodeWorker::Impl* w = w_;
    auto* reactor = new MigrateReactor(w, request->request_id());
    if (!w->engine_queue().Post([w, request, response, reactor] {
          w->core->Migrate(*request, [response, reactor](absl::StatusOr<wpb::MigrateResponse> r) {
            if (r.ok()) *response = *std::move(r);
            reactor->Finish(rpc::ToGrpcStatus(r.status()));
          });
        })) {
      reactor->Finish(ShuttingDown());
    }
    return reactor;
  }

  grpc::ServerWriteReactor<wpb::DecodeStreamResponse>* StartDecode(
      grpc::CallbackServerContext* ctx, const wpb::StartDecodeRequest* request) override {
    DecodeWorker::Impl* w = w_;
    auto* reactor = new StartDecodeReactor(w, w->next_stream_id++,
                                           CloseDelayFor(w->options, request->request_id()));
    if (!w->engine_queue().Post(
            [w, request, reactor] { w->core->StartDecode(*request, reactor); })) {
      reactor->Close(absl::UnavailableError("the decode worker is shutting down"));
    }
    return reactor;
  }

 private:
  DecodeWorker::Impl* const w_;
};

void DecodeWorker::Impl::RunFencer() {
  while (!fence_queue.closed()) {
    for (auto& task : fence_queue.Wait(absl::InfiniteFuture())) task();
  }
}

void DecodeWorker::Impl::Publish() { stats.Set(core->Stats()); }

wpb::LoadReport DecodeWorker::Impl::Load() {
  const DecodeStats s = stats.Get();
  wpb::LoadReport r;
  r.set_free_kv_pages(static_cast<uint32_t>(std::max(0, s.free_pages - s.claimed_pages)));
  r.set_total_kv_pages(s.total_pages);
  r.set_free_state_slots(static_cast<uint32_t>(std::max(0, s.free_slots - s.claimed_slots)));
  r.set_total_state_slots(s.total_slots);
  r.set_running_sequences(s.running);
  r.set_waiting_sequences(s.waiting);
  r.set_queued_prompt_tokens(static_cast<uint64_t>(s.queued_prompt_tokens));
  r.set_reserved_kv_pages(s.reserved_pages);
  r.set_reserved_state_slots(s.reserved_slots);
  r.set_quarantined_kv_pages(s.quarantined_pages);
  r.set_quarantined_state_slots(s.quarantined_slots);
  r.set_tokens_per_second(token_rate.Update(s.generated_tokens));
  return r;
}

absl::StatusOr<std::unique_ptr<DecodeWorker>> DecodeWorker::Create(
    const DecodeWorkerOptions& options) {
  auto impl = std::make_unique<Impl>();
  Impl* w = impl.get();
  w->options = options;
  if (options.common.worker_id.empty()) return absl::InvalidArgumentError("--worker-id is empty");
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError("--max-batch-tokens must be >= 1");
  }
  GKA_ASSIGN_OR_RETURN(w->model, worker_common::LoadModel(options.common.model));
  std::vector<transfer::TransferEngine*> transfers;
  for (int r = 0; r < w->model.ranks->size(); ++r) {
    GKA_ASSIGN_OR_RETURN(auto t,
                         transfer::ucx::UcxTransferEngine::Create(
                             {.transports = options.common.ucx_transports,
                              .name = w->model.ranks->size() == 1
                                          ? options.common.worker_id
                                          : absl::StrCat(options.common.worker_id, "-rank", r)}));
    transfers.push_back(t.get());
    w->transfers.push_back(std::move(t));
  }
  {
    GKA_ASSIGN_OR_RETURN(transfer::staging::StagingMode mode,
                         transfer::staging::ParseStagingMode(options.common.device_transfer));
    std::vector<const engine::Engine*> engines;
    for (int r = 0; r < w->model.ranks->size(); ++r) engines.push_back(&w->model.ranks->rank(r));
    GKA_ASSIGN_OR_RETURN(w->device, worker_common::DeviceTransfer::Create(
                                        engines, w->transfers[0]->SupportsCuda(), {.mode = mode}));
    // The landings are reserved on the engine thread: pin them now, not between decode steps.
    GKA_RETURN_IF_ERROR(w->device->Prewarm(
        worker_common::HandoffLayout::Of(w->model.lead()).Segments(w->model.lead().max_seq_len()),
        options.common.staging_prewarm));
  }
  w->registry = std::make_shared<metrics::Registry>();
  GKA_ASSIGN_OR_RETURN(w->metrics, DecodeMetrics::Create(*w->registry, options.common.worker_id,
                                                         options.common.tiers));
  DecodeCoreOptions co;
  co.worker_id = options.common.worker_id;
  co.max_batch_tokens = options.max_batch_tokens;
  co.default_lease = options.default_lease;
  co.max_lease = options.max_lease;
  co.fence_timeout = options.fence_timeout;
  co.quarantine_retry = options.quarantine_retry;
  co.vocab_limit = options.common.vocab_limit;
  co.total_pages = w->model.total_pages;
  co.total_slots = w->model.total_slots;
  co.device = w->device.get();
  // A migration's hand-off, like a prefill worker's: rank 0's transfer engine writes every
  // rank's share, read in place (handoff_sender.h).
  co.send = [w](std::shared_ptr<const worker_common::HandoffJob> job,
                absl::AnyInvocable<void(worker_common::HandoffResult)> done) {
    auto shared_done =
        std::make_shared<absl::AnyInvocable<void(worker_common::HandoffResult)>>(std::move(done));
    const bool posted = w->send_queue.Post([w, job, shared_done] {
      worker_common::HandoffResult r =
          worker_common::RunHandoff(*w->transfers[0], *job, w->device.get());
      (void)w->engine_queue().Post(
          [shared_done, r = std::move(r)]() mutable { (*shared_done)(std::move(r)); });
    });
    if (!posted) {
      worker_common::HandoffResult r;
      r.outcome.status = absl::UnavailableError("the decode worker is shutting down");
      (*shared_done)(std::move(r));
    }
  };
  co.colocated = options.colocated;
  co.prefill_chunk_size = options.prefill_chunk_size;
  co.publish = [w] { w->Publish(); };
  GKA_ASSIGN_OR_RETURN(w->core,
                       DecodeCore::Create(co, w->model.ranks.get(), std::move(transfers),
                                          &w->engine_queue(), &w->fence_queue, w->metrics.get()));
  w->Publish();
  w->runtime.StartEngineThread([w] { return w->core->Tick(); }, [w] { w->Publish(); });
  w->fence_thread = std::thread([w] { w->RunFencer(); });
  w->sender_thread = std::thread([w] {
    while (auto task = w->send_queue.WaitOne(absl::InfiniteFuture())) (*task)();
  });
  std::unique_ptr<DecodeWorker> worker(new DecodeWorker(std::move(impl)));

  w->service = std::make_unique<DecodeServiceImpl>(w);
  worker_common::ServeOptions so = worker_common::ServeOptions::Of(
      options.common,
      worker_common::Registration(
          options.colocated ? wpb::WORKER_ROLE_COLOCATED : wpb::WORKER_ROLE_DECODE, options.common,
          w->model, worker_common::HandoffLayout::Of(w->model.lead()).compat_hash(),
          options.max_batch_tokens));
  // The degrade ladder's caps arrive with the router's heartbeat replies; the engine thread
  // applies them (to running sequences too).
  so.on_num_iter_caps = [w](const std::string& router, const std::map<std::string, int32_t>& caps) {
    // False only while shutting down: nothing is left to apply the caps to then.
    (void)w->engine_queue().Post([w, router, caps] { w->core->SetNumIterCaps(router, caps); });
  };
  GKA_RETURN_IF_ERROR(
      w->runtime.Serve(so, {w->service.get()}, w->registry, [w] { return w->Load(); }));
  return worker;
}

DecodeWorker::DecodeWorker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DecodeWorker::~DecodeWorker() { Shutdown(absl::ZeroDuration()); }

void DecodeWorker::Shutdown(absl::Duration grace) {
  Impl* w = impl_.get();
  const absl::Time until = absl::Now() + grace;
  if (grace > absl::ZeroDuration()) {
    // Drain: nothing new is placed here; running sequences move to other decode workers (the
    // server keeps taking calls: the routers' Migrate) or finish here, within `grace`.
    w->runtime.Deregister();
    if (w->engine_queue().Post([w] { w->core->StartDrain(); })) {
      while (absl::Now() < until && w->stats.Get().live > 0) absl::SleepFor(absl::Milliseconds(20));
    }
  }
  // Calls still in flight get what is left of `grace`; the engine thread keeps running
  // meanwhile, so streams end normally or, cancelled, through the core.
  w->runtime.Shutdown(std::max(absl::ZeroDuration(), until - absl::Now()), [w] {
    w->core->AbortAll(absl::UnavailableError("the decode worker is shutting down"));
  });
  w->send_queue.Close();
  if (w->sender_thread.joinable()) w->sender_thread.join();
  w->fence_queue.Close();
  if (w->fence_thread.joinable()) w->fence_thread.join();
}

const std::string& DecodeWorker::grpc_address() const { return impl_->runtime.grpc_address(); }
const std::string& DecodeWorker::metrics_address() const {
  return impl_->runtime.metrics_address();
}

std::string DecodeWorker::ReadyLine() const {
  return worker_common::ReadyLine(impl_->options.colocated ? "colocated" : "decode", grpc_address(),
                                  metrics_address());
}

DecodeStats DecodeWorker::Stats() const { return impl_->stats.Get(); }

metrics::Registry& DecodeWorker::registry() { return *impl_->registry; }

int64_t DecodeWorker::registrations() const { return impl_->runtime.registrations(); }

}  // namespace gka::decode_worker
