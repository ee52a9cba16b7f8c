#include "router/router.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_format.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/metrics/metrics.h"
#include "common/rpc/server.h"
#include "router/files.h"
#include "router/grpc_services.h"
#include "router/model_dir.h"
#include "router/router_core.h"
#include "router/tiers.h"

namespace gka::router {
namespace {

std::string RandomRouterId() {
  std::random_device device;
  return absl::StrFormat("router-%08x", device());
}

}  // namespace

absl::StatusOr<std::unique_ptr<Router>> Router::Create(const RouterOptions& options) {
  if (options.default_max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--default-max-tokens must be >= 1, got ", options.default_max_tokens));
  }
  if (options.heartbeat_timeout < absl::Milliseconds(30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--heartbeat-timeout-ms must be >= 30, got ",
                     absl::ToInt64Milliseconds(options.heartbeat_timeout)));
  }
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-attempts must be >= 1, got ", options.max_attempts));
  }
  TierTable tiers = TierTable::BuiltIn();
  if (!options.tiers_file.empty()) {
    GKA_ASSIGN_OR_RETURN(tiers, TierTable::FromFile(options.tiers_file));
  }
  ModelDescription model;
  if (!options.model_dir.empty()) {
    GKA_ASSIGN_OR_RETURN(model, ReadModelDir(options.model_dir));
  }
  const std::string tokenizer_dir =
      options.tokenizer_dir.empty() ? options.model_dir : options.tokenizer_dir;
  if (!options.tokenizer_dir.empty() && !FileExists(JoinPath(tokenizer_dir, "tokenizer.json"))) {
    return absl::NotFoundError(
        absl::StrCat("--tokenizer ", tokenizer_dir, ": no tokenizer.json in that directory"));
  }
  GKA_ASSIGN_OR_RETURN(TextAssets text, LoadTextAssets(tokenizer_dir));
  GKA_LOG(INFO) << text.description;

  std::unique_ptr<Router> router(new Router());
  router->router_id_ = options.router_id.empty() ? RandomRouterId() : options.router_id;
  router->metrics_registry_ = std::make_shared<metrics::Registry>();
  CoreOptions core_options;
  core_options.router_id = router->router_id_;
  core_options.served_model_name = options.served_model_name;
  core_options.default_max_tokens = options.default_max_tokens;
  core_options.max_attempts = options.max_attempts;
  core_options.lease = options.lease;
  core_options.worker_tls = options.tls;
  core_options.worker_tls_server_name = options.tls_server_name;
  core_options.admission.enabled = options.admission;
  core_options.admission.max_running = std::max(0, options.max_running);
  GKA_ASSIGN_OR_RETURN(core_options.rate_limits, RateLimits::Parse(options.rate_limits));
  std::vector<std::string> tier_names;
  for (const Tier& t : tiers.tiers()) tier_names.push_back(t.name);
  GKA_ASSIGN_OR_RETURN(core_options.key_tiers, KeyTiers::Parse(options.key_tiers, tier_names));
  // worker.proto: a worker silent for 3 heartbeat periods is dead.
  core_options.registry.missed_heartbeats = 3;
  core_options.registry.heartbeat_interval = options.heartbeat_timeout / 3;
  core_options.registry.forget_after = std::max(absl::Minutes(2), options.heartbeat_timeout * 10);
  router->sweep_period_ =
      std::max(absl::Milliseconds(10), core_options.registry.heartbeat_interval / 4);
  router->core_ = std::make_unique<RouterCore>(core_options, std::move(tiers), std::move(text),
                                               std::move(model), *router->metrics_registry_);
  GKA_RETURN_IF_ERROR(router->core_->Init());

  router->generate_service_ = std::make_unique<GenerateServiceImpl>(*router->core_);
  router->registry_service_ = std::make_unique<RegistryServiceImpl>(*router->core_);
  rpc::ServerOptions server_options;
  server_options.address = options.address;
  server_options.auth_token = options.api_key;
  server_options.api_keys = options.api_keys;
  if (options.public_tls) server_options.tls = options.tls;
  GKA_ASSIGN_OR_RETURN(router->server_,
                       rpc::GrpcServer::Create(server_options, {router->generate_service_.get()}));
  // No API keys here: a worker proves itself with its certificate.
  GKA_ASSIGN_OR_RETURN(router->internal_server_,
                       rpc::GrpcServer::Create({.address = options.internal_address,
                                                .tls = options.tls},
                                               {router->registry_service_.get()}));
  rpc::GrpcServer* server = router->server_.get();
  router->core_->SetHealthCallback(
      [server](bool serving) { server->SetServing(serving, kGenerateServiceName); });

  if (!options.metrics_address.empty()) {
    GKA_ASSIGN_OR_RETURN(router->exposer_,
                         metrics::MetricsExposer::Create({.address = options.metrics_address},
                                                         router->metrics_registry_));
    router->metrics_address_ = router->exposer_->address();
  }
  router->sweeper_ = std::thread([r = router.get()] { r->SweepLoop(); });
  GKA_LOG(INFO) << "router " << router->router_id_ << " serving on " << router->address()
                << (options.public_tls ? " (mutual TLS)" : " (plaintext)") << ", workers on "
                << router->internal_address()
                << (options.tls.enabled() ? " (mutual TLS)" : " (plaintext: --insecure)")
                << (router->metrics_address_.empty()
                        ? ""
                        : absl::StrCat(", metrics on ", router->metrics_address_));
  return router;
}

Router::~Router() {
  Shutdown(absl::ZeroDuration());
  // The core waits for the last requests' Abort/Release calls; the exposer reads the
  // registry, so it goes first.
  exposer_.reset();
  server_.reset();
  internal_server_.reset();
  core_.reset();
}

const std::string& Router::address() const { return server_->address(); }
const std::string& Router::internal_address() const { return internal_server_->address(); }
const std::string& Router::metrics_address() const { return metrics_address_; }
const std::string& Router::router_id() const { return router_id_; }

void Router::SweepLoop() {
  while (!stop_sweeper_.WaitForNotificationWithTimeout(sweep_period_)) {
    const std::vector<std::string> lost = core_->registry().Sweep(absl::Now());
    core_->OnRegistryChanged();
    core_->OnWorkersLost(lost);
  }
}

void Router::Drain(absl::Duration grace) {
  const absl::Time deadline = absl::Now() + grace;
  core_->StopAccepting();
  const size_t running = core_->RunningRequests();
  if (running > 0) {
    GKA_LOG(INFO) << "draining: waiting up to " << absl::FormatDuration(grace) << " for " << running
                  << " running request(s)";
  }
  if (!core_->WaitIdle(deadline)) {
    GKA_LOG(WARNING) << "drain grace over; cancelling " << core_->RunningRequests()
                     << " request(s)";
  }
  // Finished requests may still be writing their last message: gRPC's shutdown returns as
  // soon as the calls are done, so the floor costs nothing when there is nothing to flush.
  Shutdown(std::max(absl::Seconds(2), deadline - absl::Now()));
}

void Router::Shutdown(absl::Duration grace) {
  // Also reached from a half-built router whose Create failed.
  if (core_ != nullptr) core_->StopAccepting();
  std::call_once(stop_once_, [this] {
    stop_sweeper_.Notify();
    if (sweeper_.joinable()) sweeper_.join();
  });
  if (server_ != nullptr) server_->Shutdown(grace);
  // Heartbeats are accepted until the public side is down (Drain's promise).
  if (internal_server_ != nullptr) internal_server_->Shutdown(absl::ZeroDuration());
}

}  // namespace gka::router
