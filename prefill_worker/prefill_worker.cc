#include "prefill_worker/prefill_worker.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/rpc/deadline.h"
#include "common/rpc/status.h"
#include "common/transfer/ucx/ucx_transfer_engine.h"
#include "decode_worker/common/process.h"
#include "decode_worker/common/runtime.h"
#include "decode_worker/common/sampling.h"
#include "gka/worker/v1/worker.grpc.pb.h"

namespace gka::prefill_worker {

class PrefillServiceImpl;

struct PrefillWorker::Impl {
  PrefillWorkerOptions options;
  // Teardown order (reverse of declaration): senders stop before the transfer engine goes,
  // the transfer engine before the engine's memory it reads from.
  worker_common::LoadedModel model;
  worker_common::HandoffLayout layout;  // immutable: read by gRPC threads
  int32_t vocab_size = 0;
  int32_t max_seq_len = 0;
  worker_common::TaskQueue send_queue;
  worker_common::WorkerRuntime runtime;
  std::unique_ptr<transfer::ucx::UcxTransferEngine> transfer;
  // GPU state: how hand-offs leave device memory (staging copiers and pools per rank).
  std::unique_ptr<worker_common::DeviceTransfer> device;
  std::shared_ptr<metrics::Registry> registry;
  std::unique_ptr<PrefillMetrics> metrics;
  std::unique_ptr<PrefillCore> core;
  std::unique_ptr<PrefillServiceImpl> service;
  std::vector<std::thread> senders;
  std::atomic<uint64_t> next_serial{1};

  worker_common::Published<PrefillStats> stats;
  worker_common::RateMeter token_rate;  // the registry thread's

  worker_common::TaskQueue& engine_queue() { return runtime.engine_queue(); }
  absl::StatusOr<PrefillTask> Validate(const wpb::PrefillRequest& request,
                                       const grpc::CallbackServerContext& ctx) const;
  void Publish();
  wpb::LoadReport Load();
};

namespace {

// One Prefill call. The core replies through Finish; a cancellation is handed to it.
class PrefillReactor final : public grpc::ServerUnaryReactor {
 public:
  PrefillReactor(PrefillWorker::Impl* w, uint64_t serial) : w_(w), serial_(serial) {}

  void OnCancel() override {
    PrefillWorker::Impl* w = w_;
    const uint64_t serial = serial_;
    w->engine_queue().Post([w, serial] { w->core->Cancel(serial); });
  }
  void OnDone() override { delete this; }

 private:
  PrefillWorker::Impl* const w_;
  const uint64_t serial_;
};

// The milliseconds after `prefix` in `id` ("...fault-delay-1500..." -> 1500 ms); zero if absent.
[[maybe_unused]] absl::Duration MillisAfter(absl::string_view id, absl::string_view prefix) {
  const size_t at = id.find(prefix);
  if (at == absl::string_view::npos) return absl::ZeroDuration();
  absl::string_view rest = id.substr(at + prefix.size());
  size_t digits = 0;
  while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
  int64_t ms = 0;
  if (!absl::SimpleAtoi(rest.substr(0, digits), &ms)) return absl::ZeroDuration();
  return absl::Milliseconds(ms);
}

HandoffFaults FaultsFor(absl::string_view request_id, bool enabled) {
  HandoffFaults f;
#ifdef GKA_FAULT_INJECTION
  if (!enabled) return f;
  // "fault-corrupt-once": the first attempt only (the router's retries carry "#<n>").
  f.corrupt_byte =
      absl::StrContains(request_id, "fault-corrupt") &&
      !(absl::StrContains(request_id, "fault-corrupt-once") && absl::StrContains(request_id, "#"));
  f.freeze = absl::StrContains(request_id, "fault-freeze");
  f.stale_generation = absl::StrContains(request_id, "fault-stale-generation");
  f.fail_put = absl::StrContains(request_id, "fault-fail-put");
  f.delay_completion = MillisAfter(request_id, "fault-delay-");
  f.delay_puts = MillisAfter(request_id, "fault-delay-puts-");
  f.step_delay = MillisAfter(request_id, "fault-step-delay-");
#endif
  return f;
}

}  // namespace

class PrefillServiceImpl final : public wpb::PrefillService::CallbackService {
 public:
  explicit PrefillServiceImpl(PrefillWorker::Impl* w) : w_(w) {}

  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* ctx,
                                    const wpb::PrefillRequest* request,
                                    wpb::PrefillResult* response) override {
    PrefillWorker::Impl* w = w_;
    const uint64_t serial = w->next_serial++;
    auto* reactor = new PrefillReactor(w, serial);
    absl::StatusOr<PrefillTask> task = w->Validate(*request, *ctx);
    if (!task.ok()) {
      reactor->Finish(rpc::ToGrpcStatus(task.status()));
      return reactor;
    }
    task->reply = [reactor, response](absl::StatusOr<wpb::PrefillResult> r) {
      if (r.ok()) *response = *std::move(r);
      reactor->Finish(rpc::ToGrpcStatus(r.status()));
    };
    auto shared = std::make_shared<PrefillTask>(*std::move(task));
    if (!w->engine_queue().Post(
            [w, serial, shared] { w->core->Add(serial, std::move(*shared)); })) {
      reactor->Finish(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "the prefill worker is shutting down"));
    }
    return reactor;
  }

 private:
  PrefillWorker::Impl* const w_;
};

