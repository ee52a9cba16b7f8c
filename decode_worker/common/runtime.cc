#include "decode_worker/common/runtime.h"

#include "common/base/status.h"

namespace gka::worker_common {

wpb::RegisterRequest Registration(wpb::WorkerRole role, const WorkerOptions& options,
                                  const LoadedModel& model, uint64_t compat_hash,
                                  int32_t max_batch_tokens) {
  wpb::RegisterRequest r;
  r.set_worker_id(options.worker_id);
  r.set_role(role);
  r.set_model(model.name);
  r.set_compat_hash(compat_hash);
  r.set_tp_size(static_cast<uint32_t>(model.ranks->size()));
  r.set_version("gkaserve-0.1");
  r.set_vocab_size(static_cast<uint32_t>(model.lead().vocab_size()));
  for (int32_t id : model.eos_token_ids) r.add_eos_token_ids(id);
  wpb::WorkerCapacity* c = r.mutable_capacity();
  c->set_total_kv_pages(model.total_pages);
  c->set_total_state_slots(model.total_slots);
  c->set_page_size(options.model.page_size);
  c->set_max_context_tokens(model.lead().max_seq_len());
  c->set_max_batch_tokens(max_batch_tokens);
  return r;
}

double RateMeter::Update(int64_t total, absl::Time now) {
  const double seconds = absl::ToDoubleSeconds(now - last_);
  const double rate = seconds > 0 ? (total - last_total_) / seconds : 0;
  last_total_ = total;
  last_ = now;
  return rate;
}

WorkerRuntime::~WorkerRuntime() { Shutdown(absl::ZeroDuration(), nullptr); }

void WorkerRuntime::StartEngineThread(std::function<absl::Time()> tick,
                                      std::function<void()> publish) {
  engine_thread_ = std::thread([this, tick = std::move(tick), publish = std::move(publish)] {
    absl::Time wake = absl::Now();
    while (true) {
      for (auto& task : engine_queue_.Wait(wake)) task();
      if (engine_queue_.closed()) {
        // What was posted before Close() still runs (replies, completions).
        for (auto& task : engine_queue_.Wait(absl::Now())) task();
        publish();
        return;
      }
      wake = tick();
      publish();
    }
  });
}

absl::Status WorkerRuntime::Serve(const ServeOptions& options,
                                  const std::vector<grpc::Service*>& services,
                                  std::shared_ptr<metrics::Registry> registry,
                                  RegistryClient::LoadFn load) {
  GKA_ASSIGN_OR_RETURN(
      server_,
      rpc::GrpcServer::Create({.address = options.grpc_address, .tls = options.tls}, services));
  grpc_address_ = server_->address();
  if (!options.health_address.empty()) {
    GKA_ASSIGN_OR_RETURN(health_server_, rpc::GrpcServer::Create(
                                             {.address = options.health_address,
                                              .health_only = true},
                                             {}));
  }
  if (!options.metrics_address.empty()) {
    GKA_ASSIGN_OR_RETURN(
        exposer_, metrics::MetricsExposer::Create({.address = options.metrics_address}, registry));
    metrics_address_ = exposer_->address();
  }
  if (!options.router_address.empty() || !options.router_service.empty()) {
    RegistryClientOptions ro;
    ro.router_addresses = SplitAddressList(options.router_address);
    ro.router_services = SplitAddressList(options.router_service);
    ro.heartbeat_interval = options.heartbeat_interval;
    ro.channel.tls = options.tls;
    ro.channel.tls_server_name = options.tls_server_name;
    ro.registration = options.registration;
    ro.registration.set_grpc_address(grpc_address_);
    ro.registration.set_metrics_address(metrics_address_);
    ro.on_num_iter_caps = options.on_num_iter_caps;
    GKA_ASSIGN_OR_RETURN(auto client, RegistryClient::Start(ro, std::move(load)));
    absl::MutexLock lock(&mu_);
    registry_client_ = std::move(client);
  }
  return absl::OkStatus();
}

void WorkerRuntime::Deregister() {
  std::unique_ptr<RegistryClient> client;
  {
    absl::MutexLock lock(&mu_);
    client = std::move(registry_client_);
  }
  client.reset();  // deregisters: the router places nothing new here
}

void WorkerRuntime::Shutdown(absl::Duration grace, std::function<void()> last) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  Deregister();
  // Probes see NOT_SERVING at once, as on the main port.
  if (health_server_ != nullptr) health_server_->Shutdown(absl::ZeroDuration());
  if (server_ != nullptr) server_->Shutdown(grace);
  if (last) engine_queue_.Post(std::move(last));
  engine_queue_.Close();
  if (engine_thread_.joinable()) engine_thread_.join();
  // The services may go now: nothing calls them any more.
  server_.reset();
  exposer_.reset();
}

int64_t WorkerRuntime::registrations() const {
  absl::MutexLock lock(&mu_);
  return registry_client_ == nullptr ? 0 : registry_client_->registrations();
}

}  // namespace gka::worker_common
