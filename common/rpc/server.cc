#include "common/rpc/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"

namespace gka::rpc {
namespace {

// Both are process-wide switches in gRPC (applied to servers built afterwards) and not
// thread-safe, so they are flipped exactly once.
void EnableProcessWidePlugins() {
  static std::once_flag once;
  std::call_once(once, [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  });
}

}  // namespace

absl::StatusOr<std::string> WithPort(absl::string_view address, int port) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon + 1 == address.size() || address.back() == ']') {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "' has no port; expected host:port"));
  }
  int ignored;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &ignored)) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address, "': port is not a number"));
  }
  return absl::StrCat(address.substr(0, colon + 1), port);
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Create(
    const ServerOptions& options, const std::vector<grpc::Service*>& services) {
  if (services.empty() != options.health_only) {
    return absl::InvalidArgumentError(options.health_only
                                          ? "a health_only GrpcServer takes no services"
                                          : "GrpcServer needs at least one service");
  }
  // Validates the address before gRPC does (gRPC only logs a bind failure).
  absl::StatusOr<std::string> checked = WithPort(options.address, 0);
  if (!checked.ok()) return checked.status();
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes must be > 0, got ", options.max_message_bytes));
  }
  EnableProcessWidePlugins();

  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(
      options.address,
      ServerCredentials({.token = options.auth_token,
                         .keys = options.api_keys,
                         .exempt_method_prefixes = options.auth_exempt_method_prefixes},
                        options.tls),
      &port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Workers are short-lived on 127.0.0.1 in tests: never share a port with a stale server.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);

  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    if (server != nullptr) server->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address,
                     " (port in use, or host not local?); gRPC's log above has the reason"));
  }
  GKA_ASSIGN_OR_RETURN(std::string bound, WithPort(options.address, port));
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(server), port, std::move(bound)));
}

GrpcServer::GrpcServer(std::unique_ptr<grpc::Server> server, int port, std::string address)
    : server_(std::move(server)), port_(port), address_(std::move(address)) {
  SetServing(true);
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::SetServing(bool serving, absl::string_view service) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  if (service.empty()) {
    // The overall status ("") is not part of the "all services" update in gRPC's default
    // service, so it is set explicitly.
    health->SetServingStatus(serving);
    health->SetServingStatus("", serving);
  } else {
    health->SetServingStatus(std::string(service), serving);
  }
}

void GrpcServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
      health->Shutdown();  // NOT_SERVING for everything, frozen
    }
  }
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

std::shared_ptr<grpc::Channel> GrpcServer::InProcessChannel() {
  return server_->InProcessChannel(grpc::ChannelArguments());
}

}  // namespace gka::rpc