absl::StatusOr<PrefillTask> PrefillWorker::Impl::Validate(
    const wpb::PrefillRequest& request, const grpc::CallbackServerContext& ctx) const {
  if (request.request_id().empty()) return absl::InvalidArgumentError("request_id is empty");
  if (request.token_ids().empty()) return absl::InvalidArgumentError("token_ids is empty");
  for (int i = 0; i < request.token_ids_size(); ++i) {
    const int32_t t = request.token_ids(i);
    if (t < 0 || t >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token_ids[", i, "] = ", t, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  if (request.token_ids_size() + 2 > max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt (", request.token_ids_size(),
                                                   " tokens) leaves no room in the context of ",
                                                   max_seq_len));
  }
  if (request.prefill_num_iter() < -1) {
    return absl::InvalidArgumentError("prefill_num_iter must be >= 0 (or -1: the model's)");
  }
  if (!request.has_ticket()) return absl::InvalidArgumentError("ticket is missing");
  if (!request.ticket().request_id().empty() &&
      request.ticket().request_id() != request.request_id()) {
    return absl::InvalidArgumentError(absl::StrCat("the ticket is for request ",
                                                   request.ticket().request_id(), ", not ",
                                                   request.request_id()));
  }
  PrefillTask task;
  GKA_ASSIGN_OR_RETURN(task.sampling, worker_common::SamplingFromProto(request.sampling()));
  GKA_ASSIGN_OR_RETURN(
      task.ticket, worker_common::ParseTicket(request.ticket(), layout, request.token_ids_size()));
  task.request_id = request.request_id();
  task.prompt.assign(request.token_ids().begin(), request.token_ids().end());
  task.logprobs = request.sampling().logprobs();
  task.prefill_num_iter = request.prefill_num_iter();
  task.priority = request.priority();
  task.tier = request.tier();
  task.call_deadline = rpc::Deadline(ctx);
  task.faults = FaultsFor(request.request_id(), options.fault_injection);
  return task;
}

void PrefillWorker::Impl::Publish() { stats.Set(core->Stats()); }

wpb::LoadReport PrefillWorker::Impl::Load() {
  const PrefillStats s = stats.Get();
  wpb::LoadReport r;
  r.set_free_kv_pages(s.free_pages);
  r.set_total_kv_pages(model.total_pages);
  r.set_free_state_slots(s.free_slots);
  r.set_total_state_slots(model.total_slots);
  r.set_running_sequences(s.running + s.handing_off);
  r.set_waiting_sequences(s.waiting);
  r.set_queued_prompt_tokens(s.queued_prompt_tokens);
  r.set_quarantined_kv_pages(s.quarantined_pages);
  r.set_quarantined_state_slots(s.quarantined_slots);
  r.set_tokens_per_second(token_rate.Update(s.prefilled_tokens));
  return r;
}

