// The router's gRPC services, thin adapters over RouterCore:
//   - gka.serving.v1.GenerateService: Generate (a ServerWriteReactor that is the request's
//     GenerationSink), Abort, GetModelInfo, Tokenize. Generate and Tokenize take their
//     request as raw bytes and parse it with router/wire.h, so invalid UTF-8 is
//     INVALID_ARGUMENT naming the field rather than gRPC's INTERNAL parse failure.
//   - gka.worker.v1.WorkerRegistry: Register, Heartbeat, Deregister.
//
// Error convention of Generate: a failed request gets one Error response (code, message,
// retryable) and then the call ends with the same status code, so both a streaming client
// and a plain gRPC client see it. A cancelled call just ends.
// Depends on RouterCore and grpc++; owns no state of its own beyond the calls in flight.
//
//   GenerateServiceImpl generate(core);
//   RegistryServiceImpl registry(core);
//   GrpcServer::Create(public_options, {&generate});      // clients
//   GrpcServer::Create(internal_options, {&registry});    // workers, mutual TLS
//
// Thread-safety: gRPC calls the handlers concurrently; they only touch RouterCore
// (thread-safe) and per-call reactors.
#pragma once

#include "gka/serving/v1/serving.grpc.pb.h"
#include "gka/worker/v1/worker.grpc.pb.h"
#include "router/router_core.h"

namespace gka::router {

class GenerateServiceImpl final
    : public serving::v1::GenerateService::WithRawCallbackMethod_Generate<
          serving::v1::GenerateService::WithRawCallbackMethod_Tokenize<
              serving::v1::GenerateService::CallbackService>> {
 public:
  explicit GenerateServiceImpl(RouterCore& core) : core_(core) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const serving::v1::AbortRequest* request,
                                  serving::v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const serving::v1::GetModelInfoRequest* request,
                                         serving::v1::GetModelInfoResponse* response) override;

 private:
  RouterCore& core_;
};

class RegistryServiceImpl final : public worker::v1::WorkerRegistry::CallbackService {
 public:
  explicit RegistryServiceImpl(RouterCore& core) : core_(core) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const worker::v1::RegisterRequest* request,
                                     worker::v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const worker::v1::HeartbeatRequest* request,
                                      worker::v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* Deregister(grpc::CallbackServerContext* context,
                                       const worker::v1::DeregisterRequest* request,
                                       worker::v1::DeregisterResponse* response) override;

 private:
  RouterCore& core_;
};

}  // namespace gka::router
