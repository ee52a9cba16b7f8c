#include "router/grpc_services.h"

#include <grpcpp/grpcpp.h>

#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/rpc/auth.h"
#include "common/rpc/deadline.h"
#include "common/rpc/status.h"
#include "router/wire.h"

namespace gka::router {
namespace {

namespace v1 = ::gka::serving::v1;
namespace w = ::gka::worker::v1;

// One Generate call: the Generation's sink, writing responses one at a time (gRPC allows
// one outstanding write) and finishing after the last. Deletes itself in OnDone.
class GenerateReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                              public GenerationSink {
 public:
  GenerateReactor(RouterCore& core, grpc::CallbackServerContext* context,
                  const grpc::ByteBuffer& request_bytes)
      : context_(context) {
    v1::GenerateRequest request;
    const absl::Status parsed = ParseFromWire(request_bytes, &request);
    if (!parsed.ok()) {
      core.Reject(this, "", "", parsed, /*retryable=*/false);
      return;
    }
    // The key's name when the call authenticated with one (per-key rate limits).
    std::string api_key;
    if (const std::shared_ptr<const grpc::AuthContext> auth = context->auth_context()) {
      for (const grpc::string_ref& name : auth->FindPropertyValues(rpc::kApiKeyNameProperty)) {
        api_key.assign(name.data(), name.size());
      }
    }
    // Outlives the handler: the Generation calls back until OnFinish.
    std::shared_ptr<Generation> generation =
        core.StartGeneration(request, this, rpc::Deadline(*context), api_key);
    absl::MutexLock lock(&mu_);
    generation_ = std::move(generation);
  }

  void OnResponse(v1::GenerateResponse response) override {
    const grpc::ByteBuffer* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      // Admission control's hint, also where clients that read only the status find it (the
      // SDKs; grpc's own retry policy). An Error is the last response, before Finish.
      if (response.has_error() && response.error().retry_after_ms() > 0) {
        context_->AddTrailingMetadata("retry-after-ms",
                                      absl::StrCat(response.error().retry_after_ms()));
      }
      pending_.push_back(ToByteBuffer(response));
      if (writing_) return;
      writing_ = true;
      next = &pending_.front();  // deque: stays put while later writes are appended
    }
    StartWrite(next);
  }

  void OnFinish(const absl::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      finish_ = rpc::ToGrpcStatus(status);
      if (writing_) return;  // OnWriteDone finishes after the last write
      finished_ = true;
    }
    Finish(*finish_);
  }

  void OnWriteDone(bool ok) override {
    const grpc::ByteBuffer* next = nullptr;
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      pending_.pop_front();
      if (!ok) {
        // The client is gone; OnCancel follows and ends the Generation.
        broken_ = true;
        pending_.clear();
      }
      if (!pending_.empty()) {
        next = &pending_.front();
      } else {
        writing_ = false;
        if (finish_.has_value() && !finished_) {
          finished_ = true;
          finish = finish_;
        }
      }
    }
    if (next != nullptr) StartWrite(next);
    if (finish.has_value()) Finish(*finish);
  }

  void OnCancel() override {
    std::shared_ptr<Generation> generation;
    {
      absl::MutexLock lock(&mu_);
      generation = generation_;
    }
    if (generation != nullptr) generation->Cancel();
  }

  void OnDone() override {
    std::shared_ptr<Generation> generation;
    {
      absl::MutexLock lock(&mu_);
      generation = std::move(generation_);
    }
    delete this;
  }

 private:
  grpc::CallbackServerContext* const context_;
  absl::Mutex mu_;
  std::shared_ptr<Generation> generation_ ABSL_GUARDED_BY(mu_);
  std::deque<grpc::ByteBuffer> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateServiceImpl::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) {
  return new GenerateReactor(core_, context, *request);
}

grpc::ServerUnaryReactor* GenerateServiceImpl::Tokenize(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::TokenizeRequest parsed;
  absl::Status status = ParseFromWire(*request, &parsed);
  if (status.ok()) {
    absl::StatusOr<v1::TokenizeResponse> tokens = core_.Tokenize(parsed);
    if (tokens.ok()) {
      *response = ToByteBuffer(*tokens);
    } else {
      status = tokens.status();
    }
  }
  reactor->Finish(rpc::ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* GenerateServiceImpl::Abort(grpc::CallbackServerContext* context,
                                                     const v1::AbortRequest* request,
                                                     v1::AbortResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->request_id().empty()) {
    reactor->Finish(rpc::ToGrpcStatus(
        absl::InvalidArgumentError("request_id: empty; name the request to abort")));
    return reactor;
  }
  response->set_found(core_.AbortRequest(request->request_id()));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GenerateServiceImpl::GetModelInfo(grpc::CallbackServerContext* context,
                                                            const v1::GetModelInfoRequest*,
                                                            v1::GetModelInfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  *response = core_.ModelInfo();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RegistryServiceImpl::Register(grpc::CallbackServerContext* context,
                                                        const w::RegisterRequest* request,
                                                        w::RegisterResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<w::RegisterResponse> registered = core_.registry().Register(*request, absl::Now());
  if (registered.ok()) {
    *response = std::move(*registered);
    response->set_router_id(core_.options().router_id);
    core_.OnRegistryChanged();
  }
  reactor->Finish(rpc::ToGrpcStatus(registered.status()));
  return reactor;
}

grpc::ServerUnaryReactor* RegistryServiceImpl::Heartbeat(grpc::CallbackServerContext* context,
                                                         const w::HeartbeatRequest* request,
                                                         w::HeartbeatResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  *response = core_.registry().Heartbeat(*request, absl::Now());
  for (const auto& [tier, cap] : core_.admission().DecodeCaps()) {
    (*response->mutable_decode_num_iter_caps())[tier] = cap;
  }
  core_.OnRegistryChanged();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RegistryServiceImpl::Deregister(grpc::CallbackServerContext* context,
                                                          const w::DeregisterRequest* request,
                                                          w::DeregisterResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::Status status = core_.registry().Deregister(request->worker_id());
  core_.OnRegistryChanged();
  reactor->Finish(rpc::ToGrpcStatus(status));
  return reactor;
}

}  // namespace gka::router