absl::StatusOr<std::unique_ptr<PrefillWorker>> PrefillWorker::Create(
    const PrefillWorkerOptions& options) {
  if (options.common.worker_id.empty()) return absl::InvalidArgumentError("--worker-id is empty");
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError("--max-batch-tokens must be >= 1");
  }
  if (options.prefill_chunk_size < 1) {
    return absl::InvalidArgumentError("--prefill-chunk must be >= 1");
  }
  if (options.sender_threads < 1) {
    return absl::InvalidArgumentError("--sender-threads must be >= 1");
  }
  auto impl = std::make_unique<Impl>();
  Impl* w = impl.get();
  w->options = options;
  GKA_ASSIGN_OR_RETURN(w->model, worker_common::LoadModel(options.common.model));
  w->layout = worker_common::HandoffLayout::Of(w->model.lead());
  w->vocab_size = w->model.lead().vocab_size();
  w->max_seq_len = w->model.lead().max_seq_len();
  GKA_ASSIGN_OR_RETURN(w->transfer, transfer::ucx::UcxTransferEngine::Create(
                                        {.transports = options.common.ucx_transports,
                                         .name = options.common.worker_id}));
  {
    GKA_ASSIGN_OR_RETURN(transfer::staging::StagingMode mode,
                         transfer::staging::ParseStagingMode(options.common.device_transfer));
    std::vector<const engine::Engine*> engines;
    for (int r = 0; r < w->model.ranks->size(); ++r) engines.push_back(&w->model.ranks->rank(r));
    GKA_ASSIGN_OR_RETURN(w->device, worker_common::DeviceTransfer::Create(
                                        engines, w->transfer->SupportsCuda(), {.mode = mode}));
    // Sender staging, one buffer per decode rank's share (sized for decode TP = this TP).
    GKA_RETURN_IF_ERROR(
        w->device->Prewarm(w->layout.Segments(w->max_seq_len), options.common.staging_prewarm));
  }
  w->registry = std::make_shared<metrics::Registry>();
  GKA_ASSIGN_OR_RETURN(w->metrics, PrefillMetrics::Create(*w->registry, options.common.worker_id,
                                                          options.common.tiers));
  PrefillCore::Options co;
  co.worker_id = options.common.worker_id;
  co.max_batch_tokens = options.max_batch_tokens;
  co.prefill_chunk_size = options.prefill_chunk_size;
  co.max_running_seqs = w->model.total_slots;
  co.vocab_limit = options.common.vocab_limit;
  co.stream_handoff = options.stream_handoff;
  // Hand-offs run on the sender threads; their results come back to the engine thread.
  PrefillCore::HandoffEnv env;
  env.stream = {.transfer = w->transfer.get(),
                .device = w->device.get(),
                .executor = [w](absl::AnyInvocable<void()> task) {
                  return w->send_queue.Post(std::move(task));
                }};
  env.post = [w](absl::AnyInvocable<void()> task) {
    return w->engine_queue().Post(std::move(task));
  };
  GKA_ASSIGN_OR_RETURN(
      w->core, PrefillCore::Create(co, w->model.ranks.get(), std::move(env), w->metrics.get()));
  w->Publish();
  w->runtime.StartEngineThread([w] { return w->core->Tick(); }, [w] { w->Publish(); });
  for (int i = 0; i < options.sender_threads; ++i) {
    w->senders.emplace_back([w] {
      while (auto task = w->send_queue.WaitOne(absl::InfiniteFuture())) (*task)();
    });
  }
  std::unique_ptr<PrefillWorker> worker(new PrefillWorker(std::move(impl)));

  w->service = std::make_unique<PrefillServiceImpl>(w);
  const worker_common::ServeOptions so = worker_common::ServeOptions::Of(
      options.common,
      worker_common::Registration(wpb::WORKER_ROLE_PREFILL, options.common, w->model,
                                  w->layout.compat_hash(), options.max_batch_tokens));
  GKA_RETURN_IF_ERROR(
      w->runtime.Serve(so, {w->service.get()}, w->registry, [w] { return w->Load(); }));
  return worker;
}

PrefillWorker::PrefillWorker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

PrefillWorker::~PrefillWorker() { Shutdown(absl::ZeroDuration()); }

void PrefillWorker::Shutdown(absl::Duration grace) {
  Impl* w = impl_.get();
  w->runtime.Shutdown(grace, [w] {
    w->core->AbortAll(absl::UnavailableError("the prefill worker is shutting down"));
  });
  // Hand-offs still queued end quickly (their calls are gone: cancelled); replies posted to
  // the closed engine queue are dropped.
  w->send_queue.Close();
  for (std::thread& t : w->senders) {
    if (t.joinable()) t.join();
  }
}

const std::string& PrefillWorker::grpc_address() const { return impl_->runtime.grpc_address(); }
const std::string& PrefillWorker::metrics_address() const {
  return impl_->runtime.metrics_address();
}
std::string PrefillWorker::ReadyLine() const {
  return worker_common::ReadyLine("prefill", grpc_address(), metrics_address());
}
PrefillStats PrefillWorker::Stats() const { return impl_->stats.Get(); }
metrics::Registry& PrefillWorker::registry() { return *impl_->registry; }
int64_t PrefillWorker::registrations() const { return impl_->runtime.registrations(); }

}  // namespace gka::prefill_worker
