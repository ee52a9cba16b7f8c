#include "decode_worker/common/registry_client.h"

#include <grpcpp/grpcpp.h>

#include "common/base/logging.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"
#include "common/rpc/status.h"

namespace gka::worker_common {

absl::StatusOr<std::unique_ptr<RegistryClient>> RegistryClient::Start(
    const RegistryClientOptions& options, LoadFn load) {
  if (options.router_address.empty()) {
    return absl::InvalidArgumentError("the registry client needs a router address");
  }
  std::unique_ptr<RegistryClient> client(new RegistryClient(options, std::move(load)));
  client->thread_ = std::thread([c = client.get()] { c->Run(); });
  return client;
}

RegistryClient::RegistryClient(const RegistryClientOptions& options, LoadFn load)
    : options_(options),
      load_(std::move(load)),
      stub_(wpb::WorkerRegistry::NewStub(rpc::CreateChannel(options.router_address, {}))),
      interval_(options.heartbeat_interval) {}

RegistryClient::~RegistryClient() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  Deregister();
}

bool RegistryClient::registered() const {
  absl::MutexLock lock(&mu_);
  return registered_;
}

std::string RegistryClient::worker_id() const {
  absl::MutexLock lock(&mu_);
  return worker_id_;
}

void RegistryClient::SetDraining() { draining_ = true; }

void RegistryClient::Run() {
  while (true) {
    absl::Duration wait;
    bool registered;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      registered = registered_;
    }
    // A fresh registration reports load at once, so the router sees capacity before the
    // first period passes; a router that forgot us is answered with a registration at once.
    if (registered || Register()) {
      Heartbeat();
      if (!this->registered() && Register()) Heartbeat();
    }
    absl::MutexLock lock(&mu_);
    wait = interval_;
    mu_.AwaitWithTimeout(absl::Condition(&stop_), wait);
  }
}

bool RegistryClient::Register() {
  grpc::ClientContext ctx;
  rpc::SetTimeout(ctx, options_.rpc_timeout);
  wpb::RegisterResponse response;
  const absl::Status s =
      rpc::FromGrpcStatus(stub_->Register(&ctx, options_.registration, &response), "Register");
  if (!s.ok()) {
    GKA_LOG(WARNING) << "registering with the router at " << options_.router_address << ": " << s
                     << " (retrying)";
    return false;
  }
  absl::MutexLock lock(&mu_);
  registered_ = true;
  worker_id_ =
      response.worker_id().empty() ? options_.registration.worker_id() : response.worker_id();
  if (response.heartbeat_interval_ms() > 0) {
    interval_ = absl::Milliseconds(response.heartbeat_interval_ms());
  }
  ++registrations_;
  GKA_LOG(INFO) << "registered with the router at " << options_.router_address << " as "
                << worker_id_ << ", heartbeat every " << interval_;
  return true;
}

void RegistryClient::Heartbeat() {
  wpb::HeartbeatRequest request;
  request.set_worker_id(worker_id());
  *request.mutable_load() = load_();
  request.set_draining(draining_);
  request.set_unix_ms(absl::ToUnixMillis(absl::Now()));
  grpc::ClientContext ctx;
  rpc::SetTimeout(ctx, options_.rpc_timeout);
  wpb::HeartbeatResponse response;
  const absl::Status s =
      rpc::FromGrpcStatus(stub_->Heartbeat(&ctx, request, &response), "Heartbeat");
  absl::MutexLock lock(&mu_);
  if (!s.ok()) {
    // NOT_FOUND: a router that answers this way forgot us too. Anything else (router down):
    // keep heartbeating; it tells us to re-register when it is back without our record.
    if (s.code() == absl::StatusCode::kNotFound) registered_ = false;
    GKA_LOG(WARNING) << "heartbeat to " << options_.router_address << ": " << s;
    return;
  }
  ++heartbeats_;
  if (response.heartbeat_interval_ms() > 0) {
    interval_ = absl::Milliseconds(response.heartbeat_interval_ms());
  }
  if (response.reregister()) {
    GKA_LOG(INFO) << "the router forgot worker " << worker_id_ << ": registering again";
    registered_ = false;
  }
}

void RegistryClient::Deregister() {
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    if (!registered_) return;
    id = worker_id_;
    registered_ = false;
  }
  wpb::DeregisterRequest request;
  request.set_worker_id(id);
  grpc::ClientContext ctx;
  rpc::SetTimeout(ctx, absl::Milliseconds(500));
  wpb::DeregisterResponse response;
  const absl::Status s =
      rpc::FromGrpcStatus(stub_->Deregister(&ctx, request, &response), "Deregister");
  if (!s.ok()) {
    GKA_LOG(WARNING) << "deregistering " << id << ": " << s;
  }
}

}  // namespace gka::worker_common
