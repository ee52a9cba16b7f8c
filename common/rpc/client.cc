#include "common/rpc/client.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/deadline.h"
#include "common/rpc/status.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace gka::rpc {

std::shared_ptr<grpc::Channel> CreateChannel(absl::string_view address,
                                             const ChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (options.tls.enabled()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls.ca_pem;
    ssl.pem_cert_chain = options.tls.cert_pem;
    ssl.pem_private_key = options.tls.key_pem;
    creds = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  }
  return grpc::CreateCustomChannel(std::string(address), creds, args);
}

absl::Status WaitForReady(grpc::Channel& channel, absl::Time deadline) {
  if (channel.WaitForConnected(ToChrono(deadline))) return absl::OkStatus();
  return absl::DeadlineExceededError(
      "channel did not connect before the deadline (server down or address wrong?)");
}

absl::StatusOr<bool> CheckHealth(grpc::Channel& channel, absl::string_view service,
                                 absl::Time deadline) {
  // NewStub wants a shared_ptr; the stub does not outlive this call, so borrowing is safe.
  std::shared_ptr<grpc::Channel> borrowed(&channel, [](grpc::Channel*) {});
  auto stub = grpc::health::v1::Health::NewStub(borrowed);
  grpc::ClientContext ctx;
  SetDeadline(ctx, deadline);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(std::string(service));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&ctx, request, &response);
  if (!status.ok()) {
    return FromGrpcStatus(status, "health check");
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace gka::rpc
